"""The nagiosplugin adapter: finished outcomes in, nagiosplugin's status line and perfdata out.

Each target's :class:`~.model.Outcome` is already judged (:mod:`.check`):
:class:`OutcomeResource` yields one metric per result, :class:`OutcomeContext`
hands nagiosplugin the result's state and perfdata, and the summaries read
the outcomes' own text. Metric names carry the target's label in fleet mode,
so that every perfdata label is unique and stable. States become
nagiosplugin's objects here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

import nagiosplugin
from nagiosplugin import Metric, Performance, Result

from .model import CheckResult, Outcome, State, Target
from .text import safe

__all__ = [
    "STATUS_LINE_TARGETS",
    "FleetSummary",
    "OutcomeContext",
    "OutcomeResource",
    "TargetSummary",
    "nagios_check",
    "perfdata_labels",
]

_STATES = {
    State.OK: nagiosplugin.Ok,
    State.WARNING: nagiosplugin.Warn,
    State.CRITICAL: nagiosplugin.Critical,
    State.UNKNOWN: nagiosplugin.Unknown,
}


class OutcomeResource(nagiosplugin.Resource):
    """One target's outcome as metrics, one per result, named with the target's label.

    Given a finished outcome (a fleet's targets are checked concurrently
    first), or the check to run: then the target is checked when nagiosplugin
    probes the resource, its acquisition phase.
    """

    def __init__(self, outcome: Outcome | Callable[[], Outcome], label: str = "") -> None:
        self._outcome = outcome
        #: Prefix of this target's metric names ("" for a single target).
        self.label = label

    @property
    def name(self) -> str:
        return "PG_TLS"

    @property
    def outcome(self) -> Outcome:
        if callable(self._outcome):
            self._outcome = self._outcome()
        return self._outcome

    def probe(self) -> Iterator[Metric]:
        for result in self.outcome.results:
            yield Metric(f"{self.label}{result.check}", result, context="outcome")


class OutcomeContext(nagiosplugin.Context):
    """A result as nagiosplugin's: its state, its text, its perfdata if it has any."""

    def __init__(self) -> None:
        super().__init__("outcome")

    def evaluate(self, metric: Metric, resource: OutcomeResource) -> Result:
        result: CheckResult = metric.value
        return Result(_STATES[result.state], result.text, metric)

    def performance(self, metric: Metric, resource: OutcomeResource) -> Performance | None:
        result: CheckResult = metric.value
        perfdata = result.perfdata
        if perfdata is None:
            return None
        return Performance(
            metric.name,
            perfdata.value,
            perfdata.uom,
            perfdata.warn,
            perfdata.crit,
            perfdata.min,
            perfdata.max,
        )


class TargetSummary(nagiosplugin.Summary):
    """Status line of a single target: every problem, worst first, then the days left."""

    def __init__(self, resource: OutcomeResource) -> None:
        self.resource = resource

    def _line(self, results: nagiosplugin.Results) -> str:
        outcome = self.resource.outcome
        return f"{outcome.target}: {outcome.summary}"

    ok = _line
    problem = _line


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

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes = outcomes

    def ok(self, results: nagiosplugin.Results) -> str:
        judged = [(o.days_left, o) for o in self.outcomes if o.days_left is not None]
        soonest = min(judged, key=lambda pair: pair[0], default=(None, None))[1]
        first = f"; first to expire: {soonest.target}: {soonest.days_text}" if soonest else ""
        return f"all {len(self.outcomes)} servers OK{first}"

    def problem(self, results: nagiosplugin.Results) -> str:
        bad = [o for o in self.outcomes if o.state is not State.OK]
        bad.sort(key=lambda o: o.state.rank, reverse=True)
        counts = ", ".join(
            f"{sum(1 for o in bad if o.state is state)} {state.text}"
            for state in (State.CRITICAL, State.WARNING, State.UNKNOWN)
            if any(o.state is state for o in bad)
        )
        listed = "; ".join(
            f"{o.target}: {safe(', '.join(o.problems), _TARGET_TEXT)}"
            for o in bad[:STATUS_LINE_TARGETS]
        )
        more = len(bad) - STATUS_LINE_TARGETS
        if more > 0:
            listed += f"; and {more} more"
        noun = "servers needs" if len(bad) == 1 else "servers need"
        return f"{len(bad)} of {len(self.outcomes)} {noun} attention ({counts}): {listed}"

    def verbose(self, results: nagiosplugin.Results) -> list[str]:
        return []


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


def nagios_check(resources: Sequence[OutcomeResource]) -> nagiosplugin.Check:
    """nagiosplugin's check over the targets' resources, run: its summary and perfdata."""
    if len(resources) == 1:
        summary: nagiosplugin.Summary = TargetSummary(resources[0])
    else:
        summary = FleetSummary([resource.outcome for resource in resources])
    check = nagiosplugin.Check(*resources, OutcomeContext(), summary, name="PG_TLS")
    check()
    return check
