"""Parsing the presented chain into plain facts about each certificate.

OpenSSL decides trust; these facts serve the wording, the days left and the
output. A certificate that cryptography cannot fully describe (an unknown
signature algorithm, duplicate extensions, an exotic name form) still gets
its dates and names: what cannot be described reads as unknown, it never
costs the verdict.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .names import DNS_NAME, IP_ADDRESS, CertNames, read_names
from .text import safe

__all__ = ["CertFacts", "describe_name", "facts", "facts_from_der", "load_chain"]


class CertFacts(NamedTuple):
    """What the verdict and the output need to know about one certificate."""

    der: bytes
    #: cryptography's view, for the details only it offers (keys, algorithms).
    certificate: x509.Certificate
    not_before: dt.datetime
    not_after: dt.datetime
    #: The names as libpq reads them.
    names: CertNames

    # Text for people, made only when some output asks: a fleet run judges
    # thousands of certificates and prints few of their names.
    @property
    def subject(self) -> str:
        try:
            return describe_name(self.certificate.subject)
        except ValueError:
            return "<unreadable name>"

    @property
    def issuer(self) -> str:
        try:
            return describe_name(self.certificate.issuer)
        except ValueError:
            return "<unreadable name>"

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @property
    def lifetime_days(self) -> float:
        return (self.not_after - self.not_before).total_seconds() / 86400

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    @property
    def dns_names(self) -> tuple[str, ...]:
        """subjectAltName dNSName entries, made safe to print."""
        return tuple(
            safe(raw.decode("latin-1"), 100) for tag, raw in self.names.san or () if tag == DNS_NAME
        )

    @property
    def ip_addresses(self) -> tuple[str, ...]:
        """subjectAltName iPAddress entries that are addresses, as text."""
        return tuple(
            str(ipaddress.ip_address(raw))
            for tag, raw in self.names.san or ()
            if tag == IP_ADDRESS and len(raw) in (4, 16)
        )

    def names_for_display(self) -> tuple[str, ...]:
        """The names a client could match, in the order a user expects."""
        names = [*self.dns_names, *self.ip_addresses]
        if not names and self.names.common_name is not None:
            names.append(safe(self.names.common_name.decode("latin-1"), 100))
        return tuple(names)


def load_chain(ders: tuple[bytes, ...]) -> tuple[CertFacts, ...]:
    """Parse every DER certificate as presented, leaf first.

    Raises:
        ValueError: a certificate does not parse at all.
    """
    return tuple(facts_from_der(der) for der in ders)


def facts_from_der(der: bytes) -> CertFacts:
    """Facts about one DER certificate.

    Raises:
        ValueError: it does not parse at all.
    """
    return facts(x509.load_der_x509_certificate(der), der)


def facts(cert: x509.Certificate, der: bytes | None = None) -> CertFacts:
    if der is None:
        from cryptography.hazmat.primitives.serialization import Encoding

        der = cert.public_bytes(Encoding.DER)
    return CertFacts(
        der=der,
        certificate=cert,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        names=read_names(der),
    )


def describe_name(name: x509.Name) -> str:
    """An RFC 4514 string, made safe to print."""
    try:
        text = name.rfc4514_string()
    except ValueError:
        text = "<unprintable name>"
    return safe(text) or "<empty name>"
