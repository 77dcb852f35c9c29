"""Days-left thresholds: Nagios ranges, bare numbers, and shares of a lifetime.

A bare number N means "fewer than N days left", as in other certificate
plugins (it becomes the range ``N:``). Full Nagios range syntax is accepted
as is. ``N%`` is a share of the whole validity period of the certificate
being judged, because fixed day counts stop making sense as certificate
lifetimes shrink toward 47 days. A share is resolved exactly: rounding it
(to 0.01 day, say) would move the limit of a short-lived certificate.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from nagiosplugin import Range

from .perfdata import number

__all__ = ["Threshold", "parse_threshold"]

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


class Threshold(NamedTuple):
    """A parsed ``-w``/``-c`` value."""

    text: str
    #: Nagios range spec, when the value is in days.
    spec: str | None = None
    #: Share of a certificate's lifetime in percent, when the value ends in ``%``.
    percent: float | None = None

    def resolve(self, lifetime_days: float) -> Range:
        """The range in days for a certificate that lives ``lifetime_days``."""
        if self.percent is not None:
            return Range(f"{number(lifetime_days * self.percent / 100)}:")
        assert self.spec is not None
        return Range(self.spec)


def parse_threshold(text: str) -> Threshold:
    """Parse a threshold as given on the command line.

    Raises:
        ValueError: with a message fit for the user.
    """
    value = text.strip()
    if value.endswith("%"):
        number = value[:-1]
        if not _NUMBER.match(number):
            raise ValueError(f"invalid threshold {text!r}: a share is a number followed by %")
        percent = float(number)
        if not 0 <= percent <= 100:
            raise ValueError(f"invalid threshold {text!r}: a share must be between 0% and 100%")
        return Threshold(text=value, percent=percent)
    spec = f"{value}:" if _NUMBER.match(value) else value
    try:
        if not value:
            raise ValueError("empty")
        Range(spec)
    except ValueError:
        raise ValueError(
            f"invalid threshold {text!r}: expected days (20), a Nagios range "
            "(10:, @0:30) or a share of the lifetime (33%)"
        ) from None
    return Threshold(text=value, spec=spec)
