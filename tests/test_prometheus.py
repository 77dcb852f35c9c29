"""--openmetrics and --output with the real Prometheus tools.

One run of the plugin over a small fleet (good, expiring, untrusted,
expired, dead) writes a .prom file as the README's cron line does; promtool
checks it, a real node_exporter serves it with its textfile collector, and a
real Prometheus server scrapes that and answers PromQL over its HTTP API.
The shipped alert rules are loaded there and unit-tested with promtool on
the plugin's own numbers.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from testbed.faults import RefusedPort
from testbed.pgcluster import Cluster
from testbed.prometheus import NodeExporter, PrometheusServer, promtool

from .conftest import Pki, Run, run_plugin

ServerFactory = Callable[[str], Cluster]

RULES = Path(__file__).parent.parent / "prometheus" / "pg_tls-alerts.yml"
RULES_TEST = RULES.with_name("pg_tls-alerts.test.yml")
DASHBOARD = RULES.with_name("pg_tls-dashboard.json")
DAY = 86400


@dataclass
class Fleet:
    """The plugin's run over the fleet, as cron runs it."""

    run: Run
    file: Path
    #: Unix time when the run ended.
    at: float
    #: Target spec by role: good, expiring, untrusted, expired, dead.
    targets: dict[str, str]
    #: The same fleet's --json document, for the facts to compare with.
    json: dict[str, dict[str, object]]

    def samples(self) -> dict[str, dict[str, float]]:
        """Every sample in the file: name to ``{target or label set: value}``."""
        found: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(self.file.read_text()):
            for sample in family.samples:
                key = sample.labels.get("target") or json.dumps(sample.labels, sort_keys=True)
                found.setdefault(sample.name, {})[key] = sample.value
        return found

    def labels(self, name: str) -> dict[str, dict[str, str]]:
        """The label sets of ``name``'s samples, by target."""
        return {
            sample.labels["target"]: sample.labels
            for family in text_string_to_metric_families(self.file.read_text())
            for sample in family.samples
            if sample.name == name
        }


@pytest.fixture(scope="module")
def fleet(
    server: ServerFactory, ca: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("textfile")
    with RefusedPort() as dead:
        targets = {
            "good": f"127.0.0.1(db.test):{server('valid').port}",
            "expiring": f"127.0.0.1(db.test):{server('expiring_warn').port}",
            "untrusted": f"127.0.0.1(db.test):{server('unknown_ca').port}",
            "expired": f"127.0.0.1(db.test):{server('expired').port}",
            "dead": f"127.0.0.1:{dead.port}",
        }
        listed = directory.parent / "targets"
        listed.write_text("\n".join(targets.values()) + "\n")
        common = ("--targets-file", str(listed), "--sslrootcert", str(ca.root_file))
        file = directory / "pg_tls.prom"
        run = run_plugin(*common, "--openmetrics", "--output", str(file))
        at = time.time()
        document = json.loads(run_plugin(*common, "--json").stdout)
    yield Fleet(run, file, at, targets, {t["target"]: t for t in document["targets"]})


def test_the_run_writes_the_file_and_exits_with_the_worst_state(fleet: Fleet) -> None:
    assert (fleet.run.returncode, fleet.run.stdout, fleet.run.stderr) == (2, "", "")
    assert fleet.file.read_text().startswith("# HELP ")
    # Nothing left beside it: the temporary file was renamed.
    assert [p.name for p in fleet.file.parent.iterdir()] == ["pg_tls.prom"]
    assert fleet.file.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_promtool_accepts_the_metrics(fleet: Fleet) -> None:
    code, said = promtool("check", "metrics", stdin=fleet.file.read_text())
    assert (code, said) == (0, "")


def test_blackbox_exporter_names_and_meanings(fleet: Fleet) -> None:
    samples = fleet.samples()
    t = fleet.targets
    assert samples["probe_success"] == {
        t["good"]: 1,
        t["expiring"]: 1,
        t["untrusted"]: 0,
        t["expired"]: 0,
        t["dead"]: 0,
    }
    # Expiry for every target that presented a certificate, trusted or not,
    # expired or not (blackbox_exporter's issue 1119).
    for name in ("probe_ssl_earliest_cert_expiry", "probe_ssl_last_chain_expiry_timestamp_seconds"):
        assert set(samples[name]) == {t["good"], t["expiring"], t["untrusted"], t["expired"]}
        for role in ("good", "expiring", "untrusted", "expired"):
            expected = fleet.json[t[role]]["not_after"]
            written = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(samples[name][t[role]]))
            assert written == expected, (name, role)
    assert samples["probe_ssl_last_chain_expiry_timestamp_seconds"][t["expired"]] < fleet.at
    assert set(samples["probe_duration_seconds"]) == set(t.values())
    assert all(0 <= v < 10 for v in samples["probe_duration_seconds"].values())
    assert {
        target: labels["version"]
        for target, labels in fleet.labels("probe_tls_version_info").items()
    } == {t[r]: "TLS 1.3" for r in ("good", "expiring", "untrusted", "expired")}
    leaf = fleet.json[t["good"]]["chain"][0]  # type: ignore[index]
    assert fleet.labels("probe_ssl_last_chain_info")[t["good"]] == {
        "target": t["good"],
        "fingerprint_sha256": leaf["sha256"],
        "subject": leaf["subject"],
        "issuer": "CN=check_pg_tls Test Intermediate,O=check_pg_tls tests",
        "subjectalternative": "db.test,db2.test",
        "serialnumber": leaf["serial"],
    }


