"""Thin nagiosplugin adapters over the probe and the pure judgement.

One :class:`CertificateResource` per target. Metric names carry the target's
label in fleet mode, so that every perfdata label is unique and stable; the
contexts are shared by all targets.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import nagiosplugin
from nagiosplugin import Critical, Metric, Ok, Performance, Result, Warn

from .auxiliary import isolated
from .errors import BadTarget, CheckFailed, ProbeError, ServerMisbehaved, Unreachable
from .model import Check, Finding, Observation, PlaintextAnswer, Policy, State, Target
from .openssl_client import openssl_version
from .perfdata import number, range_text
from .posture import plaintext_finding
from .probe import probe, probe_plaintext
from .text import safe, span
from .thresholds import Threshold
from .verdict import Verdict, describe_days, judge

if TYPE_CHECKING:
    # urllib costs 30 ms of start-up: only --check-revocation imports it.
    from .crl_fetch import CrlFetcher
    from .model import PlaintextCheck, Settings
    from .tlsa_lookup import PendingLookup

__all__ = [
    "CertificateResource",
    "CertificateSummary",
    "ConnectionContext",
    "DaysLeftContext",
    "FindingContext",
    "FleetSummary",
    "SecondsContext",
    "TargetReport",
    "UncheckedResource",
    "overall_state",
    "rank",
    "reports",
]


class CertificateResource(nagiosplugin.Resource):
    """One target: probes it, judges what it presented, yields the metrics.

    :meth:`collect` does the I/O and the judgement and touches nothing but
    this object, so many resources can collect in threads at once; a single
    check simply collects inside :meth:`probe`, as nagiosplugin expects.
    """

    def __init__(
        self,
        target: Target,
        settings: Settings,
        timeout: float,
        label: str = "",
        fetcher: CrlFetcher | None = None,
    ) -> None:
        self.target = target
        self.settings = settings
        self.policy = settings.policy(target.checked_name)
        self.contexts = settings.trust.contexts
        self.timeout = timeout
        #: Prefix of this target's metric names ("" for a single target).
        self.label = label
        self.direct = settings.negotiation == "direct"
        self.plaintext = settings.plaintext
        #: ``--check-auth``: the StartupMessage sent after the handshake.
        self.login = settings.login
        self.revocation = settings.revocation
        self.fetcher = fetcher
        self.dane = settings.dane
        self.collected = False
        self.observation: Observation | None = None
        self.verdict: Verdict | None = None
        self.error: ProbeError | None = None
        self.checked_at: dt.datetime | None = None
        #: Seconds to the end of the handshake, or to the failure.
        self.seconds = 0.0
        #: Every finding: the verdict's, then the plaintext login check's.
        self.findings: tuple[Finding, ...] = ()

    @property
    def name(self) -> str:
        return "PG_TLS"

    def collect(self) -> None:
        self.collected = True
        started = time.monotonic()
        tlsa = None
        if self.dane is not None:
            from .dane import tlsa_owner, unusable_name
            from .tlsa_lookup import PendingLookup

            name = self.target.checked_name
            if unusable_name(name) is None:
                # Beside the probe, within the same timeout.
                owner = tlsa_owner(self.target.port, name)
                tlsa = PendingLookup(owner, self.dane.server, self.timeout)
        try:
            self._collect(started, tlsa)
        except Exception as exc:  # noqa: BLE001 - one server's oddity must not cost the others
            self.verdict = None
            self.findings = ()
            self.error = CheckFailed(
                f"internal error while checking this server: {type(exc).__name__}: "
                f"{safe(str(exc), 150)}"
            )
            self.seconds = time.monotonic() - started

    def _collect(self, started: float, tlsa: PendingLookup | None) -> None:
        try:
            self.observation = probe(
                self.target, self.timeout, self.contexts, self.direct, self.login
            )
        except ProbeError as exc:
            self.error = exc
            self.seconds = time.monotonic() - started
            return
        self.seconds = self.observation.handshake_seconds
        self.checked_at = dt.datetime.now(dt.timezone.utc)
        try:
            self.verdict = judge(self.observation, self.policy, self.checked_at)
        except ValueError:
            self.error = ServerMisbehaved("server presented a certificate that does not parse")
            return
        self.findings = self.verdict.findings
        # Each auxiliary finding fails alone (see auxiliary): its exception is
        # its own UNKNOWN, the verdict above stands.
        if self.revocation is not None:
            from .crl_fetch import CrlFetcher
            from .revocation import revocation_finding

            # Only a verified path: a URL an unverified certificate names is never fetched.
            self.findings += isolated(
                Check.REVOCATION,
                revocation_finding,
                self.verdict.path,
                self.policy.verifies_chain,
                self.fetcher or CrlFetcher(),
                started + self.timeout * 0.9,
                self.checked_at,
                self.revocation.unknown_state,
            )
        if self.dane is not None:
            from .dane import judge_dane

            left = self.timeout - (time.monotonic() - started)
            answer = tlsa.wait(left) if tlsa is not None else None
            self.findings += isolated(
                Check.DANE,
                judge_dane,
                answer,
                self.verdict.chain,
                self.verdict.path,
                self.verdict.trusted,
                self.target,
                self.checked_at,
                self.dane,
            )
        if self.plaintext is not None:
            # Both probes share the one timeout of this target.
            left = self.timeout - (time.monotonic() - started)
            self.findings += isolated(
                Check.PLAINTEXT, self._plaintext_finding, self.plaintext, left
            )

    def _plaintext_finding(self, plaintext: PlaintextCheck, timeout: float) -> Finding:
        try:
            if timeout < 0.1:
                raise ProbeError("no time left within the timeout")
            reply = probe_plaintext(self.target, plaintext.user, plaintext.database, timeout)
        except ProbeError as exc:
            outcome = PlaintextAnswer(plaintext.user, plaintext.database, None, str(exc))
        else:
            outcome = PlaintextAnswer(plaintext.user, plaintext.database, reply)
        return plaintext_finding(outcome, plaintext.state)

    def _metric(self, name: str, value: Any, context: str, **kw: Any) -> Metric:
        return Metric(f"{self.label}{name}", value, context=context, **kw)

    def probe(self) -> Iterator[Metric]:
        if not self.collected:
            self.collect()
        # Time is reported even when the probe failed, so that every run has
        # perfdata (a timeout shows as a spike, and Sensu's nagios_perfdata
        # extraction does not fail on an outage).
        yield self._metric("time", round(self.seconds, 6), "time", uom="s", min=0)
        if self.error is not None:
            yield self._metric("connection", self.error, "connection")
            return
        assert self.observation is not None and self.verdict is not None
        # Floored like the status line's whole days, so the two never disagree.
        days = math.floor(self.verdict.days_left * 100) / 100
        yield self._metric("days_left", days, "days_left")
        for finding in self.findings:
            yield self._metric(finding.check, finding, "finding")
        client = self.policy.client_cert
        if client is not None and self.checked_at is not None:
            left = math.floor(client.days_left(self.checked_at) * 100) / 100
            yield self._metric("client_days_left", left, "client_days_left")
        timed = [c for c in self.verdict.crls if c.in_use and c.days_left is not None]
        if timed:
            soonest = timed[0].days_left
            assert soonest is not None
            yield self._metric("crl_days_left", math.floor(soonest * 100) / 100, "crl_days_left")


class UncheckedResource(nagiosplugin.Resource):
    """A target that names no server (a bad line of a targets file), or whose
    own settings failed to load: never probed."""

    def __init__(self, target: Target, problem: str, label: str = "") -> None:
        self.target = target
        self.label = label
        self.policy = Policy("require", target.checked_name)
        self.error = BadTarget(problem)
        self.observation: Observation | None = None
        self.verdict: Verdict | None = None
        self.checked_at: dt.datetime | None = None
        self.seconds = 0.0
        self.findings: tuple[Finding, ...] = ()

    @property
    def name(self) -> str:
        return "PG_TLS"

    def collect(self) -> None:
        pass

    def probe(self) -> Iterator[Metric]:
        yield Metric(f"{self.label}connection", self.error, context="connection")


def perfdata_labels(targets: Sequence[Target]) -> list[str]:
    """Each target's prefix of its perfdata labels in a fleet: stable (derived from
    the target), unique, and plain word characters, which no grapher or perfdata
    parser needs quoted."""
    seen: set[str] = set()
    labels = []
    for target in targets:
        base = re.sub(r"\W", "_", f"{target.checked_name}_{target.port}", flags=re.ASCII)
        if target.display is not None:
            # Two checks of one server: their settings tell them apart.
            settings = "_".join(f"{key}_{value}" for key, value in target.settings)
            base += "_" + re.sub(r"\W+", "_", settings, flags=re.ASCII).strip("_")
        label, n = base, 1
        while label in seen:
            n += 1
            label = f"{base}_{n}"
        seen.add(label)
        labels.append(f"{label}_")
    return labels


class ConnectionContext(nagiosplugin.Context):
    """A probe that got no certificate: CRITICAL, or the user's choice when
    unreachable; UNKNOWN when there was nothing to probe."""

    def __init__(self, unreachable_state: State) -> None:
        super().__init__("connection")
        self.unreachable_state = _STATES[unreachable_state]

    def evaluate(self, metric: Metric, resource: Any) -> Result:
        error = metric.value
        if isinstance(error, CheckFailed):  # a bad target, or our own failure
            return Result(nagiosplugin.Unknown, str(error), metric)
        state = self.unreachable_state if isinstance(error, Unreachable) else Critical
        return Result(state, str(error), metric)


_STATES = {
    State.OK: Ok,
    State.WARNING: Warn,
    State.CRITICAL: Critical,
    State.UNKNOWN: nagiosplugin.Unknown,
}


class FindingContext(nagiosplugin.Context):
    """A finding: OK or its severity, never perfdata (Icinga drops booleans)."""

    def __init__(self) -> None:
        super().__init__("finding")

    def evaluate(self, metric: Metric, resource: Any) -> Result:
        finding: Finding = metric.value
        if finding.problem is None:
            return Result(Ok, finding.detail, metric)
        return Result(_STATES[finding.severity], finding.problem, metric)


class DaysLeftContext(nagiosplugin.Context):
    """Days left against -w/-c; an expired certificate is CRITICAL whatever they say."""

    def __init__(self, warning: Threshold, critical: Threshold) -> None:
        super().__init__("days_left")
        self.warning = warning
        self.critical = critical

    def _ranges(
        self, resource: CertificateResource
    ) -> tuple[nagiosplugin.Range, nagiosplugin.Range]:
        assert resource.verdict is not None
        # A share (N%) is of the lifetime of the certificate compared: the
        # one that expires first, which may be an intermediate.
        lifetime = resource.verdict.limiting_cert.lifetime_days
        return self.warning.resolve(lifetime), self.critical.resolve(lifetime)

    def evaluate(self, metric: Metric, resource: Any) -> Result:
        warning, critical = self._ranges(resource)
        # Compared unrounded: the metric is rounded down for perfdata only.
        days = resource.verdict.days_left
        hint = describe_days(resource.verdict)
        if days < 0 or not critical.match(days):
            return Result(Critical, hint, metric)
        if not warning.match(days):
            return Result(Warn, hint, metric)
        return Result(Ok, hint, metric)

    def performance(self, metric: Metric, resource: Any) -> Performance:
        warning, critical = self._ranges(resource)
        # A share resolved to days is shown to 1/10000 day (9 seconds); a
        # range the user wrote, as written.
        shown = [
            range_text(bounds, 4 if given.percent is not None else None)
            for bounds, given in ((warning, self.warning), (critical, self.critical))
        ]
        return Performance(metric.name, number(metric.value), "", *shown)


class SecondsContext(nagiosplugin.ScalarContext):
    """A duration: never a state of its own, perfdata in plain decimal."""

    def performance(self, metric: Metric, resource: Any) -> Performance:
        return Performance(metric.name, number(metric.value), metric.uom, min=number(metric.min))


class ClientDaysLeftContext(nagiosplugin.Context):
    """The client certificate's days left, against the same -w/-c as the server's."""

    def __init__(self, warning: Threshold, critical: Threshold) -> None:
        super().__init__("client_days_left")
        self.warning = warning
        self.critical = critical

    def _ranges(self, resource: Any) -> tuple[nagiosplugin.Range, nagiosplugin.Range]:
        lifetime = resource.policy.client_cert.lifetime_days
        return self.warning.resolve(lifetime), self.critical.resolve(lifetime)

    def evaluate(self, metric: Metric, resource: Any) -> Result:
        warning, critical = self._ranges(resource)
        cert = resource.policy.client_cert
        days = cert.days_left(resource.checked_at)
        when = f"{cert.not_after:%Y-%m-%d}"
        if days < 0:
            return Result(
                Critical, f"client certificate expired {span(-days)} ago ({when})", metric
            )
        hint = f"client certificate expires in {span(days)} ({when})"
        if not critical.match(metric.value):
            return Result(Critical, hint, metric)
        if not warning.match(metric.value):
            return Result(Warn, hint, metric)
        return Result(Ok, "", metric)

    def performance(self, metric: Metric, resource: Any) -> Performance:
        warning, critical = self._ranges(resource)
        return Performance(metric.name, metric.value, "", warning, critical)


class CrlDaysLeftContext(nagiosplugin.Context):
    """Days until the first CRL's nextUpdate, against --crl-warning/--crl-critical.

    A CRL past its nextUpdate breaks every client that checks it; the finding
    already says so, so this context only warns before that happens.
    """

    def __init__(self, warning: float, critical: float) -> None:
        super().__init__("crl_days_left")
        self.warning = nagiosplugin.Range(f"{warning:g}:")
        self.critical = nagiosplugin.Range(f"{critical:g}:")

    def evaluate(self, metric: Metric, resource: Any) -> Result:
        soonest = resource.verdict.crls[0]
        crl = soonest.crl
        when = f"{crl.next_update:%Y-%m-%d %H:%M} UTC" if crl.next_update else "never"
        days = soonest.days_left if soonest.days_left is not None else metric.value
        hint = f"CRL of {crl.issuer} expires in {span(days)} ({when})"
        if metric.value < 0:
            return Result(Ok, "", metric)  # the crl finding names it as expired
        if not self.critical.match(metric.value):
            return Result(Critical, hint, metric)
        if not self.warning.match(metric.value):
            return Result(Warn, hint, metric)
        return Result(Ok, hint, metric)

    def performance(self, metric: Metric, resource: Any) -> Performance:
        return Performance(metric.name, metric.value, "", self.warning, self.critical)


class TargetReport(NamedTuple):
    """Everything the output formats need about one target, after evaluation."""

    resource: CertificateResource
    state: nagiosplugin.state.ServiceState
    #: Hints of the non-OK results, worst first.
    problems: tuple[str, ...]
    #: The days-left hint, also when it is no problem ("certificate expires in ...").
    days: str | None

    @property
    def target(self) -> Target:
        return self.resource.target

    @property
    def text(self) -> str:
        """One line: every problem, then the days left; or what was verified."""
        if self.problems:
            extra = [self.days] if self.days and self.days not in self.problems else []
            return "; ".join([*self.problems, *extra])
        policy = self.resource.policy
        parts = [self.days] if self.days else []
        if policy.verifies_chain:
            parts.append("chain trusted")
        if policy.verifies_name:
            parts.append(f"valid for {safe(policy.servername, 100)}")
        parts += [f.detail for f in self.resource.findings if f.check == "dane" and not f.problem]
        return "; ".join(parts)


def rank(state: nagiosplugin.state.ServiceState) -> int:
    """How much a state weighs: CRITICAL, WARNING, then UNKNOWN, then OK.

    UNKNOWN is a check that could not be made (DANE without an answer, an
    auxiliary check that failed, a server that could not be checked): it
    must not hide a problem that was found, such as an expired certificate.
    The monitoring plugins rank states so when they combine several checks.
    """
    return {0: 0, 3: 1, 1: 2, 2: 3}[int(state)]


def reports(
    results: nagiosplugin.Results, resources: list[CertificateResource]
) -> list[TargetReport]:
    """Group evaluated results by target, in the targets' order."""
    grouped: dict[int, list[Result]] = {id(r): [] for r in resources}
    for result in results:
        grouped[id(result.resource)].append(result)
    out = []
    for resource in resources:
        own = grouped[id(resource)]
        state = max((r.state for r in own), key=rank, default=nagiosplugin.Unknown)
        problems = tuple(
            r.hint
            for r in sorted(own, key=lambda r: rank(r.state), reverse=True)
            if r.state != Ok and r.hint
        )
        days = next((r.hint for r in own if r.metric.context == "days_left"), None)
        out.append(TargetReport(resource, state, problems, days))
    return out


