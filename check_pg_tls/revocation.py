"""``--check-revocation``: each certificate against the CRL its issuer publishes.

Only a chain OpenSSL verified is looked at: a URL in a certificate nobody
vouches for is the server's choice, and fetching it would let any server
make the monitoring host send requests wherever it likes. For every
certificate of the verified path below its trust anchor, the CRLs are
fetched from every distribution point the certificate names, and OpenSSL
decides (:mod:`.crl_verify`) on all of them together which covers the
certificate and whether it lists it: it takes the best, so an older CRL at
one URL cannot hide a revocation in a newer one at another. A listed serial
is CRITICAL; a CRL that cannot be had, or that OpenSSL will not use for the
certificate, and a certificate that names no distribution point, are a
separate finding ("revocation unknown"), never "revoked" and never "not
revoked".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from OpenSSL import crypto

from .certs import facts_from_der
from .crl_fetch import CrlFetcher
from .crl_verify import CRL_CODES, CrlAnswer, check_certificate, openssl_reads
from .crls import (
    crl_extension,
    distribution_points,
    parse_crl,
    revocation_entry,
    unusable_kind,
)
from .model import Check, Finding, State
from .record import Record
from .text import safe

__all__ = ["revocation_finding"]

#: Longest URL shown: it comes from a certificate.
_URL_TEXT = 100


class _Outcome(Record):
    #: "revoked", "unknown" or "checked".
    kind: str
    text: str = ""


def revocation_finding(
    path: Sequence[bytes],
    verifies_chain: bool,
    fetcher: CrlFetcher,
    deadline: float,
    now: dt.datetime,
    unknown_severity: State,
) -> Finding:
    """Fetch and let OpenSSL judge; ``deadline`` is a time.monotonic() value not to pass.

    ``path`` is the path OpenSSL verified, leaf first, trust anchor last;
    empty when the chain was not verified (``verifies_chain`` says whether
    it was asked to be).
    """
    if not path:
        why = (
            "sslmode=require verifies no certificate"
            if not verifies_chain
            else "the chain is not trusted"
        )
        return Finding(
            Check.REVOCATION,
            f"revocation not checked: {why}, and no URL an unverified certificate names is fetched",
            "not checked",
            unknown_severity,
        )
    outcomes = [_check(path, index, fetcher, deadline, now) for index in range(len(path) - 1)]
    revoked = [o.text for o in outcomes if o.kind == "revoked"]
    unknown = [o.text for o in outcomes if o.kind == "unknown"]
    checked = [o.text for o in outcomes if o.kind == "checked"]
    if revoked:
        return Finding(Check.REVOCATION, "; ".join(revoked), "revoked", State.CRITICAL)
    if unknown:
        return Finding(
            Check.REVOCATION,
            f"revocation unknown: {'; '.join(unknown)}",
            "unknown",
            unknown_severity,
        )
    if not checked:
        return Finding.ok(Check.REVOCATION, "no certificate to check for revocation")
    return Finding.ok(Check.REVOCATION, f"not revoked ({', '.join(checked)})")


def _check(
    path: Sequence[bytes], index: int, fetcher: CrlFetcher, deadline: float, now: dt.datetime
) -> _Outcome:
    who = "certificate" if index == 0 else f"intermediate {facts_from_der(path[index]).subject}"
    try:
        urls = distribution_points(path[index])
    except ValueError:
        return _Outcome("unknown", f"the CRL distribution points of {who} cannot be read")
    # Other schemes (ldap:) are left to clients that speak them.
    urls = tuple(dict.fromkeys(url for url in urls if url[:4].lower() == "http"))
    if not urls:
        # Nothing says whether it is revoked: as unknown as a CRL that
        # cannot be had, for an intermediate as for the leaf.
        return _Outcome("unknown", f"{who} names no CRL distribution point (http)")
    # Every distribution point, then OpenSSL on all their CRLs together: it
    # takes the best of them (the one issued last), so an older CRL still
    # current at one URL cannot hide a revocation in a newer one at another.
    fetched: list[tuple[str, x509.CertificateRevocationList]] = []
    reasons: list[str] = []
    for url in urls:
        shown = safe(url, _URL_TEXT)
        got = fetcher.fetch(url, deadline)
        if got.body is None:
            reasons.append(f"cannot fetch the CRL for {who} from {shown}: {got.failure}")
            continue
        crl = parse_crl(got.body)
        if crl is None:
            reasons.append(f"{shown} does not hold a CRL (for {who})")
        elif not openssl_reads(crl):
            reasons.append(f"OpenSSL cannot read the CRL at {shown} (for {who})")
        else:
            fetched.append((url, crl))
    if not fetched:
        return _Outcome("unknown", "; ".join(reasons))
    answer = check_certificate(path, index, [c for _, c in fetched], now)
    if answer.not_revoked:
        # A CRL covers it and none revokes it; a mirror that failed is said.
        missed = f" ({'; '.join(reasons)})" if reasons else ""
        return _Outcome("checked", f"{who}{missed}")
    matched_url, matched = _matched(path, index, fetched, answer, now)
    where = safe(matched_url, _URL_TEXT)
    if answer.revoked:
        serial = crypto.load_certificate(crypto.FILETYPE_ASN1, path[index]).get_serial_number()
        listed = revocation_entry(serial, matched) or "revoked"
        return _Outcome("revoked", f"{who} {listed}, says the CRL at {where}")
    reason = _unusable(answer, who, path[index], where, matched)
    return _Outcome("unknown", "; ".join([*reasons, reason]))


def _matched(
    path: Sequence[bytes],
    index: int,
    fetched: list[tuple[str, x509.CertificateRevocationList]],
    answer: CrlAnswer,
    now: dt.datetime,
) -> tuple[str, x509.CertificateRevocationList]:
    # OpenSSL does not say which CRL it matched; of several, the first that
    # gives the same answer on its own is the one the wording names.
    if len(fetched) > 1:
        for url, crl in fetched:
            if check_certificate(path, index, [crl], now).code == answer.code:
                return url, crl
    return fetched[-1]


def _unusable(
    answer: CrlAnswer, who: str, cert: bytes, shown: str, crl: x509.CertificateRevocationList
) -> str:
    """Why OpenSSL will not say whether the certificate is revoked, in our words.

    ``shown`` is the CRL's URL, already made safe to print.
    """
    issuer = facts_from_der(cert).issuer
    code = answer.code
    openssl = f"OpenSSL: {answer.message}"
    if code == 12 and crl.next_update_utc is not None:
        return (
            f"CRL of {issuer} at {shown} expired on {crl.next_update_utc:%Y-%m-%d %H:%M} UTC "
            f"(for {who})"
        )
    if code == 11:
        return (
            f"CRL of {issuer} at {shown} is not valid before "
            f"{crl.last_update_utc:%Y-%m-%d %H:%M} UTC (for {who})"
        )
    if code in (5, 8):
        return f"CRL at {shown} is not signed by {issuer} (for {who})"
    if code == 44:
        return f"the CRL at {shown} does not cover {who}{_scope_hint(crl)} ({openssl})"
    if code == 36:
        return (
            f"the CRL at {shown} has a critical extension OpenSSL does not handle, so it "
            f"cannot vouch for {who}"
        )
    if code == 3:
        return f"the CRL at {shown} cannot be used for {who}{_kind_hint(crl, issuer)} ({openssl})"
    if code == 35:
        return (
            f"{issuer} may not sign CRLs (key usage), so the CRL at {shown} cannot vouch for {who}"
        )
    if code in CRL_CODES:
        return f"the CRL at {shown} cannot be used for {who} ({openssl})"
    return f"OpenSSL cannot check {who} against the CRL at {shown} ({openssl})"


def _scope_hint(crl: x509.CertificateRevocationList) -> str:
    point = crl_extension(crl, x509.IssuingDistributionPoint)
    if point is None:
        return ""
    if point.only_contains_ca_certs:
        return ": it lists CA certificates only"
    if point.only_contains_user_certs:
        return ": it lists end-entity certificates only"
    if point.only_contains_attribute_certs:
        return ": it lists attribute certificates only"
    if point.full_name is not None or point.relative_name is not None:
        return ": it is the CRL of another distribution point"
    return ""


def _kind_hint(crl: x509.CertificateRevocationList, issuer: str) -> str:
    kind = unusable_kind(crl)
    if kind == "a CRL of some revocation reasons only":
        return ": it covers only some revocation reasons"
    if kind is not None:
        return f": it is {kind}"
    return f": it is not issued by {issuer} (name and key identifier)"
