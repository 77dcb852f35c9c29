"""Name lookups with a deadline, and few of them at once.

``getaddrinfo`` cannot be interrupted: a lookup runs in a daemon thread so
that a deadline wins against a resolver that hangs. That thread goes on
until the resolver gives up (seconds later, by resolv.conf's timeout and
attempts); with a resolver that never answers, a long-running process that
keeps probing (pg_tls_exporter) would leave one behind per lookup. So at
most :data:`MAX_LOOKUPS` run at once in a process: a lookup beyond them
waits for one to end, within its own deadline, and is then a lookup that
got no answer in time, which it is.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["MAX_LOOKUPS", "getaddrinfo_within"]

#: Lookups at once: more than check_pg_tls's default --workers and
#: pg_tls_exporter's default --probe.concurrency, so that neither waits
#: on a resolver that answers.
MAX_LOOKUPS = 32
_SLOTS = threading.BoundedSemaphore(MAX_LOOKUPS)


def getaddrinfo_within(host: str, port: int, family: int, seconds: float) -> list[Any] | None:
    """``getaddrinfo(host, port, family, SOCK_STREAM)``, or None without an answer in ``seconds``.

    Raises:
        OSError: the resolver's own answer that there is no such name (or another error).
        UnicodeError: ``host`` cannot be encoded as a name.
    """
    end = time.monotonic() + seconds
    outcome: list[object] = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, family, socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            outcome.append(exc)
        finally:
            _SLOTS.release()

    if not _SLOTS.acquire(timeout=max(0.0, seconds)):
        return None
    worker = threading.Thread(target=lookup, daemon=True)
    try:
        worker.start()
    except BaseException:
        _SLOTS.release()
        raise
    worker.join(max(0.0, end - time.monotonic()))
    if not outcome:
        return None
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result  # type: ignore[return-value]
