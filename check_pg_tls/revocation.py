"""``--check-revocation``: each certificate against the CRL its issuer publishes.

For every certificate a client uses (the verified path up to, not
including, the trusted root), the CRL is fetched from the certificate's own
CRL Distribution Point and believed only if its issuer signed it, it is
current and it is the shard the URL promises. A listed serial is CRITICAL;
a CRL that cannot be had or believed is a separate finding ("revocation
unknown"), never "revoked".
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

from cryptography import x509

from .certs import CertFacts, facts_from_der
from .crl_fetch import CrlFetcher
from .crls import check_fetched, distribution_points, parse_crl
from .posture import Finding

__all__ = ["revocation_finding"]


def _who(index: int, cert: CertFacts) -> str:
    return "certificate" if index == 0 else f"intermediate {cert.subject}"


def _path(chain: Sequence[CertFacts], verified: Sequence[bytes]) -> list[CertFacts]:
    # The certificates clients use, each followed by its issuer when known.
    if len(verified) >= 2:
        return [facts_from_der(der) for der in verified]
    return list(chain)


def revocation_finding(
    chain: Sequence[CertFacts],
    verified: Sequence[bytes],
    fetcher: CrlFetcher,
    deadline: float,
    now: dt.datetime,
    unknown_severity: str,
) -> Finding:
    """Fetch and judge; ``deadline`` is a time.monotonic() value not to pass."""
    path = _path(chain, verified)
    revoked: list[str] = []
    unknown: list[str] = []
    checked: list[str] = []
    for index, facts in enumerate(path):
        cert = facts.certificate
        who = _who(index, facts)
        if cert is None:
            unknown.append(f"{who} cannot be parsed to find its CRL")
            continue
        if index > 0 and index == len(path) - 1 and _self_issued(cert):
            break  # the trusted root: nobody above it publishes a CRL for it
        issuer = path[index + 1].certificate if index + 1 < len(path) else None
        urls = [u for u in distribution_points(cert) if u.lower().startswith("http")]
        if not urls:
            if index == 0:
                unknown.append("certificate names no CRL distribution point (http)")
            continue
        outcome = None
        for url in urls:
            fetched = fetcher.fetch(url, deadline - time.monotonic())
            if fetched.body is None:
                outcome = f"cannot fetch the CRL for {who} from {url}: {fetched.failure}"
                continue
            crl = parse_crl(fetched.body)
            if crl is None:
                outcome = f"{url} does not hold a CRL (for {who})"
                continue
            judged = check_fetched(cert, issuer, crl, url, now)
            if judged.problem is not None:
                outcome = f"{judged.problem} (for {who})"
                continue
            outcome = None
            if judged.revoked is not None:
                revoked.append(f"{who} {judged.revoked}, says the CRL at {url}")
            else:
                checked.append(who)
            break
        if outcome is not None:
            unknown.append(outcome)
    if revoked:
        return Finding("revocation", "; ".join(revoked), "revoked")
    if unknown:
        return Finding(
            "revocation", f"revocation unknown: {'; '.join(unknown)}", "unknown", unknown_severity
        )
    if not checked:
        return Finding("revocation", None, "no certificate to check for revocation")
    return Finding("revocation", None, f"not revoked ({', '.join(checked)})")


def _self_issued(cert: x509.Certificate) -> bool:
    try:
        return cert.subject == cert.issuer
    except ValueError:
        return False
