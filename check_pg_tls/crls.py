"""Certificate revocation lists: the facts and the judgements, no I/O.

OpenSSL decides revocation for ``--sslcrl``/``--sslcrldir`` in the handshake,
as libpq does, and for ``--check-revocation`` (:mod:`.crl_verify`); this
module supplies what the wording needs (when a certificate was revoked and
why, when a CRL expired, where a certificate says its CRL is) and what
OpenSSL does not look at until it is too late: how long each CRL it uses
has left before every client with ``sslcrl`` (and every certificate login
to a server with ``ssl_crl_file``) stops working.

Of several CRLs of one issuer, key and scope, OpenSSL uses one: a current
one before a stale one, then the one issued last. A superseded CRL beside
it, the CRL of another key of the same CA, one OpenSSL never reads: history
or someone else's, not a problem; :func:`judge_crls` says so as
information.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from .certs import CertFacts, describe_name
from .der import children, extensions, parse
from .record import Record

__all__ = [
    "CrlFacts",
    "CrlStatus",
    "crl_extension",
    "crl_for",
    "distribution_points",
    "judge_crl",
    "judge_crls",
    "parse_crl",
    "revocation_entry",
    "revocation_of",
    "signed_by",
    "unusable_kind",
]

_E = TypeVar("_E", bound=x509.ExtensionType)

#: 2.5.29.31, cRLDistributionPoints, as the content bytes of its OID.
_OID_CRL_DISTRIBUTION_POINTS = bytes.fromhex("551d1f")


class CrlFacts(Record):
    """One CRL and where it came from (a file, a directory entry, a URL)."""

    crl: x509.CertificateRevocationList
    source: str
    #: Given with ``--audit-crl``: a server's ``ssl_crl_file``, which concerns
    #: client certificates of any CA, not this server's chain.
    audited: bool = False
    #: Why OpenSSL never reads it, though it is in the directory given (a
    #: hashed directory is looked up by name, see :mod:`.local_files`).
    unread: str | None = None

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

    def current(self, now: dt.datetime) -> bool:
        """Whether OpenSSL takes it as current at ``now`` (no nextUpdate: for ever)."""
        if now < self.crl.last_update_utc:
            return False
        return self.next_update is None or now <= self.next_update


class CrlStatus(Record):
    """A CRL judged: its days left (None without nextUpdate) and what is wrong."""

    crl: CrlFacts
    days_left: float | None
    #: Why clients cannot use it (stale, forged): None when usable, and for a
    #: CRL OpenSSL does not use.
    problem: str | None
    #: Whether its signature was checked against its issuer's key (the issuer
    #: may be neither a trusted root nor in this server's chain).
    signature_checked: bool = True
    #: Whether OpenSSL uses it: the one it picks of its issuer and scope (of
    #: an issuer in this server's chain, for sslcrl and sslcrldir).
    in_use: bool = True
    #: Information, never a problem: why OpenSSL does not use it, or what is
    #: odd about one it uses (no nextUpdate).
    note: str | None = None


def crl_for(cert: x509.Certificate, crls: Iterable[CrlFacts]) -> CrlFacts | None:
    """The CRL issued by ``cert``'s issuer, if one is loaded (the freshest one).

    One OpenSSL may use comes first: a delta CRL, say, only when there is
    no other; never one of another key of the issuer (its key identifier is
    not the one the certificate names), nor one OpenSSL never reads.
    """
    try:
        named = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        named = None
    wanted = named.key_identifier if named is not None else None

    def fits(crl: CrlFacts) -> bool:
        akid = crl_extension(crl.crl, x509.AuthorityKeyIdentifier)
        found = akid.key_identifier if akid is not None else None
        return wanted is None or found is None or found == wanted

    matching = [c for c in crls if c.crl.issuer == cert.issuer and c.unread is None and fits(c)]
    if not matching:
        return None
    return max(matching, key=lambda c: (unusable_kind(c.crl) is None, c.crl.last_update_utc))


def revocation_entry(serial: int, crl: x509.CertificateRevocationList) -> str | None:
    """``revoked on 2026-11-29 (key compromise)``, or None when ``serial`` is not listed.

    An entry whose reason is removeFromCRL lifts a hold: OpenSSL reads it as
    not revoked, and so does this.
    """
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        return None
    when = f"{entry.revocation_date_utc:%Y-%m-%d}"
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return f"revoked on {when}"
    if reason is x509.ReasonFlags.remove_from_crl:
        return None
    return f"revoked on {when} ({reason.name.replace('_', ' ')})"


def revocation_of(cert: x509.Certificate, crl: CrlFacts) -> str | None:
    """``revoked on 2026-11-29 (key compromise)``, or None when not listed."""
    return revocation_entry(cert.serial_number, crl.crl)


def judge_crl(crl: CrlFacts, issuers: Sequence[CertFacts], now: dt.datetime) -> CrlStatus:
    """Is the CRL signed by its issuer and still current?

    ``issuers`` are the certificates that may have issued it (the trusted
    roots, the presented chain); of those whose name matches, the ones
    its authority key identifier does not rule out are its issuer's
    certificates, and one of their keys must verify the signature.
    """
    days = crl.days_left(now)
    note = None
    if crl.next_update is None:
        note = f"CRL of {crl.issuer} ({crl.source}) has no nextUpdate: OpenSSL takes it as current"
    candidates = [c.certificate for c in _fitting(crl.crl, issuers) if c.certificate is not None]
    if not candidates:
        # A CRL of a CA this server's chain does not use, or signed by
        # another key of it: its signature cannot be checked here, and it
        # concerns other certificates.
        problem = _staleness(crl, days, now)
        return CrlStatus(crl, days, problem, signature_checked=False, note=note)
    signed = [signed_by(crl.crl, c) for c in candidates]
    if True in signed:
        return CrlStatus(crl, days, _staleness(crl, days, now), note=note)
    if None in signed:
        # A signature algorithm cryptography does not verify (SHA-1, say),
        # which OpenSSL may well accept: whether it does is OpenSSL's to say
        # in the chain's verification, which checks the CRLs it uses.
        return CrlStatus(crl, days, _staleness(crl, days, now), signature_checked=False, note=note)
    return CrlStatus(crl, days, f"CRL of {crl.issuer} ({crl.source}) is not signed by {crl.issuer}")


def judge_crls(
    crls: Sequence[CrlFacts],
    issuers: Sequence[CertFacts],
    concerns: Callable[[CrlFacts], bool],
    now: dt.datetime,
    path: Sequence[CertFacts] = (),
) -> tuple[CrlStatus, ...]:
    """Judge every CRL; only those OpenSSL uses can be a problem.

    For a certificate of ``path`` (the chain OpenSSL built, leaf first),
    OpenSSL considers only the CRLs of its issuer's name whose authority key
    identifier, if any, is that of the issuer on the path: a CRL of another
    key of the same CA (one retired in a key rollover) is never selected,
    however well signed, nor is one that merely claims the name. Of the CRLs
    it considers for one issuer and scope (Issuing Distribution Point), it
    uses one: a current one before one that is not, then the one issued
    last; that one must be signed by the issuer. OpenSSL uses no delta CRL
    here (libpq asks for none), and none it never reads. ``concerns`` says
    whether a CRL's issuer matters at all (an issuer of this server's chain,
    for the CRLs the client loads). The rest are information. In use first,
    the soonest to expire first.
    """
    considered = [crl for crl in crls if crl.unread is None and _another_key(crl, path) is None]
    chosen: dict[tuple[bool, object], CrlFacts] = {}
    for crl in considered:
        key = (crl.audited, _scope(crl))
        best = chosen.get(key)
        if best is None or _rank(crl, now) > _rank(best, now):
            chosen[key] = crl
    judged = []
    for crl in crls:
        status = judge_crl(crl, issuers, now)
        why_not = _not_used(crl, chosen.get((crl.audited, _scope(crl))), concerns, path)
        if why_not is not None:
            status = status._replace(problem=None, in_use=False, note=why_not)
        judged.append(status)
    far = float("inf")
    return tuple(
        sorted(
            judged,
            key=lambda j: (not j.in_use, far if j.days_left is None else j.days_left),
        )
    )


def _scope(facts: CrlFacts) -> tuple[object, ...]:
    # What OpenSSL matches a CRL to a certificate by: issuer name, its
    # Issuing Distribution Point; a delta CRL is never a complete one. The
    # key is the path's issuer's (the others were set aside); a server's
    # own CRL file (--audit-crl) serves client certificates issued by any
    # key of a CA, so there each key's CRLs are their own.
    crl = facts.crl
    akid = crl_extension(crl, x509.AuthorityKeyIdentifier) if facts.audited else None
    return (
        crl.issuer,
        akid.key_identifier if akid is not None else None,
        crl_extension(crl, x509.IssuingDistributionPoint),
        crl_extension(crl, x509.DeltaCRLIndicator) is not None,
    )


def _fitting(crl: x509.CertificateRevocationList, certs: Iterable[CertFacts]) -> list[CertFacts]:
    """The certificates ``crl`` may be from: its issuer's name, and the key its AKID names.

    OpenSSL's rule (``X509_check_akid``): a key identifier in the CRL must
    be the certificate's subject key identifier, when both have one. (The
    issuer name and serial an AKID may hold instead are left aside: CAs do
    not put them in CRLs.)
    """
    akid = crl_extension(crl, x509.AuthorityKeyIdentifier)
    wanted = akid.key_identifier if akid is not None else None
    fitting = []
    for cert in certs:
        parsed = cert.certificate
        try:
            if parsed is None or parsed.subject != crl.issuer:
                continue
            own = parsed.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            own = None
        except ValueError:
            continue
        if wanted is None or own is None or own == wanted:
            fitting.append(cert)
    return fitting


def _another_key(crl: CrlFacts, path: Sequence[CertFacts]) -> str | None:
    """Why OpenSSL never selects this CRL for the certificates of ``path``, or None.

    Only the issuer certificates on the path count, as in OpenSSL's
    ``crl_akid_check`` (without extended CRL support, which libpq does not ask
    for): a CRL whose key identifier names another key of its CA is not one
    OpenSSL considers.
    """
    if crl.audited or not path:
        return None
    named = [
        cert
        for cert in path
        if cert.certificate is not None and _subject(cert.certificate) == crl.crl.issuer
    ]
    if not named or _fitting(crl.crl, named):
        return None
    return (
        f"CRL of {crl.issuer} ({crl.source}) is not used: it is signed by another key of "
        f"{crl.issuer} than the one on this chain (its authority key identifier says so), "
        "so OpenSSL does not select it"
    )


def _subject(cert: x509.Certificate) -> x509.Name | None:
    try:
        return cert.subject
    except ValueError:
        return None


def _rank(crl: CrlFacts, now: dt.datetime) -> tuple[bool, dt.datetime]:
    return crl.current(now), crl.crl.last_update_utc


def _not_used(
    crl: CrlFacts,
    best: CrlFacts | None,
    concerns: Callable[[CrlFacts], bool],
    path: Sequence[CertFacts],
) -> str | None:
    what = f"CRL of {crl.issuer} ({crl.source})"
    if crl.unread is not None:
        return f"{what} is never read by OpenSSL: {crl.unread}"
    if crl_extension(crl.crl, x509.DeltaCRLIndicator) is not None:
        return (
            f"{what} is a delta CRL: libpq asks OpenSSL to use none (OpenSSL 3.0 still "
            "takes one alone for a complete CRL; the chain's verification says which)"
        )
    if not concerns(crl):
        return f"{what} concerns no certificate of this server's chain"
    other_key = _another_key(crl, path)
    if other_key is not None:
        return other_key
    if best is not None and best is not crl:
        issued = f"{best.crl.last_update_utc:%Y-%m-%d %H:%M} UTC"
        where = "" if best.source == crl.source else f" ({best.source})"
        return f"{what} is not used: OpenSSL uses the one issued {issued}{where}"
    return None


def _staleness(crl: CrlFacts, days: float | None, now: dt.datetime) -> str | None:
    if days is not None and days < 0:
        return f"CRL of {crl.issuer} ({crl.source}) expired on {crl.next_update:%Y-%m-%d %H:%M} UTC"
    if now < crl.crl.last_update_utc:
        return (
            f"CRL of {crl.issuer} ({crl.source}) is not valid before "
            f"{crl.crl.last_update_utc:%Y-%m-%d %H:%M} UTC"
        )
    return None


def signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool | None:
    """Whether ``issuer``'s key signed ``crl``; None when no OpenSSL can tell.

    cryptography's answer first; where it says no (it verifies no SHA-1
    signature, say), libpq's OpenSSL, the system's, decides: it is the one
    that checks the CRL for libpq (and for PostgreSQL, with --audit-crl).
    """
    try:
        if crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            return True
    except UnsupportedAlgorithm:
        pass
    except (TypeError, ValueError):
        return False
    from cryptography.hazmat.primitives.serialization import Encoding

    from .libpq_openssl import crl_signed_by

    return crl_signed_by(crl.public_bytes(Encoding.DER), issuer.public_bytes(Encoding.DER))


def crl_extension(crl: x509.CertificateRevocationList, kind: type[_E]) -> _E | None:
    """The value of one of the CRL's extensions; None if absent or unreadable."""
    try:
        return crl.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def unusable_kind(crl: x509.CertificateRevocationList) -> str | None:
    """What makes a CRL one OpenSSL never uses for libpq, or None.

    libpq asks OpenSSL for no extended CRL support and no delta CRLs: a
    CRL limited to some reasons, an indirect CRL and a delta CRL are never
    taken for a certificate's CRL.
    """
    if crl_extension(crl, x509.DeltaCRLIndicator) is not None:
        return "a delta CRL"
    point = crl_extension(crl, x509.IssuingDistributionPoint)
    if point is not None and point.only_some_reasons:
        return "a CRL of some revocation reasons only"
    if point is not None and point.indirect_crl:
        return "an indirect CRL"
    return None


