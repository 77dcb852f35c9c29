"""Probing many targets at once, with a bounded number of open sockets."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ProbeError
from .probe import Observation, Target, probe

__all__ = ["DEFAULT_WORKERS", "probe_all"]

#: Enough to hide network latency; few enough not to look like a flood to
#: a server, or to run a small monitoring host out of file descriptors.
DEFAULT_WORKERS = 16


def _probe_one(target: Target, timeout: float) -> Observation | ProbeError:
    try:
        return probe(target, timeout)
    except ProbeError as exc:
        return exc


def probe_all(
    targets: Sequence[Target], timeout: float, workers: int = DEFAULT_WORKERS
) -> list[Observation | ProbeError]:
    """Probe every target, ``workers`` at a time; results in the targets' order.

    Each probe has its own deadline of ``timeout`` seconds from its start, so
    a dead server delays the run by at most that much.
    """
    # Imported here: a single check does not pay for a thread pool.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return list(pool.map(_probe_one, targets, [timeout] * len(targets)))
