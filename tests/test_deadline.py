"""-t is the whole run as the monitoring system sees it: one line, an exit code 0-3, in time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.faults import FaultServer, scripted, silent

from .conftest import plugin_argv

# What a monitoring system adds around the plugin's own run: fork, exec and
# reaping the child. The plugin counts -t from the start of its process.
# Tests that assert it are marked serial (tests/serial.py): the margin is
# the plugin's, not that of a test running beside it in another worker.
MARGIN = 0.05


@pytest.fixture
def mute() -> Iterator[FaultServer]:
    with FaultServer(silent()) as server:
        yield server


def _timed(*argv: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    return time.monotonic() - started, done


@pytest.mark.serial
@pytest.mark.parametrize("seconds", ["0.5", "1"])
def test_silent_server_run_ends_within_t(mute: FaultServer, seconds: str) -> None:
    took, done = _timed(*plugin_argv(), "-H", "127.0.0.1", "-p", str(mute.port), "-t", seconds)
    assert done.returncode == 2, done.stdout
    assert done.stdout.count("\n") == 1, done.stdout
    assert done.stdout.startswith(
        f"PG_TLS CRITICAL - 127.0.0.1:{mute.port}: server accepted the connection "
        f"but did not answer the SSLRequest within {seconds} seconds | time="
    )
    assert took < float(seconds) + MARGIN, took


def test_tiny_timeout_exits_two_every_time(mute: FaultServer) -> None:
    # The alarm that guards the run once killed the process (exit 142)
    # after it had printed its result.
    runs = [
        _timed(*plugin_argv(), "-H", "127.0.0.1", "-p", str(mute.port), "-t", t)[1]
        for t in ("0.2", "0.3") * 5
    ]
    assert [r.returncode for r in runs] == [2] * 10, [r.stdout for r in runs]
    assert all(r.stdout.count("\n") == 1 for r in runs), [r.stdout for r in runs]


def test_no_alarm_outlives_the_result() -> None:
    # Whatever the process does after the plugin's main() returned (here:
    # waiting past -t), nothing of the plugin may print or exit any more.
    # The server refuses TLS at once, so main() returns long before -t:
    # at -t itself the guard may rightly end the run first (it prints "no
    # result within", and main() never returns), which would test nothing.
    code = (
        "import sys, time\n"
        "from check_pg_tls.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "time.sleep(2.5)\n"
        "print('still here')\n"
        "sys.exit(code)\n"
    )
    with FaultServer(scripted(b"N")) as refusing:
        done = subprocess.run(
            [sys.executable, "-c", code, "-H", "127.0.0.1", "-p", str(refusing.port), "-t", "2"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2, done.stdout
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "still here", done.stdout
    assert lines[0].startswith(
        f"PG_TLS CRITICAL - 127.0.0.1:{refusing.port}: server does not offer TLS"
    ), done.stdout


@pytest.fixture
def hanging_roots(tmp_path: Path) -> Path:
    # A root certificate "file" nobody writes to: opening it blocks for
    # ever, and only the run's own guard (the backstop) can end the run.
    path = tmp_path / "roots.pem"
    os.mkfifo(path)
    return path


@pytest.mark.serial
@pytest.mark.parametrize("form", ["--json", "--tap", "--quiet", "--openmetrics", "-v"])
def test_backstop_prints_the_chosen_format(
    mute: FaultServer, hanging_roots: Path, form: str
) -> None:
    took, done = _timed(
        *plugin_argv(), "-H", "127.0.0.1", "-p", str(mute.port), "-t", "1",
        "--sslrootcert", str(hanging_roots), form,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    assert took < 1 + MARGIN, took
    target, late = f"127.0.0.1:{mute.port}", "no result within 1 seconds"
    if form == "--json":
        document = json.loads(done.stdout)
        assert (document["state"], document["exit_code"], document["error"]) == (
            "CRITICAL",
            2,
            late,
        )
        (entry,) = document["targets"]
        assert (entry["target"], entry["state"], entry["problems"]) == (
            target,
            "CRITICAL",
            [late],
        )
    elif form == "--tap":
        assert done.stdout.startswith(f"TAP version 13\n1..1\nnot ok 1 - {target} {late}\n")
    elif form == "--quiet":
        assert done.stdout == f"{target}: {late}\n"
    elif form == "--openmetrics":
        assert "pg_tls_state 2.0" in done.stdout, done.stdout
        assert f'pg_tls_error_info{{reason="{target}: {late}"}} 1.0' in done.stdout, done.stdout
    else:
        assert done.stdout == f"PG_TLS CRITICAL - {target}: {late}\n"


def test_the_metrics_reason_names_t_not_what_was_left(mute: FaultServer) -> None:
    # Start-up takes part of -t: the reason label must still say -t, or a
    # server that stays down would make a new series at every run.
    reasons = set()
    for _ in range(2):
        _, done = _timed(
            *plugin_argv(), "-H", "127.0.0.1", "-p", str(mute.port), "-t", "0.7", "--openmetrics"
        )
        assert done.returncode == 2, done.stdout
        reasons |= {
            line for line in done.stdout.splitlines() if line.startswith("pg_tls_error_info")
        }
    assert reasons == {
        'pg_tls_error_info{reason="server accepted the connection but did not answer the '
        f'SSLRequest within 0.7 seconds",target="127.0.0.1:{mute.port}"}} 1.0'
    }, reasons