def distribution_points(certificate: bytes) -> tuple[str, ...]:
    """The URIs of a certificate's CRL Distribution Points (DER in), in order.

    Read from the certificate's own bytes: cryptography refuses a whole
    extension over one entry it cannot decode. Each URI's bytes become one
    character each (latin-1), so that nothing is lost before the URL is
    checked and, if shown, escaped.

    Raises:
        ValueError: the certificate or the extension is not well-formed DER.
    """
    for oid, _critical, value in extensions(certificate):
        if oid != _OID_CRL_DISTRIBUTION_POINTS:
            continue
        uris = []
        # DistributionPoint ::= SEQUENCE { distributionPoint [0] { fullName [0] GeneralNames } ... }
        for point in children(parse(value)):
            for field in children(point):
                if field.tag != 0xA0:
                    continue
                for name in children(field):
                    if name.tag != 0xA0:
                        continue
                    uris += [n.content.decode("latin-1") for n in children(name) if n.tag == 0x86]
        return tuple(uris)
    return ()


def parse_crl(body: bytes) -> x509.CertificateRevocationList | None:
    """A CRL from an HTTP body: DER, as RFC 5280 says, or PEM, as some serve it."""
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(body)
        return x509.load_der_x509_crl(body)
    except ValueError:
        return None
