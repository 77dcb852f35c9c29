"""What OpenSSL's verification said, in words an admin can act on.

OpenSSL decides, in the handshake, exactly as it does for libpq: path
building, basic constraints, key usages, name constraints, critical
extensions, validity, security level. This module only turns its error
codes, their depths and the presented chain into sentences, and notices
what only a PostgreSQL-aware checker cares about: an intermediate that the
server should send but that the trusted roots happened to supply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm

from .certs import CertFacts, describe_name, facts_from_der
from .crls import CrlFacts, crl_for, revocation_of, unusable_kind
from .model import VerifyError
from .openssl_client import openssl_version
from .record import Record

if TYPE_CHECKING:
    from .libpq_openssl import LibpqStore

__all__ = ["ChainCheck", "describe_verification"]

# OpenSSL's X509_V_ERR_* codes that need our own words.
_UNABLE_TO_GET_ISSUER_CERT = 2
_UNABLE_TO_GET_CRL = 3
_CRL_SIGNATURE_FAILURE = 8
_CRL_NOT_YET_VALID = 11
_CRL_HAS_EXPIRED = 12
_CERT_REVOKED = 23
_UNABLE_TO_DECRYPT_CERT_SIGNATURE = 4
_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY = 6
_CERT_SIGNATURE_FAILURE = 7
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_DEPTH_ZERO_SELF_SIGNED_CERT = 18
_SELF_SIGNED_CERT_IN_CHAIN = 19
_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
_CERT_CHAIN_TOO_LONG = 22
_PATH_LENGTH_EXCEEDED = 25
_INVALID_PURPOSE = 26
_CERT_UNTRUSTED = 27
_CERT_REJECTED = 28
_KEYUSAGE_NO_CERTSIGN = 32
_UNHANDLED_CRITICAL_EXTENSION = 34
_INVALID_EXTENSION = 41
_NAME_CONSTRAINT_CODES = frozenset(range(47, 54))
_EE_KEY_TOO_SMALL = 66
_CA_KEY_TOO_SMALL = 67
_CA_MD_TOO_WEAK = 68
_INVALID_CA = 79

_TIME_CODES = frozenset({_CERT_NOT_YET_VALID, _CERT_HAS_EXPIRED})
_NO_ISSUER_CODES = frozenset(
    {
        _UNABLE_TO_GET_ISSUER_CERT,
        _UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        _UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    }
)
_SIGNATURE_CODES = frozenset(
    {
        _UNABLE_TO_DECRYPT_CERT_SIGNATURE,
        _UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY,
        _CERT_SIGNATURE_FAILURE,
    }
)


class ChainCheck(Record):
    """OpenSSL's verdict in words. ``problem`` is None when the chain is trusted."""

    problem: str | None
    #: Every complaint, worded, in OpenSSL's order (the first is libpq's error).
    complaints: tuple[str, ...] = ()
    #: The verified path, leaf first, root last, as DER (when trusted).
    path: tuple[bytes, ...] = ()
    #: Intermediates of the path that the server did not send and the trusted
    #: roots happened to hold: clients without them in their store fail.
    missing: tuple[CertFacts, ...] = ()
    #: libpq's OpenSSL accepts the chain, the verdict's refuses it: why, worded.
    newer_refuses: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def describe_verification(
    presented: Sequence[CertFacts],
    errors: Sequence[VerifyError],
    verified_chain: Sequence[bytes],
    crls: Sequence[CrlFacts] = (),
    now: dt.datetime | None = None,
    libpq: LibpqStore | None = None,
) -> ChainCheck:
    """Word OpenSSL's complaints about the chain ``presented`` (leaf first).

    An expired or not yet valid certificate that the server itself sent is
    left to the days-left and validity judgements, which name it with its
    dates; everything else OpenSSL complained about makes the chain untrusted.
    ``crls`` are those OpenSSL checked the chain against (libpq's sslcrl and
    sslcrldir, and those of the root certificate file), and ``now`` the time
    of the check. Every chain is put to ``libpq``, libpq's own OpenSSL
    (:mod:`.libpq_openssl`), which decides: its refusal of a chain the
    verdict's OpenSSL accepted is the verdict, and a chain only it accepts
    is trusted, with a warning (``newer_refuses``).
    """
    sent = {cert.der for cert in presented}
    relevant = [
        error
        for error in errors
        if not (
            error.code in _TIME_CODES
            and error.certificate in sent
            and error.depth < _top(verified_chain)
        )
    ]
    if not relevant:
        path = tuple(verified_chain)
        missing = tuple(facts_from_der(der) for der in path[1:-1] if der not in sent)
        refused = None
        if libpq is not None and now is not None:
            refused = _libpq_problem(presented, sent, path, crls, now, libpq)
        if refused is not None:
            return ChainCheck(refused, (refused,), path, missing)
        return ChainCheck(None, (), path, missing)
    complaints = tuple(_word(error, presented, sent, verified_chain, crls) for error in relevant)
    if libpq is None or now is None:
        return ChainCheck(complaints[0], complaints)
    # libpq decides. Where its OpenSSL accepts what the verdict's refused (a
    # delta CRL OpenSSL 3.0 takes for a complete one), libpq connects;
    # clients on the newer OpenSSL do not: a warning says so.
    from .libpq_openssl import Refusal

    opinion = libpq.opinion([cert.der for cert in presented], now)
    if opinion is None:
        return ChainCheck(complaints[0], complaints)
    if not isinstance(opinion, Refusal):
        missing = tuple(facts_from_der(der) for der in opinion[1:-1] if der not in sent)
        refuses = (
            f"libpq's {libpq.version()} accepts the chain, but the check's "
            f"{openssl_version()} refuses it: {complaints[0]}; clients on a newer "
            "OpenSSL cannot connect"
        )
        return ChainCheck(None, (), opinion, missing, refuses)
    if opinion.code == relevant[0].code or opinion.code < 0:
        return ChainCheck(complaints[0], complaints)
    # Both refuse, for different reasons: libpq's is what its clients meet.
    error = VerifyError(opinion.depth, opinion.code, opinion.message, opinion.certificate)
    theirs = _word(error, presented, sent, opinion.chain or verified_chain, crls)
    problem = (
        f"{theirs} (libpq's {opinion.version}; the check's {openssl_version()} refuses "
        f"it too: {complaints[0]})"
    )
    return ChainCheck(problem, (problem, *complaints))