def overall_state(per_target: list[TargetReport]) -> nagiosplugin.state.ServiceState:
    """The run's state and exit code: the weightiest target's (see :func:`rank`)."""
    return max((r.state for r in per_target), key=rank, default=nagiosplugin.Unknown)


class CertificateSummary(nagiosplugin.Summary):
    """Status line of a single target: every problem, worst first, then the days left."""

    def __init__(self, resource: CertificateResource) -> None:
        self.resource = resource

    def _line(self, results: nagiosplugin.Results) -> str:
        (report,) = reports(results, [self.resource])
        return f"{report.target}: {report.text}"

    ok = _line
    problem = _line

    def verbose(self, results: nagiosplugin.Results) -> list[str]:
        return details(self.resource)


#: Servers named on a fleet's status line; the rest are counted. Monitoring
#: systems cut long plugin output without a word (NRPE 2 at 1 KiB), and the
#: perfdata at its end goes first.
STATUS_LINE_TARGETS = 5
#: Longest text of one server on the status line.
_TARGET_TEXT = 150


class FleetSummary(nagiosplugin.Summary):
    """Status line over many targets: counts, then the first few that need attention.

    Every server's full text is in the long output and in the other formats.
    """

    def __init__(self, resources: list[CertificateResource]) -> None:
        self.resources = resources

    def ok(self, results: nagiosplugin.Results) -> str:
        all_reports = reports(results, self.resources)
        soonest = min(
            (r for r in all_reports if r.resource.verdict is not None),
            key=lambda r: r.resource.verdict.days_left,  # type: ignore[union-attr]
            default=None,
        )
        first = f"; first to expire: {soonest.target}: {soonest.days}" if soonest else ""
        return f"all {len(all_reports)} servers OK{first}"

    def problem(self, results: nagiosplugin.Results) -> str:
        bad = [r for r in reports(results, self.resources) if r.state != Ok]
        bad.sort(key=lambda r: rank(r.state), reverse=True)
        counts = ", ".join(
            f"{sum(1 for r in bad if r.state == state)} {str(state).lower()}"
            for state in (Critical, Warn, nagiosplugin.Unknown)
            if any(r.state == state for r in bad)
        )
        listed = "; ".join(
            f"{r.target}: {safe(', '.join(r.problems), _TARGET_TEXT)}"
            for r in bad[:STATUS_LINE_TARGETS]
        )
        more = len(bad) - STATUS_LINE_TARGETS
        if more > 0:
            listed += f"; and {more} more"
        noun = "servers needs" if len(bad) == 1 else "servers need"
        return f"{len(bad)} of {len(self.resources)} {noun} attention ({counts}): {listed}"

    def verbose(self, results: nagiosplugin.Results) -> list[str]:
        return []


