"""The one-target function: check(target, settings, timeout) -> Outcome, without nagiosplugin.

What the plugin prints is read from outcomes; these tests call the function
as a long-running process (pg_tls_exporter, or anyone's script) would, in a
process that never imports nagiosplugin, and hold what it returns against
what ``check_pg_tls`` prints for the same servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from check_pg_tls.model import Check, Finding, State
from testbed.pgcluster import Cluster

from .conftest import Pki, check_local

# Checks each server alone, then all of them at once in threads, and says
# what the outcomes hold and which modules were imported.
_SCRIPT = """\
import json, sys
from concurrent.futures import ThreadPoolExecutor
from check_pg_tls.check import check
from check_pg_tls.model import Target
from check_pg_tls.settings import settings_from_options

root, ports = sys.argv[1], [int(port) for port in sys.argv[2:]]
settings = settings_from_options(sslrootcert=root)
targets = [Target("127.0.0.1", port, "db.test") for port in ports]
alone = [check(target, settings, 5) for target in targets]
with ThreadPoolExecutor(len(targets)) as pool:
    together = list(pool.map(lambda target: check(target, settings, 5), targets))

def shown(outcome):
    perfdata = sorted(r.perfdata.text() for r in outcome.results if r.perfdata)
    return [outcome.state.label, f"{outcome.target}: {outcome.summary}", perfdata]

print(json.dumps({
    "alone": [shown(o) for o in alone],
    "together": [shown(o) for o in together],
    "imported": sorted(name for name in sys.modules if name.split(".")[0] == "nagiosplugin"),
}))
"""

SERVERS = ("valid", "expiring_warn", "expired", "wrong_name")


def test_check_runs_without_nagiosplugin_and_says_what_the_plugin_says(
    server: Callable[[str], Cluster], ca: Pki
) -> None:
    ports = [str(server(name).port) for name in SERVERS]
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(ca.root_file), *ports],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["imported"] == []
    expected = []
    for name in SERVERS:
        run = check_local(server(name).port, ca.root_file, servername="db.test")
        label, _, rest = run.status_line.removeprefix("PG_TLS ").partition(" - ")
        line, _, perfdata = rest.partition(" | ")
        expected.append([label, line, sorted(perfdata.split())])
    assert [state for state, _, _ in expected] == ["OK", "WARNING", "CRITICAL", "CRITICAL"]
    # The time differs between runs, and the days left may have moved on by
    # a hundredth of a day (14 minutes) between them.
    for rows in (found["alone"], found["together"]):
        assert _steady(rows) == _steady(expected)
        for ours, theirs in zip(_days(rows), _days(expected), strict=True):
            assert abs(ours - theirs) <= 0.01


def _steady(rows: list[list[object]]) -> list[list[object]]:
    def strip(perfdata: object) -> list[str]:
        assert isinstance(perfdata, list)
        return [
            item.partition(";")[2] if item.startswith("days_left=") else item
            for item in perfdata
            if not item.startswith("time=")
        ]

    return [[state, line, strip(perfdata)] for state, line, perfdata in rows]


def _days(rows: list[list[object]]) -> list[float]:
    values = []
    for _, _, perfdata in rows:
        assert isinstance(perfdata, list)
        (days,) = [item for item in perfdata if item.startswith("days_left=")]
        values.append(float(days.removeprefix("days_left=").partition(";")[0]))
    return values


def test_a_finding_cannot_be_made_without_a_severity() -> None:
    with pytest.raises(TypeError, match="severity"):
        Finding(Check.TRUST, "chain not trusted", "chain not trusted")  # type: ignore[call-arg]
    assert Finding(Check.TRUST, "untrusted", "x", State.CRITICAL).state is State.CRITICAL
    assert Finding.ok(Check.TRUST, "chain reaches a trusted root").state is State.OK


def test_states_rank_as_the_monitoring_plugins_combine_them() -> None:
    from check_pg_tls.model import worst

    assert [int(s) for s in State] == [0, 1, 2, 3]
    assert worst([State.UNKNOWN, State.CRITICAL, State.OK]) is State.CRITICAL
    assert worst([State.UNKNOWN, State.WARNING]) is State.WARNING
    assert worst([State.OK, State.UNKNOWN]) is State.UNKNOWN
    assert State.from_name("warning") is State.WARNING
    with pytest.raises(ValueError):
        State.from_name("bad")


@pytest.mark.parametrize("output", ["--json", "--openmetrics"])
def test_formats_other_than_nagios_do_not_load_nagiosplugin(
    server: Callable[[str], Cluster], ca: Pki, output: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "check_pg_tls",
            f"127.0.0.1(db.test):{server('valid').port}",
            "--sslrootcert",
            str(ca.root_file),
            output,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "check_pg_tls.check" in imported
    assert not any(name.split(".")[0] == "nagiosplugin" for name in imported)


def test_a_plain_check_imports_only_what_it_needs(
    server: Callable[[str], Cluster], ca: Pki
) -> None:
    # A plain Nagios check of one server: what only an option or an unusual
    # number needs stays out of the start-up every check pays for.
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "check_pg_tls",
            f"127.0.0.1(db.test):{server('valid').port}",
            "--sslrootcert",
            str(ca.root_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("PG_TLS OK - "), done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "check_pg_tls.check" in imported
    unneeded = {
        # perfdata writes a number with an exponent through it, never a plain one.
        "decimal",
        # --workers with more than one target.
        "concurrent.futures",
        # --openmetrics, --dane, --check-revocation, --json.
        "prometheus_client",
        "dns",
        "check_pg_tls.crl_fetch",
        "check_pg_tls.formats",
        "check_pg_tls.dane",
    }
    assert not {name for name in imported if name.split(".")[0] in unneeded or name in unneeded}
