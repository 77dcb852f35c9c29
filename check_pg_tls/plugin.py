"""Thin nagiosplugin adapters over the probe and the pure judgement."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import Any

import nagiosplugin
from nagiosplugin import Critical, Metric, Ok, Performance, Result, Warn

from .errors import ProbeError, Unreachable
from .probe import Observation, Target, probe
from .text import safe
from .thresholds import Threshold
from .verdict import Finding, Policy, Verdict, describe_days, judge

__all__ = [
    "CertificateResource",
    "CertificateSummary",
    "ConnectionContext",
    "DaysLeftContext",
    "FindingContext",
]


class CertificateResource(nagiosplugin.Resource):
    """Probes one server and yields days left plus one metric per finding."""

    def __init__(self, target: Target, policy: Policy, timeout: float) -> None:
        self.target = target
        self.policy = policy
        self.timeout = timeout
        self.observation: Observation | None = None
        self.verdict: Verdict | None = None

    @property
    def name(self) -> str:
        return "PG_TLS"

    def probe(self) -> Iterator[Metric]:
        try:
            self.observation = probe(self.target, self.timeout)
        except ProbeError as exc:
            yield Metric("connection", exc, context="connection")
            return
        try:
            self.verdict = judge(self.observation, self.policy, dt.datetime.now(dt.timezone.utc))
        except ValueError:
            yield Metric(
                "connection",
                ProbeError("server presented a certificate that does not parse"),
                context="connection",
            )
            return
        # Floored like the status line's whole days, so the two never disagree.
        days = math.floor(self.verdict.days_left * 100) / 100
        yield Metric("days_left", days, context="days_left")
        yield Metric(
            "time", round(self.observation.handshake_seconds, 6), "s", min=0, context="time"
        )
        for finding in self.verdict.findings:
            yield Metric(finding.check, finding, context="finding")


class ConnectionContext(nagiosplugin.Context):
    """A probe that got no certificate: CRITICAL, or the user's choice when unreachable."""

    def __init__(self, unreachable_state: nagiosplugin.state.ServiceState) -> None:
        super().__init__("connection")
        self.unreachable_state = unreachable_state

    def evaluate(self, metric: Metric, resource: Any) -> Result:
        error = metric.value
        state = self.unreachable_state if isinstance(error, Unreachable) else Critical
        return Result(state, str(error), metric)


class FindingContext(nagiosplugin.Context):
    """A yes/no finding: OK or CRITICAL, never perfdata (Icinga drops booleans)."""

    def __init__(self) -> None:
        super().__init__("finding")

    def evaluate(self, metric: Metric, resource: Any) -> Result:
        finding: Finding = metric.value
        if finding.problem is None:
            return Result(Ok, finding.detail, metric)
        return Result(Critical, finding.problem, metric)


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
        lifetime = resource.verdict.leaf.lifetime_days
        return self.warning.resolve(lifetime), self.critical.resolve(lifetime)

    def evaluate(self, metric: Metric, resource: Any) -> Result:
        warning, critical = self._ranges(resource)
        days = metric.value
        hint = describe_days(resource.verdict)
        if days < 0 or not critical.match(days):
            return Result(Critical, hint, metric)
        if not warning.match(days):
            return Result(Warn, hint, metric)
        return Result(Ok, hint, metric)

    def performance(self, metric: Metric, resource: Any) -> Performance:
        warning, critical = self._ranges(resource)
        return Performance("days_left", metric.value, "", warning, critical)


class CertificateSummary(nagiosplugin.Summary):
    """Status line: every problem, worst first, then the days left."""

    def __init__(self, target: Target, policy: Policy) -> None:
        self.target = target
        self.policy = policy

    def ok(self, results: nagiosplugin.Results) -> str:
        parts = [results["days_left"].hint] if "days_left" in results else []
        if self.policy.verifies_chain:
            parts.append("chain trusted")
        if self.policy.verifies_name:
            parts.append(f"valid for {safe(self.policy.servername, 100)}")
        return f"{self.target}: " + "; ".join(parts)

    def problem(self, results: nagiosplugin.Results) -> str:
        problems = sorted(
            (r for r in results if r.state != Ok), key=lambda r: int(r.state), reverse=True
        )
        hints = [r.hint for r in problems if r.hint]
        if "days_left" in results and results["days_left"].state == Ok:
            hints.append(results["days_left"].hint)
        return f"{self.target}: " + "; ".join(hints)

    def verbose(self, results: nagiosplugin.Results) -> list[str]:
        resource = results[0].resource if results else None
        if not isinstance(resource, CertificateResource):
            return []
        return _details(resource)


def _details(resource: CertificateResource) -> list[str]:
    lines: list[str] = []
    observation, verdict = resource.observation, resource.verdict
    if observation is None or verdict is None:
        return lines
    for index, cert in enumerate(verdict.chain):
        role = "leaf" if index == 0 else f"chain[{index}]"
        unused = "" if index in verdict.relevant else " (not used by clients)"
        lines.append(
            f"{role}: subject {cert.subject}; issuer {cert.issuer}; "
            f"not after {cert.not_after:%Y-%m-%d %H:%M:%S} UTC "
            f"({cert.days_left(dt.datetime.now(dt.timezone.utc)):.1f} days left){unused}"
        )
    lines.append(f"names: {', '.join(verdict.leaf.names_for_display()) or '(none)'}")
    lines.append(
        f"tls: {observation.tls_version} {observation.cipher}; alpn {observation.alpn or 'none'}; "
        f"address {observation.address}; connected in {observation.connect_seconds * 1000:.1f} ms, "
        f"handshake done in {observation.handshake_seconds * 1000:.1f} ms"
    )
    policy = resource.policy
    mode = policy.sslmode
    if mode == "require" and policy.verifies_chain:
        mode = "require (as verify-ca, because a root certificate file is given)"
    lines.append(f"sslmode: {mode}")
    for finding in verdict.findings:
        lines.append(f"{finding.check}: {finding.problem or finding.detail}")
    return lines