def test_postgresql_own_metrics(fleet: Fleet) -> None:
    samples = fleet.samples()
    t = fleet.targets
    assert samples["pg_tls_state"] == {
        t["good"]: 0,
        t["expiring"]: 1,
        t["untrusted"]: 2,
        t["expired"]: 2,
        t["dead"]: 2,
    }
    checks = {
        (labels["target"], labels["check"]): value
        for family in text_string_to_metric_families(fleet.file.read_text())
        for sample in family.samples
        if sample.name == "pg_tls_check_state"
        for labels, value in [(sample.labels, sample.value)]
    }
    assert checks[(t["good"], "trust")] == 0
    assert checks[(t["good"], "expiry")] == 0
    assert checks[(t["expiring"], "expiry")] == 1
    assert checks[(t["untrusted"], "trust")] == 2
    assert checks[(t["expired"], "expiry")] == 2
    assert checks[(t["dead"], "connection")] == 2
    assert not any(target == t["dead"] and check != "connection" for target, check in checks)
    # One sample per finding: what the JSON document lists under checks.
    for role in ("good", "untrusted"):
        listed = set(fleet.json[t[role]]["checks"])  # type: ignore[arg-type]
        assert {c for target, c in checks if target == t[role]} == listed | {"expiry"}
    assert fleet.labels("pg_tls_error_info") == {
        t["dead"]: {"target": t["dead"], "reason": "connection refused"}
    }
    negotiation = fleet.labels("pg_tls_negotiation_info")[t["good"]]
    assert (negotiation["negotiation"], negotiation["alpn"]) == ("postgres", "")


def test_no_metric_counts_in_days(fleet: Fleet) -> None:
    names = {f.name for f in text_string_to_metric_families(fleet.file.read_text())}
    assert not [name for name in names if "day" in name]


@pytest.fixture(scope="module")
def node_exporter(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeExporter]:
    exporter = NodeExporter(tmp_path_factory.mktemp("node_exporter"), fleet.file.parent)
    exporter.start()
    yield exporter
    exporter.stop()


def test_node_exporter_serves_the_file(node_exporter: NodeExporter, fleet: Fleet) -> None:
    served = node_exporter.metrics()
    assert "node_textfile_scrape_error 0" in served
    good = fleet.targets["good"]
    assert f'probe_success{{target="{good}"}} 1' in served
    assert f'pg_tls_state{{target="{fleet.targets["expiring"]}"}} 1' in served