def _top(verified_chain: Sequence[bytes]) -> int:
    # The depth of the trust anchor (or of the last certificate OpenSSL found).
    return max(len(verified_chain) - 1, 1)


def _who(error: VerifyError, sent: set[bytes], verified_chain: Sequence[bytes]) -> str:
    if error.depth == 0:
        return "certificate"
    cert = _facts(error.certificate)
    name = cert.subject if cert is not None else "<unreadable certificate>"
    anchor = error.depth == len(verified_chain) - 1 and cert is not None and _self_issued(cert)
    if anchor:
        return f"trusted root {name}"
    where = "" if error.certificate in sent else " (from the root certificate file)"
    return f"intermediate {name}{where}"


def _word(
    error: VerifyError,
    presented: Sequence[CertFacts],
    sent: set[bytes],
    verified_chain: Sequence[bytes],
    crls: Sequence[CrlFacts],
) -> str:
    code, who = error.code, _who(error, sent, verified_chain)
    cert = _facts(error.certificate)
    openssl = f"OpenSSL: {error.message}"
    if code in _CRL_CODES:
        return _word_crl(code, who, cert, crls, openssl)
    if code in _NO_ISSUER_CODES:
        issuer = cert.issuer if cert is not None else "unknown"
        if error.depth == 0 and len(presented) == 1:
            return (
                f"chain does not reach a trusted root: the server sends no intermediate "
                f"certificate (issuer {issuer}); add it to ssl_cert_file"
            )
        if cert is not None and any(
            other.subject == issuer and other.der != error.certificate for other in presented
        ):
            return (
                f"chain does not reach a trusted root: the server sends {issuer}, but it "
                f"cannot be the issuer of {who} (key, signature or extensions do not fit)"
            )
        return (
            f"chain does not reach a trusted root: issuer {issuer} of {who} is neither "
            f"sent by the server nor a trusted root"
        )
    if code == _DEPTH_ZERO_SELF_SIGNED_CERT:
        return "certificate is self-signed and not in the trusted roots"
    if code == _SELF_SIGNED_CERT_IN_CHAIN:
        name = cert.subject if cert is not None else "a self-signed certificate"
        return f"chain ends in {name}, which is not a trusted root"
    if code in _TIME_CODES and cert is not None:
        if code == _CERT_HAS_EXPIRED:
            return f"{who} expired on {cert.not_after:%Y-%m-%d}"
        return f"{who} is not valid before {cert.not_before:%Y-%m-%d %H:%M} UTC"
    if code in _SIGNATURE_CODES:
        return f"signature on {who} does not verify ({openssl})"
    if code == _INVALID_CA:
        return f"{who} is not a valid CA certificate, yet issued the certificate below it"
    if code == _PATH_LENGTH_EXCEEDED:
        return f"{who} allows fewer intermediates below it than the chain has (path length)"
    if code == _INVALID_PURPOSE:
        if error.depth == 0:
            return "certificate's key usage or extended key usage does not allow TLS server use"
        return f"{who} may not issue TLS server certificates (extended key usage)"
    if code in (_CERT_UNTRUSTED, _CERT_REJECTED):
        return f"{who} is not trusted for TLS servers by the root certificate file ({openssl})"
    if code == _KEYUSAGE_NO_CERTSIGN:
        return f"{who} may not sign certificates (key usage)"
    if code == _UNHANDLED_CRITICAL_EXTENSION:
        return f"{who} has a critical extension that OpenSSL does not handle"
    if code == _INVALID_EXTENSION:
        return f"{who} has an invalid or inconsistent extension ({openssl})"
    if code in _NAME_CONSTRAINT_CODES:
        return f"{who} breaks a name constraint of an issuing CA ({openssl})"
    if code == _EE_KEY_TOO_SMALL:
        return (
            f"certificate's key is too weak{_key(cert)}: clients at OpenSSL's default "
            f"security level refuse it ({openssl})"
        )
    if code == _CA_KEY_TOO_SMALL:
        return (
            f"{who} has a key too weak{_key(cert)}: clients at OpenSSL's default security "
            f"level refuse it ({openssl})"
        )
    if code == _CA_MD_TOO_WEAK:
        return (
            f"{who} is signed with a digest too weak for clients at OpenSSL's default "
            f"security level ({openssl})"
        )
    if code == _CERT_CHAIN_TOO_LONG:
        return f"certificate chain is too long ({openssl})"
    return f"{who}: {error.message}"


