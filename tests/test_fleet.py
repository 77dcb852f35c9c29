"""Many servers in one run: targets file, Nagios fleet output, TAP, JSON, cron mode."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.faults import FaultServer, RefusedPort, silent
from testbed.pgcluster import Cluster

from .conftest import Pki, Run, run_plugin
from .test_deadline import MARGIN

ServerFactory = Callable[[str], Cluster]


@pytest.fixture
def dead() -> Iterator[int]:
    with RefusedPort() as port:
        yield port.port


@pytest.fixture
def fleet_file(server: ServerFactory, dead: int, tmp_path: Path) -> Path:
    path = tmp_path / "targets"
    path.write_text(
        "# good, expiring, wrong name, dead\n"
        f"127.0.0.1(db.test):{server('valid').port}\n"
        "\n"
        f"127.0.0.1(db.test):{server('expiring_warn').port}   # renew me\n"
        f"127.0.0.1(db.test):{server('wrong_name').port}\n"
        f"127.0.0.1:{dead}\n"
    )
    return path


def fleet(ca: Pki, path: Path, *args: str) -> Run:
    return run_plugin("--targets-file", str(path), "--sslrootcert", str(ca.root_file), *args)


def test_nagios_fleet_output(server: ServerFactory, ca: Pki, fleet_file: Path, dead: int) -> None:
    result = fleet(ca, fleet_file)
    assert result.returncode == 2, result.stdout
    lines = result.stdout.splitlines()
    good, warn, wrong = (server(n).port for n in ("valid", "expiring_warn", "wrong_name"))
    status = lines[0]
    assert status.startswith(
        "PG_TLS CRITICAL - 3 of 4 servers need attention (2 critical, 1 warning): "
    )
    assert f"127.0.0.1(db.test):{wrong}: certificate is not valid for db.test" in status
    assert f"127.0.0.1:{dead}: connection refused" in status
    assert f"127.0.0.1(db.test):{warn}: certificate expires in 18 days" in status
    # One long-output line per target, in input order.
    assert [line.split(" ", 2)[:2] for line in lines[1:]] == [
        ["OK", f"127.0.0.1(db.test):{good}:"],
        ["WARNING", f"127.0.0.1(db.test):{warn}:"],
        ["CRITICAL", f"127.0.0.1(db.test):{wrong}:"],
        ["CRITICAL", f"127.0.0.1:{dead}:"],
    ]
    assert result.stdout.count("|") == 1
    labels = [item.split("=")[0] for item in status.split(" | ")[1].split()]
    assert f"db_test_{good}_days_left" in labels
    assert f"db_test_{warn}_days_left" in labels
    assert len(labels) == len(set(labels))
    assert all(re.fullmatch(r"\w+", label) for label in labels)


def test_a_repeated_target_is_checked_once(server: ServerFactory, ca: Pki) -> None:
    port = str(server("valid").port)
    result = run_plugin(
        "-H",
        "127.0.0.1",
        "127.0.0.1",
        f"host=127.0.0.1 port={port}",
        "-p",
        port,
        "--sslmode",
        "verify-ca",
        "--sslrootcert",
        str(ca.root_file),
    )
    assert result.returncode == 0, result.stdout
    # One check: the single-target status line, its perfdata unprefixed.
    assert result.status_line.startswith(f"PG_TLS OK - 127.0.0.1:{port}: ")
    labels = [item.split("=")[0] for item in result.status_line.split(" | ")[1].split()]
    assert sorted(labels) == ["days_left", "time"]


def test_tap_passes_a_real_tap_consumer(ca: Pki, fleet_file: Path, tmp_path: Path) -> None:
    result = fleet(ca, fleet_file, "--tap")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[:2] == ["TAP version 13", "1..4"]
    assert lines[2].startswith("ok 1 - 127.0.0.1(db.test):")
    assert sum(line.startswith("not ok ") for line in lines) == 3
    report = tmp_path / "report.tap"
    report.write_text(result.stdout)
    proved = subprocess.run(
        ["prove", "--exec", "cat", str(report)], capture_output=True, text=True, timeout=60
    )
    assert "Parse errors" not in proved.stdout
    assert "Failed 3/4 subtests" in proved.stdout, proved.stdout


def test_tap_all_good_passes_prove(server: ServerFactory, ca: Pki, tmp_path: Path) -> None:
    result = run_plugin(
        f"127.0.0.1(db.test):{server('valid').port}",
        f"127.0.0.1(db2.test):{server('valid').port}",
        "--tap",
        "--sslrootcert",
        str(ca.root_file),
    )
    assert result.returncode == 0
    report = tmp_path / "ok.tap"
    report.write_text(result.stdout)
    proved = subprocess.run(
        ["prove", "--exec", "cat", str(report)], capture_output=True, text=True, timeout=60
    )
    assert proved.returncode == 0, proved.stdout
    assert "All tests successful" in proved.stdout


def test_json_document(server: ServerFactory, ca: Pki, fleet_file: Path, dead: int) -> None:
    result = fleet(ca, fleet_file, "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["state"] == "CRITICAL"
    assert document["counts"] == {"ok": 1, "warning": 1, "critical": 2, "unknown": 0}
    targets = document["targets"]
    assert [t["state"] for t in targets] == ["OK", "WARNING", "CRITICAL", "CRITICAL"]
    good = targets[0]
    assert good["servername"] == "db.test"
    assert good["checks"]["trust"]["ok"] and good["checks"]["name"]["ok"]
    assert good["tls"]["version"].startswith("TLSv1.")
    assert 89 < good["days_left"] < 90.1
    assert [c["subject"] for c in good["chain"]][
        1
    ] == "CN=check_pg_tls Test Intermediate,O=check_pg_tls tests"
    assert good["chain"][0]["dns_names"] == ["db.test", "db2.test"]
    assert good["chain"][0]["ip_addresses"] == ["127.0.0.1", "::1"]
    assert targets[2]["checks"]["name"] == {
        "ok": False,
        "severity": "critical",
        "message": "certificate is not valid for db.test (valid for ip-10-1-2-3.internal)",
    }
    assert targets[3]["error"] == "connection refused"
    assert targets[3]["chain"] == [] and targets[3]["days_left"] is None


def test_quiet_is_silent_when_all_is_well(server: ServerFactory, ca: Pki) -> None:
    result = run_plugin(
        f"127.0.0.1(db.test):{server('valid').port}", "--quiet", "--sslrootcert", str(ca.root_file)
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_quiet_prints_one_line_per_problem(ca: Pki, fleet_file: Path, dead: int) -> None:
    result = fleet(ca, fleet_file, "--quiet")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert "certificate expires in 18 days" in lines[0]
    assert "certificate is not valid for db.test" in lines[1]
    assert lines[2] == f"127.0.0.1:{dead}: connection refused"


def test_min_days_is_the_cron_spelling_of_critical(server: ServerFactory, ca: Pki) -> None:
    port = server("valid").port
    result = run_plugin(
        f"127.0.0.1(db.test):{port}",
        "--quiet",
        "--min-days",
        "180",
        "--sslrootcert",
        str(ca.root_file),
    )
    assert result.returncode == 2
    # The leaf was issued for 90 days at the start of the test session.
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=90)
    dates = {f"{day:%Y-%m-%d}" for day in (expires, expires - dt.timedelta(days=1))}
    assert result.stdout in {
        f"127.0.0.1(db.test):{port}: certificate expires in 89 days ({date})\n" for date in dates
    }, result.stdout


@pytest.mark.serial
def test_slow_server_does_not_reorder_or_stall(server: ServerFactory, ca: Pki) -> None:
    with FaultServer(silent()) as slow:
        started = time.monotonic()
        result = run_plugin(
            f"127.0.0.1:{slow.port}",
            f"127.0.0.1(db.test):{server('valid').port}",
            "-t",
            "2",
            "--sslrootcert",
            str(ca.root_file),
            guard=20,
        )
        took = time.monotonic() - started
    lines = result.stdout.splitlines()
    # Checked side by side: the slow one costs its own -t, not more.
    assert took < 2 + MARGIN, took
    assert result.returncode == 2
    assert lines[1].startswith(f"CRITICAL 127.0.0.1:{slow.port}: server accepted the connection")
    assert lines[2].startswith("OK 127.0.0.1(db.test):")


def test_ipv6_target_spec(server: ServerFactory, ca: Pki) -> None:
    port = server("valid").port
    result = run_plugin(
        f"[::1](db.test):{port}", f"[::1]:{port}", "--sslrootcert", str(ca.root_file)
    )
    assert result.returncode == 0, result.stdout
    assert f"OK [::1](db.test):{port}: " in result.stdout
    assert f"OK [::1]:{port}: " in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["db1:99999"], "invalid target 'db1:99999': port must be 1-65535"),
        (["db1:x"], "invalid target 'db1:x'"),
        (
            ["--targets-file", "/nonexistent/targets"],
            "cannot read targets file /nonexistent/targets",
        ),
        (["db1", "--tap", "--json"], "not allowed with argument"),
        (["db1", "--workers", "0"], "invalid number of workers '0'"),
    ],
)
def test_bad_fleet_options_are_unknown(args: list[str], message: str) -> None:
    result = run_plugin(*args)
    assert result.returncode == 3
    assert result.status_line.startswith("PG_TLS UNKNOWN - ")
    assert message in result.status_line


def test_empty_targets_file_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("# nothing yet\n\n")
    result = run_plugin("--targets-file", str(path))
    assert result.returncode == 3
    assert "no server to check" in result.status_line


def test_bad_lines_of_a_targets_file_are_unknown_and_the_rest_is_checked(
    server: ServerFactory, ca: Pki, tmp_path: Path
) -> None:
    good = server("valid").port
    path = tmp_path / "targets"
    path.write_bytes(
        f"127.0.0.1(db.test):{good}\n".encode()
        + b"bad\xffname:5432\n"
        + b"nul\x00name:5432\n"
        + b"# a comment\n"
        + b"a..b:5432\n"
        + f"127.0.0.1(db2.test):{good}\n".encode()
    )
    result = fleet(ca, path)
    assert result.returncode == 3, result.stdout
    assert result.stdout.isascii() and "\x00" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "PG_TLS UNKNOWN - 3 of 5 servers need attention (3 unknown): line 2: "
    )
    assert lines[1:] == [
        f"OK 127.0.0.1(db.test):{good}: " + lines[1].split(": ", 1)[1],
        "UNKNOWN line 2: invalid target 'bad\\xffname:5432': not UTF-8",
        "UNKNOWN line 3: invalid target 'nul\\x00name:5432': control character in host name",
        "UNKNOWN line 5: invalid target 'a..b:5432': empty label in host name",
        f"OK 127.0.0.1(db2.test):{good}: " + lines[5].split(": ", 1)[1],
    ]
    assert lines[1].endswith("; chain trusted; valid for db.test")
    assert lines[5].endswith("; chain trusted; valid for db2.test")
    # Per-server perfdata only for the servers that were checked, then the
    # fleet's aggregates.
    labels = [item.split("=")[0] for item in lines[0].split(" | ")[1].split()]
    aggregates = ["min_days_left", "max_time"] + [
        f"servers_{state}" for state in ("ok", "warning", "critical", "unknown")
    ]
    assert sorted(labels) == sorted(
        [f"db{n}_test_{good}_{metric}" for n in ("", "2") for metric in ("days_left", "time")]
        + aggregates
    )


def test_a_bad_line_in_json_and_tap(ca: Pki, tmp_path: Path) -> None:
    path = tmp_path / "targets"
    path.write_bytes(b"a..b\n")
    document = json.loads(fleet(ca, path, "--json").stdout)
    assert document["state"] == "UNKNOWN" and document["exit_code"] == 3
    (entry,) = document["targets"]
    assert entry["target"] == "line 1"
    assert entry["host"] is entry["port"] is entry["servername"] is entry["sslmode"] is None
    assert entry["state"] == "UNKNOWN"
    assert entry["error"] == "invalid target 'a..b': empty label in host name"
    tap = fleet(ca, path, "--tap")
    assert tap.returncode == 3
    assert tap.stdout.splitlines()[2] == (
        "not ok 1 - line 1 invalid target 'a..b': empty label in host name"
    )