def details(resource: CertificateResource) -> list[str]:
    """The -v lines: the chain, the names, the TLS session, every finding."""
    lines: list[str] = []
    observation, verdict = resource.observation, resource.verdict
    if observation is None or verdict is None:
        return lines
    now = resource.checked_at or dt.datetime.now(dt.timezone.utc)
    for index, cert in enumerate(verdict.chain):
        role = "leaf" if index == 0 else f"chain[{index}]"
        unused = "" if index in verdict.relevant else " (not used by clients)"
        lines.append(
            f"{role}: subject {cert.subject}; issuer {cert.issuer}; "
            f"not after {cert.not_after:%Y-%m-%d %H:%M:%S} UTC "
            # Rounded down, as the status line's whole days are.
            f"({math.floor(cert.days_left(now) * 10) / 10:.1f} days left){unused}"
        )
    lines.append(f"names: {', '.join(verdict.leaf.names_for_display()) or '(none)'}")
    lines.append(
        f"tls: {observation.tls_version} {observation.cipher}; "
        f"alpn {observation.alpn or 'none'}; address {observation.address}; "
        f"connected in {observation.connect_seconds * 1000:.1f} ms, "
        f"handshake done in {observation.handshake_seconds * 1000:.1f} ms"
    )
    policy = resource.policy
    mode = policy.sslmode
    if mode == "require" and policy.verifies_chain:
        mode = "require (as verify-ca, because a root certificate file is given)"
    lines.append(f"sslmode: {mode}")
    for complaint in verdict.complaints:
        lines.append(f"openssl: {complaint}")
    for finding in resource.findings:
        text = finding.problem or finding.detail
        # A failed check already names itself ("dane: check failed: ...").
        lines.append(text if text.startswith(f"{finding.check}: ") else f"{finding.check}: {text}")
    lines += [f"crl: {status.note}" for status in verdict.crls if status.note]
    lines.append(f"openssl version: {openssl_version()} (the verdict's; libpq may use another)")
    return lines
