"""OpenSSL decides whether a certificate of a verified path is revoked, given CRLs.

``--check-revocation`` fetches CRLs from distribution points; whether one
of them covers a certificate (issuer, key identifier, Issuing Distribution
Point scope, reasons, delta and indirect CRLs, critical extensions), whether
it is current and signed, and whether it lists the certificate
(``removeFromCRL`` is not a revocation) are OpenSSL's rules, applied here
exactly as libpq has OpenSSL apply them to ``sslcrl``: no extended CRL
support, no delta CRLs, the check time given.

One verification per certificate, with ``X509_V_FLAG_CRL_CHECK`` (the
certificate at depth 0 only), rather than one with ``CRL_CHECK_ALL``:
OpenSSL stops at the first error, so one verification of the whole path
would hide the state of every certificate above one whose CRL is missing;
and the trust anchor publishes no CRL for itself, which ``CRL_CHECK_ALL``
would demand. Each certificate is verified with its own issuers as
untrusted certificates and the anchor of the verified path as the only
trusted one, so OpenSSL finds the same issuer it found in the handshake.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from OpenSSL import crypto

from .record import Record

__all__ = ["CERT_REVOKED", "CRL_CODES", "CrlAnswer", "check_certificate", "openssl_reads"]

#: X509_V_OK: a CRL covers the certificate and does not list it.
NOT_REVOKED = 0
#: X509_V_ERR_CERT_REVOKED.
CERT_REVOKED = 23
#: X509_V_ERR_* codes that only OpenSSL's CRL check raises.
CRL_CODES = frozenset(
    {
        3,  # unable to get certificate CRL
        5,  # unable to decrypt CRL's signature
        8,  # CRL signature failure
        11,  # CRL is not yet valid
        12,  # CRL has expired
        15,  # format error in CRL's lastUpdate field
        16,  # format error in CRL's nextUpdate field
        23,  # certificate revoked
        33,  # unable to get CRL issuer certificate
        35,  # key usage does not include CRL signing
        36,  # unhandled critical CRL extension
        44,  # different CRL scope
        54,  # CRL path validation error
    }
)
# The validity of the certificates is checked after their revocation: a
# verification that ends there has passed the CRL check.
_CERT_TIME_CODES = frozenset({9, 10})


class CrlAnswer(Record):
    """OpenSSL's answer for one certificate: an X509_V_ERR code (0: not revoked)."""

    code: int
    #: OpenSSL's words for the code.
    message: str

    @property
    def revoked(self) -> bool:
        return self.code == CERT_REVOKED

    @property
    def not_revoked(self) -> bool:
        return self.code == NOT_REVOKED


def openssl_reads(crl: x509.CertificateRevocationList) -> bool:
    """Whether OpenSSL can load the CRL (it refuses some that cryptography reads)."""
    try:
        crypto.X509Store().add_crl(crl)
    except crypto.Error:
        return False
    return True


def check_certificate(
    path: Sequence[bytes],
    index: int,
    crls: Sequence[x509.CertificateRevocationList],
    now: dt.datetime,
) -> CrlAnswer:
    """Is ``path[index]`` revoked according to ``crls``, at ``now``?

    ``path`` is a verified path, leaf first, its trust anchor last, as DER;
    ``index`` is below the anchor. Every CRL must be one OpenSSL reads
    (:func:`openssl_reads`).
    """
    store = crypto.X509Store()
    store.add_cert(crypto.load_certificate(crypto.FILETYPE_ASN1, path[-1]))
    for crl in crls:
        store.add_crl(crl)
    store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
    store.set_time(now.astimezone(dt.timezone.utc).replace(tzinfo=None))
    untrusted = [crypto.load_certificate(crypto.FILETYPE_ASN1, der) for der in path[index + 1 : -1]]
    target = crypto.load_certificate(crypto.FILETYPE_ASN1, path[index])
    try:
        crypto.X509StoreContext(store, target, untrusted).verify_certificate()
    except crypto.X509StoreContextError as exc:
        code, _depth, message = exc.errors
        if code in _CERT_TIME_CODES:
            return CrlAnswer(NOT_REVOKED, "ok")
        return CrlAnswer(int(code), str(message))
    return CrlAnswer(NOT_REVOKED, "ok")
