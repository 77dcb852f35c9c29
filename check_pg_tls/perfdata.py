"""Numbers in perfdata as Nagios parses them.

The plugin API allows ``[-0-9.]`` in a value, and the same numbers in a
threshold range. Python writes very small and very large floats in
exponent notation (``6.5e-05``), which graphers drop or misread; these
functions write every number in plain decimal, exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .thresholds import Range

__all__ = ["number", "range_text"]


def number(value: float) -> str:
    """``value`` in plain decimal, the shortest text that reads back as it."""
    if value == 0:
        return "0"  # also for -0.0
    # repr() is the shortest exact text; Decimal writes it without exponent.
    text = repr(float(value))
    if "e" in text or "n" in text:
        # Imported only here: most numbers (days left, seconds of a
        # handshake) have no exponent, and decimal costs a check about a
        # millisecond to import.
        from decimal import Decimal

        text = format(Decimal(text), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def range_text(bounds: Range, places: int | None = None) -> str:
    """A threshold range in the plugin API's syntax, its numbers in plain decimal.

    ``places``: round to that many decimals, for display only.
    """

    def shown(value: float) -> str:
        return number(value if places is None else round(value, places))

    parts = ["@" if bounds.invert else ""]
    if bounds.start == float("-inf"):
        parts.append("~:")
    elif bounds.start != 0:
        parts.append(f"{shown(bounds.start)}:")
    if bounds.end != float("inf"):
        parts.append(shown(bounds.end))
    return "".join(parts)
