"""Options: bad input gets UNKNOWN and one line; --help and --version work."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from check_pg_tls import __version__
from testbed.faults import RefusedPort
from testbed.pgcluster import Cluster

from .conftest import Pki, run_plugin


def assert_unknown(args: list[str], message: str) -> None:
    result = run_plugin(*args)
    assert result.returncode == 3, result.stdout
    assert result.stdout.count("\n") == 1, result.stdout
    assert result.status_line.startswith("PG_TLS UNKNOWN - ")
    assert message in result.status_line
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no server to check: give -H HOST, TARGET or --targets-file FILE"),
        (["-H", "db", "--bogus"], "unrecognized arguments: --bogus"),
        (["-H", "db", "-p", "0"], "invalid port '0'"),
        (["-H", "db", "-p", "abc"], "invalid port 'abc'"),
        (["-H", "db", "-t", "0"], "invalid timeout '0'"),
        (["-H", "db", "-t", "soon"], "invalid timeout 'soon'"),
        (["-H", "db", "--sslmode", "disable"], "invalid choice: 'disable'"),
        (["-H", "db", "-w", "abc"], "invalid threshold 'abc'"),
        (["-H", "db", "-c", "5:3"], "invalid threshold '5:3'"),
        (["-H", "db", "-w", "101%"], "invalid threshold '101%'"),
        (["-H", ""], "invalid target ''"),
        (["-H", "db", "-4", "-6"], "not allowed with argument"),
        (["-H", "db", "--unreachable-state", "ok"], "invalid choice: 'ok'"),
    ],
)
def test_bad_option_is_unknown(args: list[str], message: str) -> None:
    assert_unknown(args, message)


def test_missing_root_file_is_unknown(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    assert_unknown(
        ["-H", "127.0.0.1", "--sslrootcert", str(missing)],
        f"cannot read root certificate file {missing}: No such file or directory",
    )


def test_root_file_without_certificates_is_unknown(tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("this is not PEM\n")
    assert_unknown(
        ["-H", "127.0.0.1", "--sslrootcert", str(junk)],
        f"OpenSSL cannot use root certificate file {junk} (no certificate or crl found); "
        "libpq cannot either",
    )


def test_directory_as_root_file_is_unknown(tmp_path: Path) -> None:
    assert_unknown(
        ["-H", "127.0.0.1", "--sslrootcert", str(tmp_path)], "cannot read root certificate file"
    )


def test_bad_root_file_is_unknown_even_with_require(tmp_path: Path) -> None:
    assert_unknown(
        ["-H", "127.0.0.1", "--sslmode", "require", "--sslrootcert", str(tmp_path / "nope.crt")],
        "cannot read root certificate file",
    )


def test_help() -> None:
    result = run_plugin("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: check_pg_tls ")
    for option in (
        "--host",
        "--port",
        "--servername",
        "--warning",
        "--critical",
        "--sslmode",
        "--sslrootcert",
        "--timeout",
        "--unreachable-state",
        "--verbose",
        "--version",
    ):
        assert option in result.stdout


def test_version() -> None:
    result = run_plugin("-V")
    assert (result.returncode, result.stdout) == (0, f"check_pg_tls {__version__}\n")


def test_python_dash_m(server: Callable[[str], Cluster], ca: Pki) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_pg_tls",
            "-H",
            "127.0.0.1",
            "-p",
            str(server("valid").port),
            "--sslrootcert",
            str(ca.root_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("PG_TLS OK - ")


def test_option_order_does_not_matter(server: Callable[[str], Cluster], ca: Pki) -> None:
    # Icinga 2 passes arguments sorted by key, not in the order written.
    port = str(server("expiring_warn").port)
    ordered = run_plugin(
        "-H",
        "127.0.0.1",
        "-p",
        port,
        "--servername",
        "db.test",
        "-w",
        "20",
        "-c",
        "15",
        "--sslrootcert",
        str(ca.root_file),
    )
    shuffled = run_plugin(
        "--sslrootcert",
        str(ca.root_file),
        "-c",
        "15",
        "--servername",
        "db.test",
        "-w",
        "20",
        "-p",
        port,
        "-H",
        "127.0.0.1",
    )
    assert ordered.returncode == shuffled.returncode == 1
    assert ordered.status_line.split(" | ")[0] == shuffled.status_line.split(" | ")[0]


LONG_LABEL = "a" * 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-H", "a..b"], "invalid target 'a..b': empty label in host name"),
        (["-H", ".db.test"], "invalid target '.db.test': empty label in host name"),
        (
            ["-H", f"{LONG_LABEL}.test"],
            f"invalid target '{LONG_LABEL}.test': host name label longer than 63 characters",
        ),
        (["-H", f"{'a.' * 127}b"], "host name longer than 253 characters"),
        (
            ["-H", "db\u202e.test"],
            "invalid target 'db\\u202e.test': host name label 'db\\u202e' is not "
            "a valid internationalized name",
        ),
        (
            ["-H", "db.test", "--servername", ".example.test"],
            "invalid --servername '.example.test': empty label in host name",
        ),
        (
            ["-H", "db.test", "--servername", "\u00e4..b"],
            "invalid --servername '\\xe4..b': empty label in host name",
        ),
        (["-H", "127.0.0.1(a..b):5432"], "invalid target '127.0.0.1(a..b):5432': empty label"),
    ],
    ids=[
        "double-dot",
        "leading-dot",
        "64-char-label",
        "254-char-name",
        "idna-rejects",
        "servername-leading-dot",
        "servername-non-ascii",
        "spec-servername",
    ],
)
def test_bad_name_is_unknown(args: list[str], message: str) -> None:
    assert_unknown(args, message)


@pytest.mark.parametrize(
    "env", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C"}], ids=["pythonioencoding", "lc-all-c"]
)
def test_non_ascii_servername_is_escaped_for_any_stdout(env: dict[str, str]) -> None:
    with RefusedPort() as closed:
        result = run_plugin(
            "-H", "127.0.0.1", "-p", str(closed.port), "--servername", "d\u00e9.test", env=env
        )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.status_line.startswith(
        f"PG_TLS CRITICAL - 127.0.0.1(d\\xe9.test):{closed.port}: connection refused | time="
    )
    assert result.stdout.isascii()
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-H", "db", "-t", "-1"], "invalid timeout '-1': must be 0.001 to 3600"),
        (["-H", "db", "--timeout", "-0.5"], "invalid timeout '-0.5': must be 0.001 to 3600"),
        (["-H", "db", "-t", "-4"], "invalid timeout '-4': must be 0.001 to 3600"),
        (["-H", "db", "--min-rsa-bits", "-5"], "invalid number of bits '-5': must be 0 to 65536"),
        (["-H", "db", "--min-ec-bits", "-256"], "invalid number of bits '-256': must be 0 to"),
        (["-H", "db", "-p", "-5432"], "invalid port '-5432': must be 1 to 65535"),
        (["-H", "db", "--workers", "-2"], "invalid number of workers '-2': must be 1 to 256"),
        (
            ["-H", "mysql://h:3306/db"],
            "invalid target 'mysql://h:3306/db': only postgresql:// and postgres:// "
            "connection URIs are read",
        ),
        (
            ["postgres://h/db?sslmode=sometimes"],
            "invalid connection string 'postgres://h/db?sslmode=sometimes': invalid sslmode",
        ),
    ],
    ids=[
        "t-negative",
        "timeout-negative-fraction",
        "t-looks-like-ipv4-option",
        "rsa-bits-negative",
        "ec-bits-negative",
        "port-negative",
        "workers-negative",
        "uri-other-scheme",
        "uri-bad-sslmode",
    ],
)
def test_bad_value_is_named(args: list[str], message: str) -> None:
    assert_unknown(args, message)


def test_negative_threshold_reaches_the_threshold_parser(
    server: Callable[[str], Cluster], ca: Pki
) -> None:
    # -c -5 is the Nagios range "-5:": alert only five days after expiry;
    # the expired certificate is CRITICAL anyway, the option is accepted.
    port = str(server("valid").port)
    result = run_plugin(
        "-H", "127.0.0.1", "-p", port, "--servername", "db.test", "--sslrootcert",
        str(ca.root_file), "-w", "-5", "-c", "-10",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert result.perfdata["days_left"].split(";")[1:] == ["-5:", "-10:"]


def test_help_shows_percent_once() -> None:
    result = run_plugin("--help")
    assert result.returncode == 0
    assert "%%" not in result.stdout
    assert "N% is a share" in " ".join(result.stdout.split())


def test_verbose_days_agree_with_the_status_line(server: Callable[[str], Cluster], ca: Pki) -> None:
    # 90 days from issue, a moment ago: 89 whole days and a fraction left.
    result = run_plugin(
        "-H", "127.0.0.1", "-p", str(server("valid").port), "--servername", "db.test",
        "--sslrootcert", str(ca.root_file), "-v",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "certificate expires in 89 days" in result.status_line
    leaf = next(line for line in result.stdout.splitlines() if line.startswith("leaf: "))
    assert leaf.endswith("UTC (89.9 days left)"), leaf
    assert float(result.perfdata["days_left"].split(";")[0]) == 89.99
