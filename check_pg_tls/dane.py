"""DANE for PostgreSQL: do the TLSA records in DNS match what the server presents?

Pure judgement, no I/O: the answer of a validating resolver
(:class:`TlsaAnswer`, from :mod:`.tlsa_lookup`), the presented chain and
``now`` come in, findings go out. The resolver's AD bit decides whether the
records are usable at all (RFC 6698, RFC 7671): the plugin does not
validate DNSSEC itself, it trusts the resolver it was told to trust and says
which one that was.

Matching follows RFC 6698 and RFC 7671 section 5: DANE-EE(3) matches the
leaf and ignores its names and dates; DANE-TA(2) matches a certificate the
server sends above the leaf, from which the leaf must then verify (names and
dates included); PKIX-EE(1) and PKIX-TA(0) additionally need the chain to pass
PKIX validation, which OpenSSL decided in the handshake.

What is hashed is the certificate's own bytes, as a DANE client hashes what
it received: the certificate as sent (selector 0) or the SubjectPublicKeyInfo
exactly as the certificate encodes it (selector 1), never a key re-serialised
by a library, which may encode the same key differently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography import x509

from .certs import CertFacts, facts, facts_from_der
from .der import DerError, subject_public_key_info
from .model import (
    TLSA_USAGES,
    Check,
    DaneSettings,
    Finding,
    State,
    Target,
    TlsaAnswer,
    TlsaRecord,
)
from .names import check_name, ip_version
from .record import Record
from .text import safe

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
    from OpenSSL import crypto

__all__ = [
    "association",
    "dane_findings",
    "judge_dane",
    "parse_dns_server",
    "record_for",
    "tlsa_owner",
    "unusable_name",
]


def tlsa_owner(port: int, name: str) -> str:
    """Where TLSA records for a TCP service live (RFC 6698 section 3)."""
    return f"_{port}._tcp.{name.rstrip('.')}"


def unusable_name(name: str) -> str | None:
    """Why ``name`` cannot have TLSA records, or None if it can."""
    if ip_version(name) is None:
        return None
    return (
        f"{name} is an IP address, and TLSA records live under a host name "
        "(_PORT._tcp.HOST): give --servername"
    )


def parse_dns_server(text: str) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[V6]:PORT`` or a bare IPv6 address; port 53 by default.

    Raises:
        ValueError: not an IP address (a resolver cannot be found by name
            without a resolver), or a bad port.
    """
    host, port = text, "53"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid DNS server {text!r}")
        port = rest[1:] or "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid DNS server {text!r}: give an IP address[:port]") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid DNS server {text!r}: bad port")
    return str(address), int(port)


def on_loopback(resolver: str) -> bool:
    host = resolver.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def association(der: bytes, selector: int, mtype: int) -> bytes:
    """The association data a TLSA record with these parameters holds for a certificate.

    ``der`` is the certificate as it was sent. Selector 0 hashes it whole,
    selector 1 its SubjectPublicKeyInfo element byte for byte (RFC 6698
    section 2.1.2), as OpenSSL's DANE does: cryptography would re-serialise
    the key, and an EC point stored compressed, an RSA key without NULL
    parameters or an RSA-PSS key would hash differently.

    Raises:
        DerError: the certificate's structure cannot be read.
    """
    data = der if selector == 0 else subject_public_key_info(der)
    if mtype == 0:
        return data
    return hashlib.sha256(data).digest() if mtype == 1 else hashlib.sha512(data).digest()


def record_for(der: bytes, usage: int = 3, selector: int = 1, mtype: int = 1) -> TlsaRecord:
    """The record to publish for a certificate (default: 3 1 1, the key's SHA-256).

    Raises:
        DerError: the certificate's structure cannot be read.
    """
    return TlsaRecord(usage, selector, mtype, association(der, selector, mtype))


def _matches(record: TlsaRecord, cert: CertFacts) -> bool:
    try:
        return association(cert.der, record.selector, record.mtype) == record.data
    except DerError:
        return False


