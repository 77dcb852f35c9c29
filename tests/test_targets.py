"""Target specs, as users write them in lists and on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from check_pg_tls.model import Target
from check_pg_tls.targets import Line, name_problem, parse_target, read_targets_file


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("db1", Target("db1", 5432)),
        ("db1:6432", Target("db1", 6432)),
        ("db1(db.example.com)", Target("db1", 5432, "db.example.com")),
        ("10.0.0.5(db.example.com):5433", Target("10.0.0.5", 5433, "db.example.com")),
        ("[::1]:5432", Target("::1", 5432)),
        ("[::1]", Target("::1", 5432)),
        ("::1", Target("::1", 5432)),
        ("[fe80::1](db.example.com):6432", Target("fe80::1", 6432, "db.example.com")),
        ("  db1:5432  ", Target("db1", 5432)),
    ],
)
def test_valid_specs(spec: str, expected: Target) -> None:
    assert parse_target(spec) == expected


def test_defaults_apply_only_where_the_spec_is_silent() -> None:
    assert parse_target("db1", 6432, "name.example", 4) == Target("db1", 6432, "name.example", 4)
    assert parse_target("db1(own.example):7000", 6432, "name.example") == Target(
        "db1", 7000, "own.example"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "",
        " ",
        "db1:",
        "db1:x",
        "db1:0",
        "db1:65536",
        "(x):5",
        "a b",
        "db1(a b)",
        "[::1",
        "db1:5432:1",
    ],
)
def test_invalid_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid target"):
        parse_target(spec)


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        (Target("db1", 5432), "db1:5432"),
        (Target("10.0.0.5", 5432, "db.example.com"), "10.0.0.5(db.example.com):5432"),
        (Target("db1", 5432, "db1"), "db1:5432"),
        (Target("::1", 5432), "[::1]:5432"),
    ],
)
def test_targets_print_in_spec_form(target: Target, shown: str) -> None:
    assert str(target) == shown
    assert parse_target(shown) == Target(
        target.host, target.port, target.servername if target.servername != target.host else None
    )


def test_targets_file(tmp_path: Path) -> None:
    path = tmp_path / "targets"
    path.write_text("# production\ndb1:5432\n\n  db2(db.example.com)  # replica\n#db3\n")
    assert read_targets_file(str(path)) == [Line(2, "db1:5432"), Line(4, "db2(db.example.com)")]


def test_a_line_that_is_not_utf8_stands_alone(tmp_path: Path) -> None:
    path = tmp_path / "targets"
    path.write_bytes(b"db1\nd\xffb # x\xff\r\nd\xc3\xa9.test\n")
    assert read_targets_file(str(path)) == [
        Line(1, "db1"),
        Line(2, "d\udcffb", "not UTF-8"),
        Line(3, "d\u00e9.test"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "db1",
        "db.example.com",
        "db.example.com.",
        "127.0.0.1",
        "::1",
        "fe80::1%eth0",
        "d\u00e9.test",
        "a" * 63 + ".test",
        "_pg.example",
    ],
)
def test_good_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a..b", "empty label in host name"),
        (".a", "empty label in host name"),
        ("a.", None),
        ("a\x00b", "control character in host name"),
        ("a\tb", "control character in host name"),
        ("a" * 64, "host name label longer than 63 characters"),
        # Too long once encoded; shown shortened.
        (
            "\u00e4" * 60,
            "host name label '" + "\\xe4" * 16 + "\\xe...' is not a valid internationalized name",
        ),
        ("a\u202eb", "host name label 'a\\u202eb' is not a valid internationalized name"),
        (".".join(["a" * 63] * 4), "host name longer than 253 characters"),
    ],
)
def test_bad_names(name: str, problem: str | None) -> None:
    assert name_problem(name) == problem