class _OpenMetricsHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header(
            "Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8"
        )
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def openmetrics_endpoint(fleet: Fleet, ca: Pki) -> Iterator[str]:
    """The OpenMetrics variant of a good target's metrics, served as a scrape target."""
    result = run_plugin(
        fleet.targets["good"],
        "--openmetrics",
        "--metrics-format",
        "openmetrics",
        "--sslrootcert",
        str(ca.root_file),
    )
    assert result.returncode == 0, result.stdout
    handler = type("Handler", (_OpenMetricsHandler,), {"body": result.stdout.encode()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def prometheus(
    node_exporter: NodeExporter,
    openmetrics_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"),
        {"node": f"127.0.0.1:{node_exporter.port}", "openmetrics": openmetrics_endpoint},
        rule_files=[RULES],
    )
    server.start()
    yield server
    server.stop()


def test_prometheus_query_gives_the_days_left(prometheus: PrometheusServer, fleet: Fleet) -> None:
    t = fleet.targets
    days = prometheus.wait_for(
        '(probe_ssl_last_chain_expiry_timestamp_seconds{job="node"} - time()) / 86400',
        lambda found: len(found) == 4,
    )
    elapsed = (time.time() - fleet.at) / DAY
    for role in ("good", "expiring", "untrusted", "expired"):
        # What the check itself said in days, give or take the time since.
        said = fleet.json[t[role]]["days_left"]
        assert isinstance(said, float)
        assert said - elapsed - 0.01 < days[t[role]] <= said + 0.01, role
    assert 89 < days[t["good"]] < 90.1
    assert 18 < days[t["expiring"]] < 18.6
    assert 89 < days[t["untrusted"]] < 90.1
    assert -2.1 < days[t["expired"]] < -1.9
    success = prometheus.query('probe_success{job="node"}')
    assert success[t["dead"]] == 0 and success[t["good"]] == 1
    assert prometheus.query('pg_tls_error_info{job="node"}') == {t["dead"]: 1}
    # The staleness rule's selector matches what node_exporter reports.
    assert len(prometheus.query('node_textfile_mtime_seconds{file=~"(.*/)?pg_tls\\\\.prom"}')) == 1


def test_prometheus_reads_the_openmetrics_variant(
    prometheus: PrometheusServer, fleet: Fleet
) -> None:
    # Prometheus parses application/openmetrics-text strictly (# EOF, types,
    # units); a failed parse would leave up at 0 and no sample.
    up = prometheus.wait_for('up{job="openmetrics"}', lambda found: bool(found))
    assert list(up.values()) == [1]
    found = prometheus.wait_for(
        'probe_ssl_last_chain_info{job="openmetrics"}', lambda found: bool(found)
    )
    assert list(found) == [fleet.targets["good"]]


def test_loaded_rules_alert_on_the_expiring_target_only(
    prometheus: PrometheusServer, fleet: Fleet
) -> None:
    t = fleet.targets

    def alerts() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for alert in prometheus.api("alerts")["alerts"]:
            found.setdefault(alert["labels"]["alertname"], set()).add(
                alert["labels"].get("target", "")
            )
        return found

    deadline = time.monotonic() + 30
    while "PgTlsClientsCannotConnect" not in alerts() and time.monotonic() < deadline:
        time.sleep(0.2)
    # Pending (their "for" has not passed), but there, and only for these.
    active = alerts()
    assert active["PgTlsCertificateExpiresSoon"] == {t["expiring"]}
    assert active["PgTlsCertificateExpiresVerySoon"] == {t["expired"]}
    assert active["PgTlsClientsCannotConnect"] == {t["untrusted"], t["expired"], t["dead"]}
    assert "PgTlsCheckFailed" not in active


def test_promtool_checks_the_rules_and_their_tests() -> None:
    code, said = promtool("check", "rules", str(RULES))
    assert code == 0, said
    assert "SUCCESS: 6 rules found" in said
    code, said = promtool("test", "rules", str(RULES_TEST))
    assert code == 0, said


def test_rules_fire_for_the_expiring_target_not_the_good_one(fleet: Fleet, tmp_path: Path) -> None:
    # promtool's clock starts at 0: each expiry becomes the seconds it had
    # left when the plugin wrote it.
    expiry = fleet.samples()["probe_ssl_last_chain_expiry_timestamp_seconds"]
    good, expiring = fleet.targets["good"], fleet.targets["expiring"]
    series = [
        {
            "series": f'probe_ssl_last_chain_expiry_timestamp_seconds{{target="{target}"}}',
            "values": f"{expiry[target] - fleet.at:.0f}+0x180",
        }
        for target in (good, expiring)
    ]
    alerts = 'ALERTS{alertname=~"PgTlsCertificateExpires.*", alertstate="firing"}'
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": alerts,
                        "eval_time": "2h",
                        "exp_samples": [
                            {
                                "labels": 'ALERTS{alertname="PgTlsCertificateExpiresSoon",'
                                f'alertstate="firing",severity="warning",target="{expiring}"}}',
                                "value": 1,
                            }
                        ],
                    },
                    # Not yet firing: "for" has not passed.
                    {"expr": alerts, "eval_time": "30m", "exp_samples": []},
                ],
            }
        ],
    }
    path = tmp_path / "fleet.test.yml"
    path.write_text(json.dumps(tests))
    code, said = promtool("test", "rules", str(path))
    assert code == 0, said


