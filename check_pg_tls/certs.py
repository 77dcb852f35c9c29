"""Parsing the presented chain into plain facts about each certificate.

OpenSSL decides trust; these facts serve the wording, the days left and the
output. A certificate that cryptography cannot fully describe (an unknown
signature algorithm, duplicate extensions, an exotic name form) still gets
its dates and names: what cannot be described reads as unknown, it never
costs the verdict.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress

from cryptography import x509

from .names import DNS_NAME, IP_ADDRESS, CertNames, read_names
from .record import Record
from .text import safe

__all__ = ["CertFacts", "describe_name", "facts", "facts_from_der", "load_chain"]


class CertFacts(Record):
    """What the verdict and the output need to know about one certificate."""

    der: bytes
    #: cryptography's view, for the details only it offers (keys, algorithms);
    #: None for a certificate it refuses to parse, which OpenSSL may still
    #: accept (an odd version, a BER-encoded boolean).
    certificate: x509.Certificate | None
    not_before: dt.datetime
    not_after: dt.datetime
    #: The names as libpq reads them.
    names: CertNames
    #: Subject and issuer as text, when cryptography could not read them.
    fallback_names: tuple[str, str] = ("<unknown>", "<unknown>")

    # Text for people, made only when some output asks: a fleet run judges
    # thousands of certificates and prints few of their names.
    @property
    def subject(self) -> str:
        if self.certificate is None:
            return self.fallback_names[0]
        try:
            return describe_name(self.certificate.subject)
        except ValueError:
            return "<unreadable name>"

    @property
    def issuer(self) -> str:
        if self.certificate is None:
            return self.fallback_names[1]
        try:
            return describe_name(self.certificate.issuer)
        except ValueError:
            return "<unreadable name>"

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x") if self.certificate else "unknown"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

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


# Remembered by DER: a fleet's servers present the same few chains (and
# the root file's certificates) again and again, and the facts of a
# certificate never change. Bounded, so that a long-running exporter
# checking many different servers keeps a fixed amount; a certificate that
# does not parse raises each time (lru_cache keeps no exceptions).
@functools.lru_cache(maxsize=256)
def facts_from_der(der: bytes) -> CertFacts:
    """Facts about one DER certificate (the same object for the same DER, while remembered).

    Raises:
        ValueError: neither cryptography nor OpenSSL can parse it.
    """
    try:
        return facts(x509.load_der_x509_certificate(der), der)
    except (ValueError, x509.InvalidVersion):
        return _facts_from_openssl(der)


def _facts_from_openssl(der: bytes) -> CertFacts:
    # OpenSSL verified this certificate in the handshake; what cryptography
    # refuses to describe is still dated and named, so the verdict stands.
    from OpenSSL import crypto

    try:
        cert = crypto.load_certificate(crypto.FILETYPE_ASN1, der)
        not_before, not_after = cert.get_notBefore(), cert.get_notAfter()
    except crypto.Error:
        raise ValueError("certificate does not parse") from None
    if not_before is None or not_after is None:
        raise ValueError("certificate has no validity")
    return CertFacts(
        der=der,
        certificate=None,
        not_before=_asn1_time(not_before),
        not_after=_asn1_time(not_after),
        names=read_names(der),
        fallback_names=(_openssl_name(cert.get_subject()), _openssl_name(cert.get_issuer())),
    )


def _asn1_time(value: bytes) -> dt.datetime:
    return dt.datetime.strptime(value.decode("ascii"), "%Y%m%d%H%M%SZ").replace(
        tzinfo=dt.timezone.utc
    )


def _openssl_name(name: object) -> str:
    components: list[tuple[bytes, bytes]] = getattr(name, "get_components", lambda: [])()
    text = ",".join(
        f"{key.decode('ascii', 'replace')}={value.decode('utf-8', 'replace')}"
        for key, value in reversed(components)
    )
    return safe(text) or "<empty name>"


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
