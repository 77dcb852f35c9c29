"""``allowed_targets``: which hosts a probe request may make the exporter connect to.

Without it, whoever reaches ``/probe`` could use the exporter as a port
scanner. Entries are host-name patterns (``db*.example.com``) and networks
(``10.0.0.0/8``, ``2001:db8::/32``; a bare address is a network of one),
and ``*`` alone, which allows everything. A name is allowed by a pattern
only, an address by a network only: names are not resolved here, because
the probe resolves them itself and a second lookup could answer
differently.

``*`` alone allows addresses too: a pattern that matches every name lets a
probe reach any address already, through a name that resolves to it (and
public DNS has such names for every address), so refusing addresses there
would protect nothing and only surprise.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["AllowList", "Entry", "parse_entry"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_PATTERN_CHARS = re.compile(r"^[a-z0-9*?._-]+$")


@dataclass(frozen=True)
class Entry:
    """One entry: a network, or a compiled host-name pattern."""

    text: str
    network: Network | None = None
    pattern: re.Pattern[str] | None = None
    #: ``*`` alone: every name and every address.
    everything: bool = False


def parse_entry(text: str) -> Entry:
    """Read one entry of ``allowed_targets``.

    Raises:
        ValueError: with the reason.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("an empty entry")
    if raw == "*":
        return Entry(raw, everything=True)
    try:
        return Entry(raw, network=ipaddress.ip_network(raw, strict=True))
    except ValueError as exc:
        if "/" in raw or _address(raw) is not None:
            raise ValueError(f"invalid network {raw!r}: {exc}") from None
    name = raw.lower().rstrip(".")
    if not _PATTERN_CHARS.match(name):
        raise ValueError(
            f"invalid host-name pattern {raw!r}: letters, digits, '.', '-', '_', '*' and '?' only"
        )
    # '*' stands for any run of characters, dots included: '*.example.com'
    # allows every name under example.com.
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in name
    )
    return Entry(raw, pattern=re.compile(f"^{regex}$"))


def _address(host: str) -> Address | None:
    """The address ``host`` is, if it is one, in any form the resolver takes as one.

    glibc (and so the probe, as libpq) reads IPv4 shorthand such as
    ``127.1`` or ``0x7f.1`` as an address: it must be judged as one.
    """
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


class AllowList:
    """The parsed ``allowed_targets``."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = tuple(entries)
        self._networks = [e.network for e in entries if e.network is not None]
        self._patterns = [e.pattern for e in entries if e.pattern is not None]
        self._everything = any(e.everything for e in entries)

    def allows(self, host: str) -> bool:
        """Whether a probe may connect to, or check the name, ``host``."""
        if self._everything:
            return True
        address = _address(host)
        if address is not None:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            return any(address in network for network in self._networks)
        try:
            # The form the resolver is given (IDNA), so that no spelling of a
            # name slips past a pattern.
            name = host.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError:
            return False
        return any(pattern.match(name) for pattern in self._patterns)

    def refused(self, hosts: Iterable[str]) -> str | None:
        """The first of ``hosts`` that is not allowed, or None."""
        return next((host for host in hosts if not self.allows(host)), None)
