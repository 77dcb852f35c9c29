"""Parsing the presented chain into plain facts about each certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from .text import safe

__all__ = ["CertFacts", "describe_name", "load_chain"]


class CertFacts(NamedTuple):
    """What the verdict and the output need to know about one certificate."""

    certificate: x509.Certificate
    not_before: dt.datetime
    not_after: dt.datetime
    #: subjectAltName dNSName entries, as written (IDNA A-labels).
    dns_names: tuple[str, ...]
    #: subjectAltName iPAddress entries, as packed bytes (4 or 16).
    ip_addresses: tuple[bytes, ...]
    #: The first Common Name of the subject, or None.
    common_name: str | None

    # Text for people, made only when some output asks: a fleet run judges
    # thousands of certificates and prints few of their names.
    @property
    def subject(self) -> str:
        return describe_name(self.certificate.subject)

    @property
    def issuer(self) -> str:
        return describe_name(self.certificate.issuer)

    @property
    def sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @property
    def lifetime_days(self) -> float:
        return (self.not_after - self.not_before).total_seconds() / 86400

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    def names_for_display(self) -> tuple[str, ...]:
        """The names a client could match, in the order a user expects."""
        names = list(self.dns_names)
        names += [
            str(ipaddress.ip_address(raw)) for raw in self.ip_addresses if len(raw) in (4, 16)
        ]
        if not names and self.common_name is not None:
            names.append(self.common_name)
        return tuple(safe(name, 100) for name in names)


def load_chain(ders: tuple[bytes, ...]) -> tuple[CertFacts, ...]:
    """Parse every DER certificate as presented, leaf first.

    Raises:
        ValueError: a certificate does not parse.
    """
    return tuple(facts(x509.load_der_x509_certificate(der)) for der in ders)


def facts(cert: x509.Certificate) -> CertFacts:
    dns_names: tuple[str, ...] = ()
    ips: tuple[bytes, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(_packed(ip) for ip in san.get_values_for_type(x509.IPAddress))
    common_name = _common_name(cert.subject)
    return CertFacts(
        certificate=cert,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ips,
        common_name=common_name,
    )


def _packed(ip: object) -> bytes:
    # An address range (4+4 or 16+16 bytes, a CA's form) is kept as its raw
    # bytes: it never equals a host address, but it still counts as an
    # iPAddress SAN, which stops libpq from consulting the Common Name.
    if isinstance(ip, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return ip.network_address.packed + ip.netmask.packed
    assert isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    return ip.packed


# BMPString and UniversalString hold NUL bytes for every ASCII letter; libpq
# compares the raw bytes and refuses a name with an embedded NUL.
_WIDE_STRINGS = {"BMPString", "UniversalString"}


def _common_name(subject: x509.Name) -> str | None:
    """The first CN as libpq would compare it, or None if absent or unusable."""
    attributes = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    attribute = attributes[0]
    kind = getattr(getattr(attribute, "_type", None), "name", "")
    value = attribute.value
    text = value if isinstance(value, str) else value.decode("latin-1")
    if kind in _WIDE_STRINGS or "\x00" in text:
        return ""  # present, so it blocks nothing, but matches no host
    return text


def describe_name(name: x509.Name) -> str:
    """An RFC 4514 string, made safe to print."""
    try:
        text = name.rfc4514_string()
    except ValueError:
        text = "<unprintable name>"
    return safe(text) or "<empty name>"
