"""Does the certificate name the server? libpq's ``verify-full`` rules, exactly.

Not a browser's rules, and not OpenSSL's X509_check_host: libpq walks the
subjectAltName entries in the certificate's order, and the first dNSName or
iPAddress that matches *or is malformed* decides (a name with an embedded
NUL, an address that is neither 4 nor 16 bytes long: libpq refuses the
certificate). The Common Name is consulted only when no SAN entry of the
host's own kind (DNS name or IP address) is present, and it is the first CN,
compared as raw bytes. Names are read from the DER here (:mod:`.der`), so an
entry no library can represent (an x400Address, say) is skipped, as libpq
skips it.
"""

from __future__ import annotations

import socket

from . import der
from .record import Record

__all__ = [
    "CertNames",
    "NameCheck",
    "check_name",
    "ip_literal",
    "ip_version",
    "name_matches",
    "read_names",
]

#: GeneralName tags (context-specific, primitive) libpq looks at.
DNS_NAME, IP_ADDRESS = 0x82, 0x87
# The same tags in constructed form: OpenSSL cannot decode a SAN holding
# one, and then sees no SAN at all.
_MALFORMED_TAGS = {0xA2, 0xA7}

_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_FOLD = bytes.maketrans(_ASCII_UPPER, _ASCII_UPPER.lower())


class CertNames(Record):
    """The names libpq consults, raw, in the certificate's order."""

    #: (tag, raw bytes) of every subjectAltName entry; None when the
    #: certificate has no SAN extension OpenSSL would decode (none, two, or
    #: a malformed one).
    san: tuple[tuple[int, bytes], ...] | None
    #: Raw value bytes of the subject's first Common Name, whatever its string type.
    common_name: bytes | None


class NameCheck(Record):
    """libpq's answer for one host: a match, or not, and whether an entry was malformed."""

    matches: bool
    #: Why libpq refuses the certificate outright, when a malformed entry decided.
    malformed: str | None = None


# "Is this an IP address?" has two answers, each with its rule named here:
# libpq's, for SNI and the name check (ip_literal: inet_aton() takes
# shorthand such as 127.1), and the strict notation by which a target spec,
# a resolver and DNS tell an address from a name (ip_version). libpq's
# hostaddr takes whatever getaddrinfo() reads as numeric (see conninfo).


def ip_literal(host: str) -> bytes | None:
    """The packed address when ``host`` is an IP literal by libpq's test, else None.

    libpq deliberately uses inet_aton() for IPv4, so shorthand such as
    ``127.1`` counts as the address 127.0.0.1, and inet_pton() for IPv6.
    """
    if "\x00" in host:
        return None
    try:
        return socket.inet_aton(host)
    except (OSError, UnicodeError):
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, host)
    except (OSError, UnicodeError):
        return None


def ip_version(host: str) -> int | None:
    """4 or 6 when ``host`` is an IP address in strict notation, else None.

    A dotted quad (inet_pton(), no shorthand), or IPv6 with an optional
    ``%scope``: what a target spec writes as an address, and what can have no
    TLSA records. ``127.1`` is a name by this rule, though libpq's
    :func:`ip_literal` takes it for an address.
    """
    for family, version, text in (
        (socket.AF_INET, 4, host),
        (socket.AF_INET6, 6, host.split("%", 1)[0]),
    ):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return version
    return None


def read_names(certificate: bytes) -> CertNames:
    """The SAN entries and first Common Name of a DER certificate, as libpq sees them."""
    try:
        extensions = der.extensions(certificate)
    except der.DerError:
        extensions = []
    sans = [value for oid, _, value in extensions if oid == der.OID_SUBJECT_ALT_NAME]
    san = _san_entries(sans[0]) if len(sans) == 1 else None
    try:
        attributes = der.subject_attributes(certificate)
    except der.DerError:
        attributes = []
    common_name = next((raw for oid, _, raw in attributes if oid == der.OID_COMMON_NAME), None)
    return CertNames(san, common_name)


def _san_entries(value: bytes) -> tuple[tuple[int, bytes], ...] | None:
    try:
        sequence = der.parse(value)
        if sequence.tag != 0x30:
            return None
        entries = tuple((entry.tag, entry.content) for entry in der.children(sequence))
    except der.DerError:
        return None
    if any(tag in _MALFORMED_TAGS for tag, _ in entries):
        return None
    return entries


def _fold(text: bytes) -> bytes:
    # pg_strcasecmp folds ASCII letters only.
    return text.translate(_FOLD)


def _wildcard_matches(pattern: bytes, host: bytes) -> bool:
    # libpq's wildcard_certificate_match: "*." then the rest, the star
    # standing for one label (a name without a dot before the suffix).
    if len(pattern) < 3 or not pattern.startswith(b"*."):
        return False
    if len(pattern) > len(host):
        return False
    tail = len(host) - len(pattern)
    if _fold(pattern[1:]) != _fold(host[tail + 1 :]):
        return False
    first_dot = host.find(b".")
    return not 0 <= first_dot < tail


def _name_rc(name: bytes, host: bytes) -> int:
    """libpq's pq_verify_peer_name_matches_certificate_name: 1, 0, or -1 (malformed)."""
    if b"\x00" in name:
        return -1
    return 1 if _fold(name) == _fold(host) or _wildcard_matches(name, host) else 0


def _ip_rc(address: bytes, host: str) -> int:
    """libpq's pq_verify_peer_name_matches_certificate_ip: 1, 0, or -1 (malformed)."""
    if len(address) == 4:
        try:
            return int(socket.inet_aton(host) == address)
        except (OSError, UnicodeError, ValueError):
            return 0
    if len(address) == 16:
        try:
            return int(socket.inet_pton(socket.AF_INET6, host) == address)
        except (OSError, UnicodeError, ValueError):
            return 0
    return -1


def name_matches(pattern: str, host: str) -> bool:
    """One certificate name against the host, case-insensitively, by libpq's rules."""
    return _name_rc(pattern.encode("utf-8", "surrogateescape"), _host_bytes(host)) == 1


def _host_bytes(host: str) -> bytes:
    return host.encode("utf-8", "surrogateescape")


def check_name(names: CertNames, host: str) -> NameCheck:
    """Would libpq with ``sslmode=verify-full`` and this ``host`` accept these names?"""
    host_is_ip = ip_literal(host) is not None
    raw_host = _host_bytes(host)
    check_cn = True
    rc = 0
    for position, (tag, value) in enumerate(names.san or (), 1):
        if tag not in (DNS_NAME, IP_ADDRESS):
            continue
        if (tag == IP_ADDRESS) == host_is_ip:
            # A SAN of the host's own kind: the Common Name no longer counts.
            check_cn = False
        rc = _name_rc(value, raw_host) if tag == DNS_NAME else _ip_rc(value, host)
        if rc == -1:
            what = (
                "a DNS name with an embedded NUL"
                if tag == DNS_NAME
                else f"an IP address of invalid length {len(value)}"
            )
            return NameCheck(
                False, f"subjectAltName entry #{position} is {what}, which libpq refuses"
            )
        if rc == 1:
            return NameCheck(True)
    if check_cn and names.common_name is not None:
        rc = _name_rc(names.common_name, raw_host)
        if rc == -1:
            return NameCheck(
                False,
                "the Common Name contains an embedded NUL (or is a wide string), "
                "which libpq refuses",
            )
    return NameCheck(rc == 1)
