"""Perfdata as Nagios parses it: values of [-0-9.] only, never an exponent."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from nagiosplugin import Range

from check_pg_tls.perfdata import number, range_text
from testbed.pgcluster import Cluster

from .conftest import Pki, check_local

VALUE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# A threshold: the Nagios range syntax around such values.
RANGE = re.compile(r"@?(~:|-?[0-9]+(\.[0-9]+)?:)?(-?[0-9]+(\.[0-9]+)?)?")

TINY_AND_HUGE = [
    6.5e-05,
    1e-06,
    1.5e-10,
    5e-324,
    -2.5e-07,
    0.0,
    -0.0,
    0.1,
    1.0,
    89.99,
    -3.25,
    123456789.125,
    1e16,
    2.5e20,
    -1e22,
    1.7976931348623157e308,
]


@pytest.mark.parametrize("value", TINY_AND_HUGE, ids=repr)
def test_number_is_plain_decimal_and_exact(value: float) -> None:
    text = number(value)
    assert VALUE.fullmatch(text), text
    assert float(text) == value


def test_number_is_short() -> None:
    assert [number(v) for v in (6.5e-05, 0.181244, 2.0, 20, -0.0, 1e20)] == [
        "0.000065",
        "0.181244",
        "2",
        "20",
        "0",
        "100000000000000000000",
    ]


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("20:", "20:"),
        ("0.00001:", "0.00001:"),
        ("@0.000001:100000000000000000000.0", "@0.000001:100000000000000000000"),
        ("~:0.00002", "~:0.00002"),
        ("10", "10"),
        ("", ""),
    ],
)
def test_range_text_has_no_exponent(spec: str, text: str) -> None:
    assert range_text(Range(spec)) == text
    assert RANGE.fullmatch(text)


def test_real_output_has_no_exponent(server: Callable[[str], Cluster], ca: Pki) -> None:
    result = check_local(
        server("valid").port,
        ca.root_file,
        "-w",
        "0.00001",
        "-c",
        "@0.000001:100000000000000000000.0",
        servername="db.test",
    )
    assert result.returncode == 2, result.stdout
    perfdata = result.perfdata
    assert set(perfdata) == {"days_left", "time"}
    assert perfdata["days_left"].split(";")[1:] == ["0.00001:", "@0.000001:100000000000000000000"]
    for item in perfdata.values():
        value, *thresholds = item.split(";")
        assert VALUE.fullmatch(value.removesuffix("s")), item
        assert all(RANGE.fullmatch(t) for t in thresholds), item
