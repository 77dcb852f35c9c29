"""Pure judgement: what would libpq decide about the presented chain?

No I/O, no clock: the observation, the policy and ``now`` come in, a frozen
:class:`Verdict` goes out.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from . import posture
from .auxiliary import failed, isolated
from .certs import CertFacts, facts_from_der, load_chain
from .channel_binding import certificate_hash
from .crls import CrlFacts, CrlStatus, judge_crls
from .model import CertificateHash, Check, Finding, Observation, Policy, State
from .names import check_name
from .record import Record
from .text import safe, span
from .trust import ChainCheck, describe_verification

__all__ = ["Verdict", "describe_days", "judge"]


class Verdict(Record):
    chain: tuple[CertFacts, ...]
    #: Indexes into ``chain`` of the certificates a client uses.
    relevant: tuple[int, ...]
    #: Days left of the certificate that expires first among the relevant ones.
    days_left: float
    #: Index into ``chain`` of that certificate.
    limiting: int
    findings: tuple[Finding, ...]
    #: The verified path, leaf first, as DER, when the chain was verified.
    path: tuple[bytes, ...] = ()
    #: Every complaint of OpenSSL's verification, worded (for -v and JSON).
    complaints: tuple[str, ...] = ()
    #: Every CRL judged, soonest to expire first.
    crls: tuple[CrlStatus, ...] = ()
    #: What libpq makes of the leaf for SCRAM channel binding.
    channel_binding: CertificateHash | None = None
    #: Whether the chain passes PKIX validation (verified, and trusted).
    trusted: bool = False

    @property
    def leaf(self) -> CertFacts:
        return self.chain[0]

    @property
    def limiting_cert(self) -> CertFacts:
        return self.chain[self.limiting]


def judge(observation: Observation, policy: Policy, now: dt.datetime) -> Verdict:
    """Judge a probe's observation under ``policy`` at time ``now`` (aware, UTC).

    Raises:
        ValueError: a presented certificate does not parse.
    """
    chain = load_chain(observation.chain)
    findings: list[Finding] = []
    chain_check: ChainCheck | None = None
    if observation.legacy_reason is not None:
        findings.append(posture.legacy_finding(observation, policy.min_tls_version))
    if policy.client_sslmode is not None:
        findings.append(
            Finding(
                Check.SSLMODE,
                f"sslmode={policy.client_sslmode} in the connection string lets a client "
                f"{'never use' if policy.client_sslmode == 'disable' else 'run without'} TLS; "
                "use verify-full (the TLS the server offers is judged as with require)",
                "plaintext possible",
                State.WARNING,
            )
        )
    if policy.verifies_chain:
        # Only the CRLs OpenSSL checked the chain against (not --audit-crl,
        # nor what OpenSSL never reads of a hashed directory).
        checked = (
            [crl for crl in policy.crls if not crl.audited and crl.unread is None]
            if policy.checks_crls
            else []
        )
        chain_check = describe_verification(
            chain, observation.verify_errors, observation.verified_chain, checked, now, policy.libpq
        )
        if chain_check.newer_refuses is not None:
            findings.append(
                Finding(
                    Check.TRUST,
                    chain_check.newer_refuses,
                    "chain reaches a trusted root for libpq's OpenSSL only",
                    State.WARNING,
                )
            )
        else:
            findings.append(
                Finding(
                    Check.TRUST,
                    chain_check.problem,
                    "chain reaches a trusted root" if chain_check.ok else "chain not trusted",
                    State.CRITICAL,
                )
            )
    if policy.verifies_name:
        findings.append(_name_finding(chain[0], policy.servername))

    relevant = _relevant(chain, chain_check)
    limiting = min(relevant, key=lambda i: chain[i].not_after)
    findings.append(_validity_finding(chain, relevant, now))
    if chain_check is not None and chain_check.ok:
        findings.append(posture.incomplete_chain_finding(chain_check.missing, chain))
    findings.append(posture.tls_version_finding(observation.tls_version, policy.min_tls_version))
    findings.append(posture.key_strength_finding(chain[0], policy.min_rsa_bits, policy.min_ec_bits))
    findings.append(posture.signature_finding(chain, relevant, policy.weak_signature))
    # What follows judges other things than the chain: each fails alone (see
    # auxiliary), and the verdict above stands.
    if policy.cert_file is not None:
        path, on_disk = policy.cert_file
        findings += isolated(Check.RELOAD, posture.reload_finding, chain[0], on_disk, path)
    if policy.key_file is not None:
        findings += isolated(Check.KEY_MATCH, posture.key_file_findings, policy.key_file, chain[0])
    findings += isolated(
        Check.CLIENT_CERTIFICATE,
        posture.client_certificate_finding,
        observation,
        policy.client_cert is not None,
    )
    if policy.client_key_mode is not None:
        findings += isolated(
            Check.CLIENT_KEY_PERMISSIONS, posture.client_key_mode_finding, *policy.client_key_mode
        )
    binding: CertificateHash | None = None
    try:
        binding = certificate_hash(chain[0].der)
        findings.append(
            posture.channel_binding_finding(
                binding,
                observation.login,
                policy.channel_binding,
                policy.login_rules.channel_binding,
                policy.client_sslmode,
            )
        )
    except Exception as exc:  # noqa: BLE001 - fails alone (see auxiliary)
        findings.append(failed(Check.CHANNEL_BINDING, exc))
    if observation.login is not None:
        findings += isolated(
            Check.AUTH,
            posture.login_finding,
            observation,
            policy.passwordless,
            _common_name(policy),
            policy.login_rules,
        )
    crls: tuple[CrlStatus, ...] = ()
    try:
        crls = _judge_crls(policy, chain, observation.verified_chain, now)
        if crls or policy.crls_ignored:
            findings.append(_crl_finding(crls, policy.crls_ignored))
    except Exception as exc:  # noqa: BLE001 - the CRL audit fails alone (see auxiliary)
        crls = ()
        findings.append(failed(Check.CRL, exc))
    return Verdict(
        chain=chain,
        relevant=relevant,
        days_left=chain[limiting].days_left(now),
        limiting=limiting,
        findings=tuple(findings),
        path=chain_check.path if chain_check else (),
        complaints=chain_check.complaints if chain_check else (),
        crls=crls,
        channel_binding=binding,
        trusted=chain_check is not None and chain_check.ok,
    )


def _common_name(policy: Policy) -> str | None:
    # The name PostgreSQL compares with the user (clientname=CN, the default).
    cert = policy.client_cert.certificate if policy.client_cert is not None else None
    if cert is None:
        return None
    try:
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        return None
    value = names[0].value if names else None
    return value if isinstance(value, str) else None


def _judge_crls(
    policy: Policy, chain: tuple[CertFacts, ...], verified: tuple[bytes, ...], now: dt.datetime
) -> tuple[CrlStatus, ...]:
    if not policy.crls:
        return ()
    issuers = [*chain, *policy.crl_issuers]
    known = {cert.der for cert in issuers}
    for der in verified:
        if der not in known:
            issuers.append(facts_from_der(der))
    # A client looks for the CRLs of the issuers on the path OpenSSL built
    # (or, when it built none, of what the server sent).
    path = [facts_from_der(der) for der in verified] if verified else list(chain)
    names = []
    for cert in path:
        try:
            if cert.certificate is not None:
                names.append(cert.certificate.issuer)
        except ValueError:
            continue

    def concerns(crl: CrlFacts) -> bool:
        return crl.audited or crl.crl.issuer in names

    return judge_crls(policy.crls, issuers, concerns, now, path)


def _crl_finding(crls: tuple[CrlStatus, ...], ignored: str | None) -> Finding:
    if ignored is not None:
        return Finding(Check.CRL, ignored, "CRLs ignored", State.WARNING)
    problems = [c.problem for c in crls if c.problem is not None]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Finding(Check.CRL, problems[0] + more, "CRL unusable", State.CRITICAL)
    used = sum(1 for c in crls if c.in_use)
    unused = f"; {len(crls) - used} not in use" if used < len(crls) else ""
    return Finding.ok(Check.CRL, f"{used} CRL{'s' if used != 1 else ''} in use and current{unused}")


def _relevant(chain: tuple[CertFacts, ...], check: ChainCheck | None) -> tuple[int, ...]:
    # Once a path is verified, extra certificates the server happens to send
    # (an old cross-signed root, say) do not affect clients: ignore them.
    if check is None or not check.ok:
        return tuple(range(len(chain)))
    used = [i for i, c in enumerate(chain) if c.der in check.path]
    return tuple(used) or (0,)


def _name_finding(leaf: CertFacts, name: str) -> Finding:
    shown = safe(name, 100)
    check = check_name(leaf.names, name)
    if check.matches:
        return Finding.ok(Check.NAME, f"certificate is valid for {shown}")
    if check.malformed is not None:
        return Finding(
            Check.NAME,
            f"certificate is not valid for {shown}: {check.malformed}",
            "bad name",
            State.CRITICAL,
        )
    names = leaf.names_for_display()
    valid_for = (
        f" (valid for {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""
    )
    return Finding(
        Check.NAME,
        f"certificate is not valid for {shown}{valid_for}",
        "name mismatch",
        State.CRITICAL,
    )


def _validity_finding(
    chain: tuple[CertFacts, ...], relevant: tuple[int, ...], now: dt.datetime
) -> Finding:
    for i in relevant:
        cert = chain[i]
        if now < cert.not_before:
            return Finding(
                Check.VALIDITY,
                f"{_which(i)} is not valid before {cert.not_before:%Y-%m-%d %H:%M} UTC",
                "not yet valid",
                State.CRITICAL,
            )
    return Finding.ok(Check.VALIDITY, "every certificate has begun its validity period")


def _which(index: int) -> str:
    return "certificate" if index == 0 else f"intermediate #{index}"


def describe_days(verdict: Verdict) -> str:
    """``expires in 84 days (2027-02-21)``, naming the certificate if not the leaf."""
    cert = verdict.limiting_cert
    days = verdict.days_left
    who = "certificate" if verdict.limiting == 0 else f"intermediate {cert.subject}"
    when = f"{cert.not_after:%Y-%m-%d}"
    if days < 0:
        return f"{who} expired {span(-days)} ago ({when})"
    return f"{who} expires in {span(days)} ({when})"
