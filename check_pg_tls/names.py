"""Does the certificate name the server? libpq's ``verify-full`` rules.

Not a browser's rules: libpq falls back to the Common Name when no SAN of the
host's kind is present, matches IP hosts against dNSName entries as text, and
its wildcard is exactly ``*.`` followed by the rest of the name.
"""

from __future__ import annotations

import socket

from .certs import CertFacts

__all__ = ["name_matches", "host_matches_certificate"]


def name_matches(pattern: str, host: str) -> bool:
    """One certificate name against the host, case-insensitively.

    A wildcard is only ``*.rest`` and stands for exactly one non-empty label.
    """
    if pattern.lower() == host.lower():
        return True
    if len(pattern) < 3 or not pattern.startswith("*."):
        return False
    suffix = pattern[1:].lower()  # ".rest"
    if len(host) <= len(suffix) or not host.lower().endswith(suffix):
        return False
    return "." not in host[: len(host) - len(suffix)]


def _ip_bytes(host: str) -> bytes | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, host)
        except OSError:
            continue
    return None


def host_matches_certificate(leaf: CertFacts, host: str) -> bool:
    """Would libpq with ``sslmode=verify-full`` and this ``host`` accept the leaf?

    Every dNSName SAN is compared with the host as text, every iPAddress SAN
    with the host's address (when the host is an IP literal). The Common Name
    is consulted only when the certificate has no SAN of the host's own kind
    and nothing matched.
    """
    host_ip = _ip_bytes(host)
    if any(name_matches(name, host) for name in leaf.dns_names):
        return True
    if host_ip is not None and host_ip in leaf.ip_addresses:
        return True
    has_own_kind = bool(leaf.ip_addresses) if host_ip is not None else bool(leaf.dns_names)
    if has_own_kind or leaf.common_name is None:
        return False
    # libpq refuses a name with an embedded NUL rather than match a prefix.
    if "\x00" in leaf.common_name:
        return False
    return name_matches(leaf.common_name, host)
