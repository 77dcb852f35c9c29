"""Days-left thresholds: bare numbers, Nagios ranges and shares of a lifetime.

A value *alerts* when it is outside the resolved range (nagiosplugin's rule).
"""

from __future__ import annotations

import pytest
from nagiosplugin import Range

from check_pg_tls.thresholds import Threshold, parse_threshold


def alerts(text: str, days_left: float, lifetime_days: float = 90) -> bool:
    return days_left not in parse_threshold(text).resolve(lifetime_days)


def test_bare_number_means_the_range_from_it_upward() -> None:
    assert parse_threshold("20").resolve(90) == Range("20:")


@pytest.mark.parametrize(
    ("days_left", "expected"),
    [(19.9, True), (0, True), (-3, True), (20, False), (20.1, False), (400, False)],
)
def test_bare_number_alerts_below_it(days_left: float, expected: bool) -> None:
    assert alerts("20", days_left) is expected


def test_surrounding_blanks_are_ignored() -> None:
    assert parse_threshold(" 20 ").resolve(90) == Range("20:")


@pytest.mark.parametrize(("days_left", "expected"), [(9.99, True), (10, False), (1000, False)])
def test_open_range_alerts_below_its_start(days_left: float, expected: bool) -> None:
    assert alerts("10:", days_left) is expected


@pytest.mark.parametrize(
    ("days_left", "expected"),
    [(-0.1, False), (0, True), (15, True), (30, True), (30.1, False)],
)
def test_inverted_range_alerts_inside(days_left: float, expected: bool) -> None:
    assert alerts("@0:30", days_left) is expected


def test_share_resolves_against_the_lifetime() -> None:
    assert parse_threshold("33%").resolve(90) == Range("29.7:")


@pytest.mark.parametrize(("days_left", "expected"), [(29.69, True), (29.7, False), (30, False)])
def test_share_alerts_below_that_share_of_the_lifetime(days_left: float, expected: bool) -> None:
    assert alerts("33%", days_left, lifetime_days=90) is expected


def test_share_follows_the_lifetime_it_is_resolved_against() -> None:
    threshold = parse_threshold("50%")
    assert 100 in threshold.resolve(200)
    assert 99 not in threshold.resolve(200)
    assert 5 in threshold.resolve(10)


@pytest.mark.parametrize("text", ["0%", "100%", "12.5%"])
def test_share_bounds_are_accepted(text: str) -> None:
    assert isinstance(parse_threshold(text), Threshold)


@pytest.mark.parametrize(
    "text", ["abc", "5:3", "-%", "101%", "", "%", "   ", "-1%", "20%%", "1:2:3", "ten"]
)
def test_invalid_threshold_is_a_value_error_for_the_user(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid threshold"):
        parse_threshold(text)


def test_share_of_a_short_lifetime_keeps_its_precision() -> None:
    # One hour: 10% is six minutes, not "0.00 days".
    hour = 1 / 24
    assert parse_threshold("10%").resolve(hour).start == hour * 10 / 100
    assert alerts("10%", 0.004, lifetime_days=hour)
    assert not alerts("10%", 0.0042, lifetime_days=hour)


@pytest.mark.parametrize("lifetime", [1e-6, 1 / 1440, 1 / 24, 47, 90, 397, 2_930_000])
@pytest.mark.parametrize("percent", [0.5, 10, 33, 99.99])
def test_share_is_exact(lifetime: float, percent: float) -> None:
    bound = lifetime * percent / 100
    assert parse_threshold(f"{percent}%").resolve(lifetime).start == bound


# --- the check's own range reads and writes as nagiosplugin's --------------------

_SPECS = [
    "", "20", "20:", "10:20", "@0:30", "~:5", "@~:5", "-5:5", "0.5:", "1.5:2.5", "@10",
    "-1", "0:0", "~:", ":", "@", ".5:", "+5:", "1.:", "5:3", "1:2:3", "abc", "~", "1e3:",
]  # fmt: skip
_VALUES = [-1e9, -10, -0.5, 0, 0.5, 1, 2.5, 3, 5, 10, 20, 20.5, 29.7, 30, 100, 1e9]


@pytest.mark.parametrize("spec", _SPECS)
def test_range_is_nagiosplugins(spec: str) -> None:
    # A check judges without nagiosplugin; nagiosplugin is the oracle here.
    from check_pg_tls.thresholds import Range as OwnRange

    try:
        theirs = Range(spec)
    except ValueError:
        with pytest.raises(ValueError):
            OwnRange.parse(spec)
        return
    ours = OwnRange.parse(spec)
    assert ours == theirs
    assert str(ours) == str(theirs)
    assert [ours.match(v) for v in _VALUES] == [theirs.match(v) for v in _VALUES]
