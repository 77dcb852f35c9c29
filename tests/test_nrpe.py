"""NRPE runs our command lines and hands back exactly what the plugin said.

The real ``nrpe`` from Debian on 127.0.0.1, started as root so that it drops
to the ``nagios`` user as in production, runs the plugin installed as the
README says; ``check_nrpe`` queries it. Our command lines are used as
written, except for what must differ on a test machine: the plugin's path,
the port, the name and the root certificate of the test servers.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.monitoring import (
    CONF,
    Nrpe,
    PluginOutput,
    check_nrpe,
    installed_plugin,
    shared_dir,
)
from testbed.pgcluster import Cluster

from .conftest import Pki

COMMANDS_FILE = CONF / "nrpe" / "check_pg_tls.cfg"
PLUGIN_PATH = "/usr/lib/nagios/plugins/check_pg_tls"

# Which test server stands in for the server each command watches.
SCENARIOS = {
    "check_pg_tls": ("valid", 0),
    "check_pg_tls_5433": ("expiring_warn", 1),
    "check_pg_tls_pgbouncer": ("expiring_crit", 2),
}


def _command_lines() -> dict[str, str]:
    lines = {}
    for line in COMMANDS_FILE.read_text().splitlines():
        found = re.fullmatch(r"command\[([^\]]+)\]=(.*)", line)
        if found:
            lines[found.group(1)] = found.group(2)
    return lines


def _retarget(argv: list[str], port: int, root: Path) -> list[str]:
    """The same command for the test servers: option values are replaced in
    place and nothing is dropped, so what NRPE runs has our lines' shape."""
    replace = {"-p": str(port), "--servername": "db.test", "--sslrootcert": str(root)}
    out = [str(installed_plugin())]
    args = argv[1:]
    while args:
        key = args.pop(0)
        out.append(key)
        if key in ("-4", "-6", "-v"):
            continue
        value = args.pop(0)
        out.append(replace.get(key, value))
    if "-p" not in argv:
        # The default port 5432 is not the test server's: add it.
        out += ["-p", str(port)]
    return out


def test_command_lines_are_fixed_and_shell_safe() -> None:
    lines = _command_lines()
    assert set(lines) == set(SCENARIOS)
    for name, line in lines.items():
        argv = shlex.split(line)
        assert argv[0] == PLUGIN_PATH, name
        # Nothing for /bin/sh to expand or for NRPE's filter to reject, and
        # no $ARGn$: Debian's NRPE passes no arguments.
        assert not re.search(r"[$`|&;<>(){}\[\]\\'\"*?~]", line), name
        assert argv[argv.index("-H") + 1] == "127.0.0.1", name
    # The argument-passing variant is shown only as a comment.
    text = COMMANDS_FILE.read_text()
    assert "dont_blame_nrpe" in text and "$ARG1$" in text
    assert all(line.startswith("#") for line in text.splitlines() if "$ARG" in line)


@pytest.fixture(scope="module")
def nrpe(server: Callable[[str], Cluster], ca: Pki) -> Iterator[tuple[Nrpe, dict[str, str]]]:
    tree = shared_dir("check_pg_tls-nrpe-")
    # The test PKI's root is under the workspace, readable by everyone.
    commands = {}
    for name, line in _command_lines().items():
        scenario, _ = SCENARIOS[name]
        commands[name] = shlex.join(
            _retarget(shlex.split(line), server(scenario).port, ca.root_file)
        )
    commands_file = tree / "commands.cfg"
    commands_file.write_text("".join(f"command[{n}]={c}\n" for n, c in commands.items()))
    daemon = Nrpe(tree, commands_file)
    try:
        yield daemon.start(), commands
    finally:
        daemon.stop()
        shutil.rmtree(tree, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_nrpe_passes_the_verdict_through_unchanged(
    nrpe: tuple[Nrpe, dict[str, str]], name: str
) -> None:
    daemon, commands = nrpe
    _, state = SCENARIOS[name]
    remote = check_nrpe(daemon.port, name)
    # The same command line, run here directly.
    direct = subprocess.run(shlex.split(commands[name]), capture_output=True, text=True, timeout=60)

    assert direct.returncode == state, direct.stdout
    assert remote.returncode == state, (remote.stdout, remote.stderr, daemon.log())
    assert remote.stderr == ""
    # One status line with perfdata, byte for byte the plugin's, but for the
    # values that move between two runs.
    assert remote.stdout.count("\n") == 1 and remote.stdout.count("|") == 1, remote.stdout
    got, want = PluginOutput.parse(remote.stdout), PluginOutput.parse(direct.stdout)
    assert got.text == want.text
    assert got.text.startswith(("PG_TLS OK - ", "PG_TLS WARNING - ", "PG_TLS CRITICAL - ")[state])
    assert set(got.perfdata) == set(want.perfdata) == {"days_left", "time"}
    assert got.perfdata["days_left"][1:] == want.perfdata["days_left"][1:]
    assert abs(got.value("days_left") - want.value("days_left")) <= 0.011
    assert re.fullmatch(r"[\d.]+s", got.perfdata["time"][0])


def test_nrpe_runs_the_plugin_as_the_nagios_user(nrpe: tuple[Nrpe, dict[str, str]]) -> None:
    # The point of installing the plugin outside root's home: NRPE dropped
    # root, and the plugin still ran (an unreadable interpreter would give
    # "NRPE: Unable to read output" or exit 126/127, not a verdict).
    daemon, _ = nrpe
    if os.geteuid() != 0:
        # As anyone else NRPE keeps that user: nothing would be shown.
        pytest.fail("NRPE drops to the nagios user only when started as root: run as root")
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    # Real, effective, saved, filesystem: NRPE keeps root only as saved uid.
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
    assert uids is not None
    assert int(uids.group(2)) == pwd.getpwnam("nagios").pw_uid != 0