def _verify_under(
    anchor: bytes, leaf: CertFacts, between: Sequence[CertFacts], name: str, now: dt.datetime
) -> str | None:
    """Does ``leaf`` verify with ``anchor`` (DER) as its only trust anchor? None, or why not.

    DANE-TA keeps the usual checks below the anchor (RFC 7671 section 5.2.2).
    OpenSSL decides the path (signatures, dates, CA constraints, key usages
    for a TLS server), as it does for a DANE client; the name is checked by
    libpq's rules, as the ``name`` finding checks it. A verifier that is
    handed the name would refuse legal DNS names it cannot represent, such as
    host names with an underscore.
    """
    from OpenSSL import crypto

    def load(der: bytes) -> crypto.X509:
        return crypto.load_certificate(crypto.FILETYPE_ASN1, der)

    try:
        store = crypto.X509Store()
        store.add_cert(load(anchor))
        # The anchor need not be self-signed: a DANE-TA record names any CA.
        store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
        store.set_time(now)
        _for_tls_servers(store)
        context = crypto.X509StoreContext(store, load(leaf.der), [load(c.der) for c in between])
    except crypto.Error:
        return "OpenSSL cannot load the certificates"
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as exc:
        return safe(str(exc), 200)
    except crypto.Error:
        return "OpenSSL could not verify the certificates"
    check = check_name(leaf.names, name)
    if not check.matches:
        return check.malformed or f"it is not valid for {safe(name, 100)}"
    return None


def _for_tls_servers(store: crypto.X509Store) -> None:
    """Verify as for a TLS server: OpenSSL's ``sslserver`` purpose (key usages).

    A TLS client's verification sets this purpose; pyOpenSSL offers no
    setter, the OpenSSL binding it wraps does.
    """
    from OpenSSL._util import lib

    lib.X509_STORE_set_purpose(store._store, lib.X509_PURPOSE_SSL_SERVER)


class _Evaluation(Record):
    #: How each matching record matched, e.g. ``TLSA 3 1 1 matches the leaf``.
    matched: tuple[str, ...]
    #: Why records that almost matched did not.
    notes: tuple[str, ...]


def _evaluate(
    records: Sequence[TlsaRecord],
    presented: Sequence[CertFacts],
    pkix_path: Sequence[CertFacts] | None,
    name: str,
    now: dt.datetime,
) -> _Evaluation:
    """Match usable records against a chain (leaf first, as the server sends it).

    ``pkix_path`` is the PKIX-validated path (leaf to trusted root), or None
    when the chain was not validated or failed validation.
    """
    matched: list[str] = []
    notes: list[str] = []
    leaf = presented[0]
    for record in records:
        label = f"{TLSA_USAGES[record.usage]} {record.kind}"
        if record.usage in (1, 3):
            if not _matches(record, leaf):
                continue
            if record.usage == 1 and pkix_path is None:
                notes.append(
                    f"{label} matches the leaf, but the chain does not pass PKIX validation"
                )
                continue
            matched.append(f"TLSA {record.kind} matches the leaf")
        elif record.usage == 2:
            result = _dane_ta(record, presented, pkix_path, name, now)
            (matched if result[0] else notes).append(result[1])
        else:
            hit = next(
                (c for c in (pkix_path or ())[1:] if _matches(record, c)),
                None,
            )
            if hit is not None:
                matched.append(f"TLSA {record.kind} matches {hit.subject}")
            elif pkix_path is None and any(_matches(record, c) for c in presented[1:]):
                notes.append(
                    f"{label} matches a CA certificate, but the chain does not pass PKIX validation"
                )
    return _Evaluation(tuple(matched), tuple(n for n in notes if n))


