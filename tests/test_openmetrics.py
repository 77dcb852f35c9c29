"""--openmetrics and --output as a user meets them: files, failures, a missing library."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from testbed.pgcluster import Cluster
from testbed.prometheus import promtool

from .conftest import Pki, Run, plugin_argv, run_plugin

ServerFactory = Callable[[str], Cluster]


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _good(server: ServerFactory) -> str:
    return f"127.0.0.1(db.test):{server('valid').port}"


def test_metrics_on_stdout(server: ServerFactory, ca: Pki) -> None:
    result = run_plugin(_good(server), "--openmetrics", "--sslrootcert", str(ca.root_file))
    assert (result.returncode, result.stderr) == (0, "")
    samples = _samples(result.stdout)
    assert samples["probe_success"] == [({"target": _good(server)}, 1.0)]
    assert not result.stdout.rstrip().endswith("# EOF")
    assert promtool("check", "metrics", stdin=result.stdout) == (0, "")


def test_output_replaces_the_file_atomically(
    server: ServerFactory, ca: Pki, tmp_path: Path
) -> None:
    out = tmp_path / "pg_tls.prom"
    out.write_text("old\n")
    # A reader that has the old file open keeps reading the old file whole:
    # the new one was written beside it and renamed over it, not rewritten
    # in place (which a reader could catch half done).
    with open(out) as reader:
        result = run_plugin(
            _good(server), "--openmetrics", "--output", str(out), "--sslrootcert", str(ca.root_file)
        )
        assert reader.read() == "old\n"
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert _samples(out.read_text())["probe_success"] == [({"target": _good(server)}, 1.0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pg_tls.prom"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ["--sslrootcert", "/nonexistent/root.crt"],
            "cannot read root certificate file /nonexistent/root.crt: No such file or directory",
        ),
        (
            ["--targets-file", "/nonexistent/targets"],
            "cannot read targets file /nonexistent/targets: No such file or directory (see --help)",
        ),
        (["-w", "bogus"], "invalid threshold"),
    ],
)
def test_a_failed_run_still_writes_what_it_knows(
    server: ServerFactory, tmp_path: Path, args: list[str], reason: str
) -> None:
    out = tmp_path / "pg_tls.prom"
    result = run_plugin(_good(server), "--openmetrics", "--output", str(out), *args)
    # Cron mails the status line; the file tells Prometheus.
    assert result.returncode == 3
    assert result.status_line.startswith("PG_TLS UNKNOWN - ")
    samples = _samples(out.read_text())
    assert samples["probe_success"] == [({}, 0.0)]
    assert samples["pg_tls_state"] == [({}, 3.0)]
    [(labels, value)] = samples["pg_tls_error_info"]
    assert value == 1 and reason in labels["reason"]
    assert labels["reason"] == result.status_line.removeprefix("PG_TLS UNKNOWN - ")
    assert promtool("check", "metrics", stdin=out.read_text()) == (0, "")


def test_a_failed_run_on_stdout_prints_metrics_not_a_status_line() -> None:
    result = run_plugin("db.test", "--openmetrics", "--sslrootcert", "/nonexistent/root.crt")
    assert result.returncode == 3
    samples = _samples(result.stdout)
    assert samples["probe_success"] == [({}, 0.0)]
    assert "PG_TLS" not in result.stdout


def test_an_unwritable_output_is_unknown(server: ServerFactory, ca: Pki, tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "pg_tls.prom"
    result = run_plugin(
        _good(server), "--openmetrics", "--output", str(out), "--sslrootcert", str(ca.root_file)
    )
    assert result.returncode == 3
    assert result.stdout == (f"PG_TLS UNKNOWN - cannot write {out}: No such file or directory\n")


def _without_prometheus_client(*args: str) -> Run:
    # As on a host where the extra was not installed: importing it fails.
    code = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "from check_pg_tls.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    return Run(done.returncode, done.stdout, done.stderr)


def test_without_the_library_openmetrics_is_unknown_with_the_install_command(
    tmp_path: Path,
) -> None:
    result = _without_prometheus_client(
        "db.test", "--openmetrics", "--output", str(tmp_path / "x.prom")
    )
    assert result.returncode == 3
    assert result.stdout == (
        "PG_TLS UNKNOWN - --openmetrics needs prometheus_client: "
        "pip install 'check_pg_tls[prometheus]'\n"
    )
    # The file still says so, in a form Prometheus reads.
    text = (tmp_path / "x.prom").read_text()
    assert promtool("check", "metrics", stdin=text) == (0, "")
    [(labels, _)] = _samples(text)["pg_tls_error_info"]
    assert "pip install 'check_pg_tls[prometheus]'" in labels["reason"]


def test_without_the_library_the_nagios_check_works(server: ServerFactory, ca: Pki) -> None:
    result = _without_prometheus_client(_good(server), "--sslrootcert", str(ca.root_file))
    assert result.returncode == 0, result.stdout
    assert result.status_line.startswith("PG_TLS OK - ")


def test_a_plain_check_does_not_import_prometheus_client(server: ServerFactory, ca: Pki) -> None:
    code = (
        "import sys; from check_pg_tls.cli import main; code = main(sys.argv[1:]); "
        "print('loaded' if 'prometheus_client' in sys.modules else 'not loaded'); "
        "raise SystemExit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, _good(server), "--sslrootcert", str(ca.root_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.splitlines()[-1] == "not loaded"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "x.prom"], "--output needs --openmetrics"),
        (["--metrics-format", "openmetrics"], "--metrics-format needs --openmetrics"),
        (["--openmetrics", "--json"], "not allowed with argument"),
        (["--openmetrics", "--metrics-format", "proto"], "invalid choice: 'proto'"),
    ],
)
def test_bad_metrics_options_are_unknown(args: list[str], message: str) -> None:
    result = run_plugin("db.test", *args)
    assert result.returncode == 3
    assert result.status_line.startswith("PG_TLS UNKNOWN - ")
    assert message in result.status_line


def test_help_lists_the_prometheus_options() -> None:
    done = subprocess.run([*plugin_argv(), "--help"], capture_output=True, text=True, timeout=60)
    assert "--openmetrics" in done.stdout
    assert "--metrics-format {prometheus,openmetrics}" in done.stdout
    assert "--output FILE" in done.stdout


AWKWARD = 'CN=a "quoted", back\\slash,\nnew line'


@pytest.mark.parametrize("openmetrics", [False, True])
def test_label_values_are_escaped_by_the_format(openmetrics: bool) -> None:
    from check_pg_tls.openmetrics import failure_families, render

    text = render(failure_families(3, AWKWARD), openmetrics).decode()
    assert "\nnew line" not in text
    parse = parse_openmetrics if openmetrics else text_string_to_metric_families
    [reason] = [
        s.labels["reason"] for f in parse(text) for s in f.samples if s.name == "pg_tls_error_info"
    ]
    assert reason == AWKWARD


@pytest.mark.parametrize("openmetrics", [False, True])
def test_the_fallback_without_the_library_says_the_same(openmetrics: bool) -> None:
    from check_pg_tls.openmetrics import _render_without_library, failure_families, render

    found = failure_families(3, AWKWARD)
    parse = parse_openmetrics if openmetrics else text_string_to_metric_families

    def samples(text: bytes) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for f in parse(text.decode()) for s in f.samples]

    assert samples(_render_without_library(found, openmetrics)) == samples(
        render(found, openmetrics)
    )