_CRL_CODES = frozenset(
    {
        _UNABLE_TO_GET_CRL,
        _CRL_SIGNATURE_FAILURE,
        _CRL_NOT_YET_VALID,
        _CRL_HAS_EXPIRED,
        _CERT_REVOKED,
    }
)


def _word_crl(
    code: int, who: str, cert: CertFacts | None, crls: Sequence[CrlFacts], openssl: str
) -> str:
    if cert is None or cert.certificate is None:
        return f"{who}: {openssl}"
    parsed = cert.certificate
    issuer = describe_name(parsed.issuer)
    crl = crl_for(parsed, crls)
    if code == _CERT_REVOKED:
        revoked = revocation_of(parsed, crl) if crl is not None else None
        return f"{who} {revoked or 'revoked'} (by {issuer})"
    if code == _UNABLE_TO_GET_CRL:
        kind = unusable_kind(crl.crl) if crl is not None else None
        loaded = f" (the one loaded is {kind}, which OpenSSL does not use)" if kind else ""
        return (
            f"no CRL of {issuer} is loaded, needed to check {who}{loaded}: with CRLs, libpq "
            "requires a current one from every CA in the chain"
        )
    if code == _CRL_HAS_EXPIRED:
        when = f" on {crl.next_update:%Y-%m-%d %H:%M} UTC" if crl and crl.next_update else ""
        return f"CRL of {issuer} expired{when}: libpq refuses every certificate it covers"
    if code == _CRL_NOT_YET_VALID:
        return f"CRL of {issuer} is not valid yet ({openssl})"
    return f"CRL of {issuer} does not verify ({openssl})"