def _dane_ta(
    record: TlsaRecord,
    presented: Sequence[CertFacts],
    pkix_path: Sequence[CertFacts] | None,
    name: str,
    now: dt.datetime,
) -> tuple[bool, str]:
    label = f"DANE-TA {record.kind}"
    for depth in range(1, len(presented)):
        anchor = presented[depth]
        if not _matches(record, anchor):
            continue
        failure = _verify_under(anchor.der, presented[0], presented[1:depth], name, now)
        if failure is None:
            return (
                True,
                f"TLSA {record.kind} matches {anchor.subject}, and the leaf verifies under it",
            )
        return False, (
            f"{label} matches {anchor.subject}, but the leaf does not verify under it: {failure}"
        )
    if record.selector == 0 and record.mtype == 0:
        # RFC 7671 section 5.2.2: a full certificate in DNS may supply an
        # anchor the server does not send.
        try:
            supplied = facts_from_der(record.data)
        except ValueError:
            return False, f"{label} holds no certificate"
        failure = _verify_under(record.data, presented[0], presented[1:], name, now)
        if failure is None:
            return True, f"TLSA {record.kind} supplies {supplied.subject}"
        return False, f"{label} certificate from DNS does not verify the leaf: {failure}"
    if record.selector == 1 and record.mtype == 0:
        return _bare_key(record, presented, name, now)
    sent = {cert.der for cert in presented}
    for cert in pkix_path or ():
        if cert.der not in sent and _matches(record, cert):
            return False, (
                f"{label} matches {cert.subject}, which the server does not "
                "send (PostgreSQL sends ssl_cert_file: the leaf and intermediates): publish a "
                "record for an intermediate, or for the key"
            )
    return False, ""


def _bare_key(
    record: TlsaRecord, presented: Sequence[CertFacts], name: str, now: dt.datetime
) -> tuple[bool, str]:
    """A DANE-TA record holding a whole public key (``2 1 0``) that no presented
    certificate carries: the anchor may be the key that signed the top of the
    chain the server sends.

    RFC 7671 section 5.2.2 lets the server leave such an anchor out, and
    OpenSSL's DANE accepts it when the key signed the last certificate of the
    chain it builds from what the server sent (not one below it). As OpenSSL
    does, the key is wrapped in a certificate named as that certificate's
    issuer, and the leaf is verified under it.
    """
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key

    label = f"DANE-TA {record.kind}"
    top = _chain_top(presented)
    if top is None or top.certificate is None:
        return False, ""
    try:
        key = load_der_public_key(record.data)
        anchor = _wrapped(key, top.certificate.issuer, now)
        top.certificate.verify_directly_issued_by(anchor)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False, ""
    failure = _verify_under(
        anchor.public_bytes(Encoding.DER), presented[0], presented[1:], name, now
    )
    if failure is None:
        return True, (
            f"TLSA {record.kind} holds the key that signed {top.subject}, and the leaf "
            "verifies under it"
        )
    return False, (
        f"{label} holds the key that signed {top.subject}, but the leaf does not verify "
        f"under it: {failure}"
    )


def _chain_top(presented: Sequence[CertFacts]) -> CertFacts | None:
    """The last certificate of the chain OpenSSL builds from what the server sent.

    OpenSSL, trusting nothing, builds the chain as far as the server's
    certificates reach and names the one whose issuer is missing.
    """
    from OpenSSL import crypto

    try:
        certs = [crypto.load_certificate(crypto.FILETYPE_ASN1, cert.der) for cert in presented]
        crypto.X509StoreContext(crypto.X509Store(), certs[0], certs[1:]).verify_certificate()
    except crypto.X509StoreContextError as exc:
        if exc.certificate is None:
            return None
        top = crypto.dump_certificate(crypto.FILETYPE_ASN1, exc.certificate)
        return next((cert for cert in presented if cert.der == top), None)
    except crypto.Error:
        return None
    return None


