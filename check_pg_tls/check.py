"""One target, one outcome: :func:`check` probes and judges a target and returns a value.

Everything a check of one server does happens here, in the order and with
the parallelism it has always had: the TLSA lookup starts beside the probe;
the probe makes the handshake (and, with ``--check-auth``, the login); the
verdict judges the chain; revocation, DANE and the unencrypted login are
judged after it, each failing alone (see :mod:`.auxiliary`); the days left
are held against the thresholds. What comes out is a frozen
:class:`~.model.Outcome` that every output reads.

No nagiosplugin, no module state: many threads may check at once, each with
its own target, sharing only the loaded settings (and a run's CRL fetcher).
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import TYPE_CHECKING

from .auxiliary import isolated
from .certs import facts_from_der
from .errors import CheckFailed, ProbeError, ServerMisbehaved, Unreachable
from .model import (
    CertSummary,
    Check,
    CheckedAs,
    CheckResult,
    ClientCertSummary,
    CrlSummary,
    Finding,
    Observation,
    Outcome,
    Perfdata,
    PlaintextAnswer,
    PlaintextCheck,
    Policy,
    Session,
    Settings,
    State,
    Target,
    Thresholds,
    worst,
)
from .openssl_client import openssl_version
from .perfdata import number, range_text
from .posture import plaintext_finding
from .probe import probe, probe_plaintext
from .text import days_down, safe, span
from .thresholds import Threshold, judge_days
from .verdict import Verdict, describe_days, judge

if TYPE_CHECKING:
    # urllib costs 30 ms of start-up: only --check-revocation imports it.
    from .crl_fetch import CrlFetcher
    from .tlsa_lookup import PendingLookup

__all__ = ["Budget", "check", "unchecked"]


class Budget(float):
    """Seconds left for a check, worded as the timeout the user set.

    Messages name a check's timeout ("did not answer within 5 seconds"), and
    that number must be the one the user set (``-t``, a module's
    ``timeout``), never what was left of it after start-up or a wait: a
    reason that changes from one run to the next is a new series each time
    in Prometheus.
    """

    shown: float

    def __new__(cls, left: float, shown: float) -> Budget:
        budget = super().__new__(cls, left)
        budget.shown = shown
        return budget

    def __format__(self, spec: str) -> str:
        return format(self.shown, spec)


def check(
    target: Target, settings: Settings, timeout: float, fetcher: CrlFetcher | None = None
) -> Outcome:
    """Check ``target`` with ``settings`` within ``timeout`` seconds from now.

    ``timeout`` is also the number messages name (a float whose ``format``
    shows the user's ``-t`` may stand for what is left of it). ``fetcher``
    is a run's shared CRL fetcher, which fetches each URL once; without one,
    this check has its own. Never raises: whatever goes wrong is in the
    outcome.
    """
    started = time.monotonic()
    policy = settings.policy(target.checked_name)
    checked_as = CheckedAs(
        sslmode=policy.sslmode,
        servername=policy.servername,
        verifies_chain=policy.verifies_chain,
        verifies_name=policy.verifies_name,
        client_sslmode=policy.client_sslmode,
        sslrootcert=policy.sslrootcert,
        negotiation=settings.negotiation,
        openssl_version=openssl_version(),
    )
    # What the probe saw, should a later step fail: the outcome still says it.
    seen: list[Observation] = []
    try:
        lookup = _start_tlsa_lookup(target, settings, timeout)
        return _check(target, settings, policy, checked_as, timeout, fetcher, started, lookup, seen)
    except Exception as exc:  # noqa: BLE001 - one server's oddity must not cost the others
        error = CheckFailed(
            f"internal error while checking this server: {type(exc).__name__}: "
            f"{safe(str(exc), 150)}"
        )
        session = _session(seen[0]) if seen else None
        return _failed(target, checked_as, settings, error, time.monotonic() - started, session)


def unchecked(target: Target, problem: str) -> Outcome:
    """The outcome of a target that is never probed: it names no server (a bad
    line of a targets file), or its own settings cannot be loaded. UNKNOWN."""
    # A stand-in for how it would have been checked: nothing verified, as the
    # outputs have always shown such a target.
    checked_as = CheckedAs(sslmode="require", servername=target.checked_name)
    result = CheckResult(Check.CONNECTION, State.UNKNOWN, problem)
    return _concluded(Outcome(target, checked_as, State.UNKNOWN, (result,), error=problem))


def _start_tlsa_lookup(target: Target, settings: Settings, timeout: float) -> PendingLookup | None:
    if settings.dane is None:
        return None
    from .dane import tlsa_owner, unusable_name
    from .tlsa_lookup import PendingLookup

    name = target.checked_name
    if unusable_name(name) is not None:
        return None
    # Beside the probe, within the same timeout.
    return PendingLookup(tlsa_owner(target.port, name), settings.dane.server, timeout)


def _check(
    target: Target,
    settings: Settings,
    policy: Policy,
    checked_as: CheckedAs,
    timeout: float,
    fetcher: CrlFetcher | None,
    started: float,
    lookup: PendingLookup | None,
    seen: list[Observation],
) -> Outcome:
    direct = settings.negotiation == "direct"
    try:
        observation = probe(
            target, timeout, settings.trust.contexts, direct, settings.login, settings.tcp
        )
    except ProbeError as exc:
        return _failed(target, checked_as, settings, exc, time.monotonic() - started)
    seen.append(observation)
    session = _session(observation)
    seconds = observation.handshake_seconds
    now = dt.datetime.now(dt.timezone.utc)
    try:
        verdict = judge(observation, policy, now)
    except ValueError:
        error = ServerMisbehaved("server presented a certificate that does not parse")
        return _failed(target, checked_as, settings, error, seconds, session, now)
    findings = verdict.findings
    # Each auxiliary finding fails alone (see auxiliary): its exception is
    # its own UNKNOWN, the verdict above stands.
    if settings.revocation is not None:
        from .crl_fetch import CrlFetcher
        from .revocation import revocation_finding

        # Only a verified path: a URL an unverified certificate names is never fetched.
        findings += isolated(
            Check.REVOCATION,
            revocation_finding,
            verdict.path,
            policy.verifies_chain,
            fetcher or CrlFetcher(),
            started + timeout * 0.9,
            now,
            settings.revocation.unknown_state,
        )
    if settings.dane is not None:
        from .dane import judge_dane

        left = timeout - (time.monotonic() - started)
        answer = lookup.wait(left) if lookup is not None else None
        findings += isolated(
            Check.DANE,
            judge_dane,
            answer,
            verdict.chain,
            verdict.path,
            verdict.trusted,
            target,
            now,
            settings.dane,
        )
    if settings.plaintext is not None:
        # Both probes share the one timeout of this target.
        left = timeout - (time.monotonic() - started)
        findings += isolated(Check.PLAINTEXT, _plaintext_finding, target, settings.plaintext, left)
    return _judged(target, checked_as, settings, policy, verdict, findings, session, seconds, now)


def _plaintext_finding(target: Target, plaintext: PlaintextCheck, timeout: float) -> Finding:
    try:
        if timeout < 0.1:
            raise ProbeError("no time left within the timeout")
        reply = probe_plaintext(target, plaintext.user, plaintext.database, timeout)
    except ProbeError as exc:
        answer = PlaintextAnswer(plaintext.user, plaintext.database, None, str(exc))
    else:
        answer = PlaintextAnswer(plaintext.user, plaintext.database, reply)
    return plaintext_finding(answer, plaintext.state)


def _session(observation: Observation) -> Session:
    return Session(
        address=observation.address,
        tls_version=observation.tls_version,
        cipher=observation.cipher,
        alpn=observation.alpn,
        connect_seconds=observation.connect_seconds,
        handshake_seconds=observation.handshake_seconds,
        legacy_reason=observation.legacy_reason,
        login=observation.login,
    )


def _time(seconds: float) -> CheckResult:
    # Time is reported even when the probe failed, so that every run has
    # perfdata (a timeout shows as a spike, and Sensu's nagios_perfdata
    # extraction does not fail on an outage).
    perfdata = Perfdata("time", number(round(seconds, 6)), "s", min="0")
    return CheckResult(Check.TIME, State.OK, None, perfdata)


def _failed(
    target: Target,
    checked_as: CheckedAs,
    settings: Settings,
    error: ProbeError,
    seconds: float,
    session: Session | None = None,
    checked_at: dt.datetime | None = None,
) -> Outcome:
    """No certificate was judged: CRITICAL, the user's choice when unreachable,
    UNKNOWN when the check itself could not judge."""
    if isinstance(error, CheckFailed):
        state = State.UNKNOWN
    elif isinstance(error, Unreachable):
        state = settings.unreachable
    else:
        state = State.CRITICAL
    results = (_time(seconds), CheckResult(Check.CONNECTION, state, str(error)))
    return _concluded(
        Outcome(
            target,
            checked_as,
            State.UNKNOWN,
            results,
            error=str(error),
            session=session,
            seconds=seconds,
            checked_at=checked_at,
        )
    )


def _judged(
    target: Target,
    checked_as: CheckedAs,
    settings: Settings,
    policy: Policy,
    verdict: Verdict,
    findings: tuple[Finding, ...],
    session: Session,
    seconds: float,
    now: dt.datetime,
) -> Outcome:
    thresholds = settings.thresholds
    results = [_time(seconds), _expiry(verdict, thresholds.warning, thresholds.critical)]
    results += [
        CheckResult(f.check, f.state, f.detail if f.problem is None else f.problem)
        for f in findings
    ]
    client = None
    if policy.client_cert is not None:
        cert = policy.client_cert
        days = cert.days_left(now)
        client = ClientCertSummary(cert.subject, cert.not_after, days)
        results.append(_client_days(client, cert.lifetime_days, thresholds))
    timed = (c.days_left for c in verdict.crls if c.in_use and c.days_left is not None)
    soonest = next(timed, None)
    if soonest is not None:
        results.append(_crl_days(verdict, soonest, thresholds))
    return _concluded(
        Outcome(
            target,
            checked_as,
            State.UNKNOWN,
            tuple(results),
            findings=findings,
            session=session,
            chain=tuple(
                _summary(cert.der, i in verdict.relevant) for i, cert in enumerate(verdict.chain)
            ),
            days_left=verdict.days_left,
            limiting=verdict.limiting,
            chain_expiry=_chain_expiry(verdict),
            complaints=verdict.complaints,
            crls=tuple(
                CrlSummary(
                    issuer=status.crl.issuer,
                    source=safe(status.crl.source),
                    next_update=status.crl.next_update,
                    days_left=status.days_left,
                    problem=status.problem,
                    in_use=status.in_use,
                    note=status.note,
                )
                for status in verdict.crls
            ),
            client_certificate=client,
            channel_binding=verdict.channel_binding,
            seconds=seconds,
            checked_at=now,
            days_text=describe_days(verdict),
        )
    )


def _expiry(verdict: Verdict, warning_given: Threshold, critical_given: Threshold) -> CheckResult:
    """Days left against -w/-c; an expired certificate is CRITICAL whatever they say."""
    # A share (N%) is of the lifetime of the certificate compared: the one
    # that expires first, which may be an intermediate.
    lifetime = verdict.limiting_cert.lifetime_days
    warning, critical = warning_given.resolve(lifetime), critical_given.resolve(lifetime)
    # Compared unrounded: the value is rounded down for perfdata only.
    days = verdict.days_left
    state = State.CRITICAL if days < 0 else judge_days(days, warning, critical)
    # A share resolved to days is shown to 1/10000 day (9 seconds); a range
    # the user wrote, as written.
    shown = [
        range_text(bounds, 4 if given.percent is not None else None)
        for bounds, given in ((warning, warning_given), (critical, critical_given))
    ]
    perfdata = Perfdata("days_left", number(days_down(days)), "", *shown)
    return CheckResult(Check.DAYS_LEFT, state, describe_days(verdict), perfdata)


def _client_days(client: ClientCertSummary, lifetime: float, thresholds: Thresholds) -> CheckResult:
    """The client certificate's days left, against the same -w/-c as the server's."""
    warning = thresholds.warning.resolve(lifetime)
    critical = thresholds.critical.resolve(lifetime)
    days = client.days_left
    value = days_down(days)
    perfdata = Perfdata("client_days_left", str(value), "", str(warning), str(critical))
    when = f"{client.not_after:%Y-%m-%d}"
    if days < 0:
        text = f"client certificate expired {span(-days)} ago ({when})"
        return CheckResult(Check.CLIENT_DAYS_LEFT, State.CRITICAL, text, perfdata)
    state = judge_days(value, warning, critical)
    text = f"client certificate expires in {span(days)} ({when})" if state is not State.OK else ""
    return CheckResult(Check.CLIENT_DAYS_LEFT, state, text, perfdata)


def _crl_days(verdict: Verdict, days: float, thresholds: Thresholds) -> CheckResult:
    """Days until the first CRL's nextUpdate in use, against --crl-warning/--crl-critical.

    A CRL past its nextUpdate breaks every client that checks it; the crl
    finding already says so, so this only warns before that happens.
    """
    warning, critical = thresholds.crl_warning, thresholds.crl_critical
    value = days_down(days)
    perfdata = Perfdata("crl_days_left", str(value), "", str(warning), str(critical))
    if value < 0:
        return CheckResult(Check.CRL_DAYS_LEFT, State.OK, "", perfdata)
    soonest = verdict.crls[0]
    crl = soonest.crl
    when = f"{crl.next_update:%Y-%m-%d %H:%M} UTC" if crl.next_update else "never"
    left = soonest.days_left if soonest.days_left is not None else value
    text = f"CRL of {crl.issuer} expires in {span(left)} ({when})"
    return CheckResult(Check.CRL_DAYS_LEFT, judge_days(value, warning, critical), text, perfdata)


# One summary for every target that presents the same certificate: a fleet's
# servers present the same few chains, and thousands of outcomes then share
# a handful of summaries instead of holding a copy each (the texts, the
# names, the digest). Summaries are immutable, and lru_cache is safe to
# call from many threads; its bound keeps a long-running exporter's small.
@functools.lru_cache(maxsize=256)
def _summary(der: bytes, used: bool) -> CertSummary:
    cert = facts_from_der(der)
    return CertSummary(
        subject=cert.subject,
        issuer=cert.issuer,
        serial=cert.serial,
        not_before=cert.not_before,
        not_after=cert.not_after,
        dns_names=cert.dns_names,
        ip_addresses=cert.ip_addresses,
        names=cert.names_for_display(),
        sha256=cert.sha256,
        used_by_clients=used,
    )


def _chain_expiry(verdict: Verdict) -> dt.datetime:
    """When the chain clients use expires first: the presented certificates clients
    use, and what the verified path took from the root file (its intermediates
    and the root itself)."""
    ends = [verdict.limiting_cert.not_after]
    presented = {cert.der for cert in verdict.chain}
    for der in verdict.path:
        if der not in presented:
            try:
                ends.append(facts_from_der(der).not_after)
            except ValueError:
                continue
    return min(ends)


def _concluded(outcome: Outcome) -> Outcome:
    """``outcome`` with what its results conclude: its state, its problems worst
    first, and its line (every problem and the days left, or what was verified)."""
    results = outcome.results
    state = worst(result.state for result in results)
    ranked = sorted(results, key=lambda result: result.state.rank, reverse=True)
    problems = tuple(r.text for r in ranked if r.state is not State.OK and r.text)
    days = outcome.days_text
    if problems:
        extra = [days] if days and days not in problems else []
        summary = "; ".join([*problems, *extra])
    else:
        checked_as = outcome.checked_as
        parts = [days] if days else []
        if checked_as.verifies_chain:
            parts.append("chain trusted")
        if checked_as.verifies_name:
            parts.append(f"valid for {safe(checked_as.servername, 100)}")
        dane = [f.detail for f in outcome.findings if f.check is Check.DANE and not f.problem]
        summary = "; ".join([*parts, *dane])
    return outcome._replace(state=state, problems=problems, summary=summary)
