"""Target specs: ``host[:port]``, ``host(servername):port``, ``[::1]:5432``.

The ``host(servername)`` form is the one the cron tool this plugin grew out
of uses, so its users can keep their lists. Pure text in, Targets out.
"""

from __future__ import annotations

import re
import socket

from .model import Target

__all__ = ["parse_target", "read_targets_file"]

_SPEC = re.compile(
    r"""^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^\s()\[\]:]+))    # [v6] or host
        (?:\((?P<name>[^\s()]+)\))?                        # optional (servername)
        (?::(?P<port>\d+))?$                               # optional :port
    """,
    re.VERBOSE,
)


def parse_target(
    spec: str, default_port: int = 5432, servername: str | None = None, family: int = 0
) -> Target:
    """Parse one target spec; ``servername`` applies when the spec names none.

    Raises:
        ValueError: with a message fit for the user.
    """
    text = spec.strip()
    # A bare IPv6 address has colons of its own; only brackets add a port.
    if text.count(":") > 1 and not text.startswith("["):
        host, name, port = text, None, None
        if "(" in text and text.endswith(")"):
            host, _, rest = text.partition("(")
            name = rest[:-1]
        if not _is_ipv6(host):
            raise ValueError(
                f"invalid target {spec!r}: an IPv6 address with a port goes in brackets, [::1]:5432"
            )
    else:
        match = _SPEC.match(text)
        if not match:
            raise ValueError(f"invalid target {spec!r}: expected host[:port] or host(name):port")
        host = match.group("v6") or match.group("host")
        name = match.group("name")
        port = match.group("port")
    if not host:
        raise ValueError(f"invalid target {spec!r}: no host")
    number = default_port if port is None else int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"invalid target {spec!r}: port must be 1-65535")
    return Target(host, number, name or servername, family)


def _is_ipv6(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        return False
    return True


def read_targets_file(path: str) -> list[str]:
    """Target specs from a file: one a line, ``#`` comments, blank lines ignored.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    specs = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            specs.append(text)
    return specs
