"""Making text from a certificate safe to print, and durations readable.

Subjects and names in a certificate are chosen by whoever made it, and the
server that sent it has not been authenticated. Before such text reaches a
terminal, a log or a monitoring system's status line, control characters,
non-ASCII and the perfdata separator ``|`` are escaped, and length is capped.
"""

from __future__ import annotations

import math

__all__ = ["days_down", "printable", "safe", "span"]

_LIMIT = 200


def safe(text: str, limit: int = _LIMIT) -> str:
    """``text`` with everything but printable ASCII (and ``|``) escaped."""
    out = []
    for char in text:
        code = ord(char)
        if 0x20 <= code < 0x7F and char not in "|\\":
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:
            # A byte that was not UTF-8, kept by the surrogateescape handler.
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    result = "".join(out)
    if len(result) > limit:
        result = result[: limit - 3] + "..."
    return result


def printable(text: str) -> str:
    """``text`` with every character that is not printable ASCII escaped as by :func:`safe`.

    For whole lines of output, the last step before stdout: text already made
    safe passes unchanged (``\\`` and ``|`` included, and at any length),
    while anything else that reached the line, such as a name from an option
    or a targets file, is escaped. Output is then ASCII, whatever the
    encoding of stdout.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(char if 0x20 <= ord(char) < 0x7F else safe(char) for char in text)


def span(days: float) -> str:
    """A duration for people: ``84 days``, ``47 hours``, ``59 minutes``.

    Whole days from two days on, whole hours from one hour, then whole
    minutes: always rounded down, like the days on the status line, and
    never "0 hours" for something that is happening within the hour.
    """
    if days >= 2:
        return f"{math.floor(days)} days"
    for unit, per_day in (("hour", 24), ("minute", 1440)):
        count = math.floor(days * per_day)
        if count >= 1:
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "less than a minute"


def days_down(days: float, places: int = 2) -> float:
    """``days`` rounded down to ``places`` decimals, as every output shows days left.

    The status line's whole days are rounded down (:func:`span`); so are the
    perfdata, JSON, TAP and ``-v``, so that no output says a day, or a
    hundredth of one, more than another.
    """
    scale = 10.0**places
    return math.floor(days * scale) / scale
