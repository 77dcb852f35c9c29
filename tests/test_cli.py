"""Options: bad input gets UNKNOWN and one line; --help and --version work."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from check_pg_tls import __version__
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