def test_dashboard_is_json_and_asks_only_for_metrics_we_write(fleet: Fleet) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    written = {f.name for f in text_string_to_metric_families(fleet.file.read_text())}
    written |= {
        s.name for f in text_string_to_metric_families(fleet.file.read_text()) for s in f.samples
    }
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert titles[:2] == ["Days left per target", "Targets by state"]
    assert "Findings" in titles
    import re

    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b((?:probe|pg_tls)_\w+)", target["expr"]))
            assert names and names <= written, (panel["title"], names - written)


def test_openmetrics_variant_ends_in_eof(fleet: Fleet, ca: Pki) -> None:
    result = run_plugin(
        fleet.targets["good"],
        "--openmetrics",
        "--metrics-format",
        "openmetrics",
        "--sslrootcert",
        str(ca.root_file),
    )
    assert result.returncode == 0
    assert result.stdout.endswith("\n# EOF\n")
    families = {f.name: f for f in parse_openmetrics(result.stdout)}
    assert families["probe_ssl_last_chain"].type == "info"
    assert families["probe_duration_seconds"].unit == "seconds"


def _series(text: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample's name and label set, in the order written."""
    return [
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def test_a_target_named_twice_is_one_series_and_two_checks_of_one_server_are_two(
    server: ServerFactory, ca: Pki, tmp_path: Path
) -> None:
    port = server("valid").port
    good = f"127.0.0.1(db.test):{port}"
    listed = tmp_path / "targets"
    listed.write_text(
        "\n".join(
            [
                good,
                good,  # listed twice: the same check
                f"host=db.test,db.test hostaddr=127.0.0.1,127.0.0.1 port={port}",  # a host twice
                f"postgresql://db.test:{port},db.test:{port}/x?hostaddr=127.0.0.1,127.0.0.1",
                # Two other checks of the same server: told apart by their settings.
                f"host=db.test hostaddr=127.0.0.1 port={port} sslmode=require",
                f"host=db.test hostaddr=127.0.0.1 port={port} sslmode=verify-ca",
            ]
        )
        + "\n"
    )
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    out = textfiles / "pg_tls.prom"
    common = ("--targets-file", str(listed), "--sslrootcert", str(ca.root_file))
    run = run_plugin(*common, "--openmetrics", "--output", str(out))
    assert (run.returncode, run.stdout) == (0, "")
    names = [
        good,
        f"{good} (sslmode=require)",
        f"{good} (sslmode=verify-ca)",
    ]
    written = out.read_text()
    series = _series(written)
    assert len(series) == len(set(series)), written
    assert sorted(_targets(written, "probe_success")) == sorted(names)
    assert promtool("check", "metrics", stdin=written) == (0, "")
    # The OpenMetrics parser refuses a sample written twice.
    strict = run_plugin(*common, "--openmetrics", "--metrics-format", "openmetrics")
    assert len(list(parse_openmetrics(strict.stdout))) > 0
    # node_exporter serves every series, and has nothing to complain about.
    (tmp_path / "node_exporter").mkdir()
    exporter = NodeExporter(tmp_path / "node_exporter", textfiles)
    exporter.start()
    try:
        served = exporter.metrics()
    finally:
        exporter.stop()
    assert "node_textfile_scrape_error 0" in served
    assert "collected before" not in exporter.log(), exporter.log()
    assert sorted(_targets(served, "probe_success")) == sorted(names)
    # Every other format names the same three checks.
    document = json.loads(run_plugin(*common, "--json").stdout)
    assert [t["target"] for t in document["targets"]] == names
    tap = run_plugin(*common, "--tap").stdout.splitlines()
    assert tap[1] == "1..3"
    described = [line.split(" - ", 1)[1] for line in tap[2:]]
    assert [text[: len(name) + 1] for text, name in zip(described, names, strict=True)] == [
        f"{name} " for name in names
    ]
    nagios = run_plugin(*common)
    assert nagios.status_line.startswith("PG_TLS OK - all 3 servers OK")
    labels = [item.split("=")[0] for item in nagios.status_line.split(" | ")[1].split()]
    assert len(labels) == len(set(labels))
    assert f"db_test_{port}_sslmode_require_days_left" in labels


def _targets(text: str, name: str) -> list[str]:
    return [dict(labels)["target"] for sample, labels in _series(text) if sample == name]