def _wrapped(key: PublicKeyTypes, subject: x509.Name, now: dt.datetime) -> x509.Certificate:
    """A CA certificate for ``key``, named ``subject``: a trust anchor for OpenSSL.

    An anchor is trusted as it is, its own signature never checked: a
    throwaway key signs it.

    Raises:
        TypeError: no certificate can hold a key of this type.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    day = dt.timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key)  # type: ignore[arg-type]  # DH keys raise TypeError
        .serial_number(1)
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )


def judge_dane(
    answer: TlsaAnswer | None,
    presented: Sequence[CertFacts],
    path: Sequence[bytes],
    trusted: bool,
    target: Target,
    now: dt.datetime,
    settings: DaneSettings,
) -> tuple[Finding, ...]:
    """The DANE findings for a judged target.

    ``presented`` is the chain as the server sent it, ``path`` the path
    OpenSSL verified (DER, leaf to root) and ``trusted`` whether it passes
    PKIX validation as the sslmode asks; ``answer`` None: no lookup was
    possible.
    """
    name = target.checked_name
    if answer is None:
        why = unusable_name(name) or "no lookup"
        return (Finding(Check.DANE, f"cannot check DANE: {why}", "no host name", State.UNKNOWN),)
    if any(cert.certificate is None for cert in presented):
        # cryptography reads only DER; a certificate it refuses may be encoded
        # otherwise, and would hash differently in a DANE client's eyes.
        why = "a presented certificate cannot be parsed"
        return (Finding(Check.DANE, f"cannot check DANE: {why}", "unparsed", State.UNKNOWN),)
    pkix_path = None
    if trusted:
        # The validated path holds the root from the trust store, which the
        # server does not send: its DER is OpenSSL's, as a DANE client sees it.
        parsed = {cert.der: cert for cert in presented}
        try:
            pkix_path = tuple(parsed.get(der) or facts_from_der(der) for der in path)
        except ValueError:
            pkix_path = None
    return dane_findings(answer, presented, pkix_path, name, target.port, now, settings)


def dane_findings(
    answer: TlsaAnswer,
    presented: Sequence[CertFacts],
    pkix_path: Sequence[CertFacts] | None,
    name: str,
    port: int,
    now: dt.datetime,
    settings: DaneSettings,
) -> tuple[Finding, ...]:
    """Judge the TLSA answer for a served chain: ``dane``, ``dane_resolver``, ``dane_renewal``."""
    findings = [
        _resolver_finding(answer),
        _answer_finding(answer, presented, pkix_path, name, now, settings),
    ]
    renewal = _renewal_finding(answer, presented, name, port, now, settings)
    if renewal is not None:
        findings.append(renewal)
    return tuple(findings)


def _resolver_finding(answer: TlsaAnswer) -> Finding:
    who = f"resolver {answer.resolver} ({answer.source})"
    if answer.rcode is None:
        detail = f"{who} gave no answer"
    elif answer.authenticated:
        detail = f"{who} answered {answer.rcode} with AD set: it vouches for DNSSEC validation"
    else:
        detail = f"{who} answered {answer.rcode} without AD: not DNSSEC-validated"
    if not on_loopback(answer.resolver):
        detail += (
            "; it is not on loopback: its AD bit is only as trustworthy as the network path "
            "to it (run a validating resolver on this host, or give --dns-server)"
        )
    return Finding.ok(Check.DANE_RESOLVER, detail)


def _answer_finding(
    answer: TlsaAnswer,
    presented: Sequence[CertFacts],
    pkix_path: Sequence[CertFacts] | None,
    name: str,
    now: dt.datetime,
    settings: DaneSettings,
) -> Finding:
    owner = answer.owner
    if answer.rcode is None:
        return Finding(
            Check.DANE,
            f"cannot check DANE: the TLSA lookup for {owner} failed: "
            f"{safe(answer.failure or 'no answer', 200)}",
            "TLSA lookup failed",
            State.UNKNOWN,
        )
    if answer.rcode == "SERVFAIL":
        why = "; ".join(safe(e, 200) for e in answer.extended_errors) or (
            "no reason given: DNSSEC validation failed, or the zone's servers did not answer"
        )
        return Finding(
            Check.DANE,
            f"TLSA records for {owner} are bogus: resolver {answer.resolver} answered SERVFAIL "
            f"({why}); DANE clients cannot connect",
            "DNSSEC bogus",
            State.CRITICAL,
        )
    if answer.rcode not in ("NOERROR", "NXDOMAIN"):
        return Finding(
            Check.DANE,
            f"cannot check DANE: resolver {answer.resolver} answered {answer.rcode} to the TLSA "
            f"query for {owner}",
            "TLSA lookup failed",
            State.UNKNOWN,
        )
    if not answer.authenticated:
        what = (
            f"{len(answer.records)} TLSA record(s) at {owner} are"
            if answer.records
            else f"the answer for {owner} (no TLSA records) is"
        )
        return Finding(
            Check.DANE,
            f"{what} not DNSSEC-secure (resolver {answer.resolver} did not set AD): DANE "
            "clients ignore them; sign the zone (and publish its DS)",
            "DNSSEC insecure",
            settings.insecure_state,
        )
    usable = [r for r in answer.records if r.usable]
    served = record_for(presented[0].der)
    suggestion = f"publish {owner}. IN TLSA {served}"
    if not answer.records:
        return _missing(f"no TLSA records at {owner} (DNSSEC-validated); {suggestion}", settings)
    if not usable:
        return _missing(
            f"none of the {len(answer.records)} TLSA records at {owner} is usable (unknown "
            f"usage, selector or matching type, or a digest of the wrong length); {suggestion}",
            settings,
        )
    evaluation = _evaluate(usable, presented, pkix_path, name, now)
    if evaluation.matched:
        return Finding.ok(Check.DANE, f"{evaluation.matched[0]} (DNSSEC-secure)")
    notes = "".join(f"; {n}" for n in evaluation.notes)
    return Finding(
        Check.DANE,
        f"no TLSA record matches the served certificate (key changed without publishing a "
        f"new record?){notes}; the served key's record: {owner}. IN TLSA {served}",
        "no TLSA match",
        State.CRITICAL,
    )


def _missing(message: str, settings: DaneSettings) -> Finding:
    if settings.missing_state is State.OK:
        return Finding.ok(Check.DANE, message)
    return Finding(Check.DANE, message, "no TLSA records", settings.missing_state)


def _renewal_finding(
    answer: TlsaAnswer,
    presented: Sequence[CertFacts],
    name: str,
    port: int,
    now: dt.datetime,
    settings: DaneSettings,
) -> Finding | None:
    """Will the certificate on disk still match after the next reload?"""
    if settings.renewed is None or not answer.authenticated:
        return None
    usable = [r for r in answer.records if r.usable]
    if not usable:
        return None
    path, on_disk = settings.renewed
    if not on_disk:
        return None
    # The file's own bytes: cryptography returns a certificate it parsed as it read it.
    chain = tuple(facts(cert) for cert in on_disk)
    if chain[0].der == presented[0].der:
        return Finding.ok(Check.DANE_RENEWAL, f"the certificate in {path} is the one served")
    # Whether the renewed chain passes PKIX validation cannot be known before
    # it is served: PKIX usages are matched on their data alone here.
    evaluation = _evaluate(usable, chain, chain, name, now)
    if evaluation.matched:
        return Finding.ok(
            Check.DANE_RENEWAL,
            f"the renewed certificate in {path}: {evaluation.matched[0]}",
        )
    record = f"{tlsa_owner(port, name)}. IN TLSA {record_for(chain[0].der)}"
    return Finding(
        Check.DANE_RENEWAL,
        f"the renewed certificate on disk has a key no TLSA record matches: publish "
        f"`{record}` before reloading PostgreSQL",
        "renewed key not in TLSA",
        State.WARNING,
    )
