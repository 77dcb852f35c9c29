"""Certificate revocation lists: the facts and the judgements, no I/O.

OpenSSL decides revocation for ``--sslcrl``/``--sslcrldir`` in the handshake,
as libpq does; this module supplies what the wording needs (when a
certificate was revoked and why, when a CRL expired) and what OpenSSL does
not look at until it is too late: how long each CRL has left before every
client with ``sslcrl`` (and every certificate login to a server with
``ssl_crl_file``) stops working.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from .certs import CertFacts, describe_name

__all__ = [
    "CrlFacts",
    "CrlStatus",
    "Revocation",
    "check_fetched",
    "crl_for",
    "distribution_points",
    "judge_crl",
    "parse_crl",
    "revocation_of",
]


class CrlFacts(NamedTuple):
    """One CRL and where it came from (a file, a directory entry, a URL)."""

    crl: x509.CertificateRevocationList
    source: str

    @property
    def issuer(self) -> str:
        return describe_name(self.crl.issuer)

    @property
    def next_update(self) -> dt.datetime | None:
        return self.crl.next_update_utc

    def days_left(self, now: dt.datetime) -> float | None:
        if self.next_update is None:
            return None
        return (self.next_update - now).total_seconds() / 86400


class CrlStatus(NamedTuple):
    """A CRL judged: its days left (None without nextUpdate) and what is wrong."""

    crl: CrlFacts
    days_left: float | None
    #: Why clients cannot use it (stale, forged, no nextUpdate): None when usable.
    problem: str | None
    #: Whether its signature was checked against its issuer's key (the issuer
    #: may be neither a trusted root nor in this server's chain).
    signature_checked: bool = True


def crl_for(cert: x509.Certificate, crls: Iterable[CrlFacts]) -> CrlFacts | None:
    """The CRL issued by ``cert``'s issuer, if one is loaded (the freshest one)."""
    matching = [c for c in crls if c.crl.issuer == cert.issuer]
    if not matching:
        return None
    return max(matching, key=lambda c: c.crl.last_update_utc)


def revocation_of(cert: x509.Certificate, crl: CrlFacts) -> str | None:
    """``revoked on 2026-11-29 (key compromise)``, or None when not listed."""
    entry = crl.crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return None
    when = f"{entry.revocation_date_utc:%Y-%m-%d}"
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return f"revoked on {when}"
    return f"revoked on {when} ({reason.name.replace('_', ' ')})"


def judge_crl(crl: CrlFacts, issuers: Sequence[CertFacts], now: dt.datetime) -> CrlStatus:
    """Is the CRL signed by its issuer and still current?

    ``issuers`` are the certificates that may have issued it (the trusted
    roots, the presented chain); the one whose name matches and whose key
    verifies the signature is the issuer.
    """
    days = crl.days_left(now)
    candidates = [
        c.certificate
        for c in issuers
        if c.certificate is not None and c.certificate.subject == crl.crl.issuer
    ]
    if not candidates:
        # A CRL of a CA this server's chain does not use: its signature
        # cannot be checked here, and it concerns other servers.
        return CrlStatus(crl, days, _staleness(crl, days, now), signature_checked=False)
    if not any(_signed_by(crl.crl, c) for c in candidates):
        return CrlStatus(
            crl, days, f"CRL of {crl.issuer} ({crl.source}) is not signed by {crl.issuer}"
        )
    return CrlStatus(crl, days, _staleness(crl, days, now))


def _staleness(crl: CrlFacts, days: float | None, now: dt.datetime) -> str | None:
    if crl.next_update is None:
        return f"CRL of {crl.issuer} ({crl.source}) has no nextUpdate"
    if days is not None and days < 0:
        return f"CRL of {crl.issuer} ({crl.source}) expired on {crl.next_update:%Y-%m-%d %H:%M} UTC"
    if now < crl.crl.last_update_utc:
        return (
            f"CRL of {crl.issuer} ({crl.source}) is not valid before "
            f"{crl.crl.last_update_utc:%Y-%m-%d %H:%M} UTC"
        )
    return None


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def distribution_points(cert: x509.Certificate) -> tuple[str, ...]:
    """The URIs of the certificate's CRL Distribution Points, in order."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    )


def parse_crl(body: bytes) -> x509.CertificateRevocationList | None:
    """A CRL from an HTTP body: DER, as RFC 5280 says, or PEM, as some serve it."""
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(body)
        return x509.load_der_x509_crl(body)
    except ValueError:
        return None


class Revocation(NamedTuple):
    """One certificate checked against the CRL at one URL."""

    #: ``revoked on DATE (reason)`` when listed.
    revoked: str | None
    #: Why the CRL cannot be relied on (stale, forged, another shard); None when usable.
    problem: str | None


def check_fetched(
    cert: x509.Certificate,
    issuer: x509.Certificate | None,
    crl: x509.CertificateRevocationList,
    url: str,
    now: dt.datetime,
) -> Revocation:
    """Judge a certificate against a CRL fetched from its distribution point.

    A CRL is only believed when its issuer's key signed it, it is current,
    and (for a partitioned CRL) its Issuing Distribution Point names the URL
    it came from; only then does a listed serial mean "revoked".
    """
    facts = CrlFacts(crl, url)
    if issuer is None or crl.issuer != cert.issuer:
        return Revocation(None, f"CRL at {url} is not issued by {describe_name(cert.issuer)}")
    if not _signed_by(crl, issuer):
        return Revocation(None, f"CRL at {url} is not signed by {describe_name(cert.issuer)}")
    stale = _staleness(facts, facts.days_left(now), now)
    if stale is not None:
        return Revocation(None, stale)
    try:
        point = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except (x509.ExtensionNotFound, ValueError):
        point = None
    if point is not None and point.full_name is not None:
        names = [n.value for n in point.full_name if isinstance(n, x509.UniformResourceIdentifier)]
        if url not in names:
            return Revocation(None, f"CRL at {url} covers another distribution point")
    return Revocation(revocation_of(cert, facts), None)