def _libpq_problem(
    presented: Sequence[CertFacts],
    sent: set[bytes],
    path: Sequence[bytes],
    crls: Sequence[CrlFacts],
    now: dt.datetime,
    libpq: LibpqStore,
) -> str | None:
    """libpq's own OpenSSL refuses a chain the verdict's accepted: its refusal, worded."""
    from .libpq_openssl import UNDECODABLE, UNREADABLE_ROOTS

    refusal = libpq.refusal([cert.der for cert in presented], now)
    if refusal is None:
        return None
    theirs = f"libpq's {refusal.version}"
    if refusal.code == UNREADABLE_ROOTS:
        worded = (
            f"{theirs} cannot read root certificate file {libpq.sslrootcert} "
            f"({refusal.message}): libpq fails before it connects"
        )
    elif refusal.code == UNDECODABLE:
        who = "certificate" if refusal.depth == 0 else f"intermediate #{refusal.depth}"
        worded = (
            f"{theirs} cannot decode the {who} the server sends ({refusal.message}): "
            "the handshake fails"
        )
    else:
        chain = refusal.chain or tuple(path)
        error = VerifyError(refusal.depth, refusal.code, refusal.message, refusal.certificate)
        issuer = _issuer_on(path, refusal.certificate)
        if refusal.code in _NO_ISSUER_CODES and issuer is not None:
            # The verdict's OpenSSL verified this certificate with that
            # issuer: libpq's takes it for none (a signature algorithm it
            # does not know, an issuer key it cannot decode).
            return (
                f"{theirs} finds no issuer it can use for {_who(error, sent, chain)}, signed "
                f"{_algorithm(refusal.certificate)}by {issuer.subject} (OpenSSL: "
                f"{refusal.message}); the check's {openssl_version()} verifies it"
            )
        worded = _word(error, presented, sent, chain, crls)
        return f"{worded} ({theirs} refuses this; the check's {openssl_version()} does not)"
    return f"{worded} (the check's {openssl_version()} can)"


def _issuer_on(path: Sequence[bytes], der: bytes) -> CertFacts | None:
    # The issuer the verdict's OpenSSL verified ``der`` with, if ``der`` is on its path.
    if der not in path:
        return None
    index = list(path).index(der)
    return _facts(path[index + 1]) if index + 1 < len(path) else None


def _algorithm(der: bytes) -> str:
    """``with ecdsa-with-SHA3-256 `` as the verdict's OpenSSL names it, or nothing."""
    from OpenSSL import crypto

    try:
        name = crypto.load_certificate(crypto.FILETYPE_ASN1, der).get_signature_algorithm()
    except (crypto.Error, ValueError):
        return ""
    return f"with {name.decode('ascii', 'replace')} "


def _facts(der: bytes) -> CertFacts | None:
    try:
        return facts_from_der(der)
    except ValueError:
        return None


def _self_issued(cert: CertFacts) -> bool:
    try:
        return cert.certificate is not None and cert.certificate.subject == cert.certificate.issuer
    except ValueError:
        return False


def _key(cert: CertFacts | None) -> str:
    if cert is None or cert.certificate is None:
        return ""
    try:
        size = getattr(cert.certificate.public_key(), "key_size", None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return ""
    return f" ({size} bits)" if isinstance(size, int) else ""
