"""Does the certificate name the server? libpq's ``verify-full`` rules.

Not a browser's rules: libpq falls back to the Common Name when no SAN of the
host's kind is present, matches IP hosts against dNSName entries as text, and
its wildcard is exactly ``*.`` followed by the rest of the name.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .certs import CertFacts

__all__ = ["host_matches_certificate", "ip_literal", "name_matches"]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ip_literal(host: str) -> bytes | None:
    """The packed address when ``host`` is an IP literal by libpq's test, else None.

    libpq deliberately uses inet_aton() for IPv4, so shorthand such as
    ``127.1`` counts as the address 127.0.0.1, and inet_pton() for IPv6.
    """
    if "\x00" in host:
        return None
    try:
        return socket.inet_aton(host)
    except OSError:
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return None


def _fold(text: str) -> str:
    # pg_strcasecmp folds ASCII letters only (str.lower() would also fold,
    # say, the Kelvin sign into "k").
    return text.translate(_ASCII_LOWER)


def name_matches(pattern: str, host: str) -> bool:
    """One certificate name against the host, case-insensitively.

    A wildcard is only ``*.rest`` and stands for exactly one non-empty label.
    """
    if _fold(pattern) == _fold(host):
        return True
    if len(pattern) < 3 or not pattern.startswith("*."):
        return False
    suffix = _fold(pattern[1:])  # ".rest"
    if len(host) <= len(suffix) or not _fold(host).endswith(suffix):
        return False
    return "." not in host[: len(host) - len(suffix)]


def host_matches_certificate(leaf: CertFacts, host: str) -> bool:
    """Would libpq with ``sslmode=verify-full`` and this ``host`` accept the leaf?

    Every dNSName SAN is compared with the host as text, every iPAddress SAN
    with the host's address (when the host is an IP literal). The Common Name
    is consulted only when the certificate has no SAN of the host's own kind
    and nothing matched.
    """
    host_ip = ip_literal(host)
    if any(name_matches(name, host) for name in leaf.dns_names):
        return True
    if host_ip is not None and host_ip in leaf.ip_addresses:
        return True
    has_own_kind = bool(leaf.ip_addresses) if host_ip is not None else bool(leaf.dns_names)
    if has_own_kind or leaf.common_name is None:
        return False
    return name_matches(leaf.common_name, host)
