"""Days-left thresholds: Nagios ranges, bare numbers, and shares of a lifetime.

A bare number N means "fewer than N days left", as in other certificate
plugins (it becomes the range ``N:``). Full Nagios range syntax is accepted
as is. ``N%`` is a share of the whole validity period of the certificate
being judged, because fixed day counts stop making sense as certificate
lifetimes shrink toward 47 days. A share is resolved exactly: rounding it
(to 0.01 day, say) would move the limit of a short-lived certificate.

Pure code: a check evaluates its thresholds without nagiosplugin, whose
:class:`~nagiosplugin.Range` this module's :class:`Range` reads and writes
exactly as (tests hold the two side by side).
"""

from __future__ import annotations

import re

from .model import State
from .perfdata import number
from .record import Record

__all__ = ["Range", "Threshold", "judge_days", "parse_threshold"]

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_INFINITY = float("inf")


class Range(Record):
    """A Nagios threshold range, ``[@][start:][end]``: a value outside it alerts
    (inside it, with ``@``). Its fields are in nagiosplugin's order."""

    invert: bool
    start: float
    end: float

    @classmethod
    def parse(cls, spec: str) -> Range:
        """Read a range as the monitoring plugins (and nagiosplugin) do; ``~`` is minus infinity.

        Raises:
            ValueError: not a range.
        """
        invert = spec.startswith("@")
        if invert:
            spec = spec[1:]
        start_text, _, end_text = spec.rpartition(":") if ":" in spec else ("", "", spec)
        if ":" in start_text:
            raise ValueError(f"more than one ':' in range {spec!r}")
        start = -_INFINITY if start_text == "~" else _atom(start_text, 0)
        end = _atom(end_text, _INFINITY)
        if start > end:
            raise ValueError(f"start {start} must not be greater than end {end}")
        return cls(invert, start, end)

    def match(self, value: float) -> bool:
        """Whether ``value`` is within the range (outside it, for an inverted one): no alert."""
        if value < self.start or value > self.end:
            return self.invert
        return not self.invert

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.match(value)

    def __str__(self) -> str:
        """The range as given back in perfdata: a zero start is left out."""
        parts = ["@" if self.invert else ""]
        if self.start == -_INFINITY:
            parts.append("~:")
        elif self.start != 0:
            parts.append(f"{self.start}:")
        if self.end != _INFINITY:
            parts.append(f"{self.end}")
        return "".join(parts)


def _atom(text: str, default: float) -> float:
    # As nagiosplugin reads a bound: an int unless it has a decimal point,
    # which is also how it is written back.
    if text == "":
        return default
    return float(text) if "." in text else int(text)


class Threshold(Record):
    """A parsed ``-w``/``-c`` value."""

    text: str
    #: Nagios range spec, when the value is in days.
    spec: str | None = None
    #: Share of a certificate's lifetime in percent, when the value ends in ``%``.
    percent: float | None = None

    def resolve(self, lifetime_days: float) -> Range:
        """The range in days for a certificate that lives ``lifetime_days``."""
        if self.percent is not None:
            return Range.parse(f"{number(lifetime_days * self.percent / 100)}:")
        assert self.spec is not None
        return Range.parse(self.spec)


def parse_threshold(text: str) -> Threshold:
    """Parse a threshold as given on the command line.

    Raises:
        ValueError: with a message fit for the user.
    """
    value = text.strip()
    if value.endswith("%"):
        share = value[:-1]
        if not _NUMBER.match(share):
            raise ValueError(f"invalid threshold {text!r}: a share is a number followed by %")
        percent = float(share)
        if not 0 <= percent <= 100:
            raise ValueError(f"invalid threshold {text!r}: a share must be between 0% and 100%")
        return Threshold(text=value, percent=percent)
    spec = f"{value}:" if _NUMBER.match(value) else value
    try:
        if not value:
            raise ValueError("empty")
        Range.parse(spec)
    except ValueError:
        raise ValueError(
            f"invalid threshold {text!r}: expected days (20), a Nagios range "
            "(10:, @0:30) or a share of the lifetime (33%)"
        ) from None
    return Threshold(text=value, spec=spec)


def judge_days(days: float, warning: Range, critical: Range) -> State:
    """CRITICAL when ``days`` alerts against ``critical``, else WARNING against ``warning``."""
    if not critical.match(days):
        return State.CRITICAL
    if not warning.match(days):
        return State.WARNING
    return State.OK
