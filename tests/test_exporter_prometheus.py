"""A real Prometheus scrapes pg_tls_exporter with the shipped scrape jobs and rules.

The jobs of ``prometheus/pg_tls_exporter-scrape.yml`` (the blackbox
relabelling; two exporters sharded by ``hashmod``) are loaded with only
their targets and the exporters' addresses replaced; Debian's Prometheus
scrapes real PostgreSQL servers through them, and PromQL over its HTTP API
gives the days left per ``instance``, ``probe_success`` 0 for a dead port,
every sharded target exactly once, and the shipped alerts for the exporter
route.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.exporter import ExporterProcess
from testbed.faults import RefusedPort
from testbed.pgcluster import Cluster
from testbed.prometheus import PrometheusServer

from .conftest import Pki

ServerFactory = Callable[[str], Cluster]
SHIPPED = Path(__file__).parent.parent / "prometheus"
DAY = 86400


@dataclass
class Scraped:
    prometheus: PrometheusServer
    #: Target spec by role: good, expiring, untrusted, dead.
    targets: dict[str, str]
    #: Every target of the sharded jobs, and the exporter each job points at.
    sharded: list[str]
    shards: dict[str, ExporterProcess]


def _shard(address: str, modulus: int) -> int:
    # Prometheus' hashmod: the last 8 bytes of the MD5 of the source labels.
    return int.from_bytes(hashlib.md5(address.encode()).digest()[8:], "big") % modulus


def _jobs(
    targets: list[str], sharded: list[str], exporters: list[ExporterProcess]
) -> list[dict[str, Any]]:
    jobs = {
        job["job_name"]: job
        for job in yaml.safe_load((SHIPPED / "pg_tls_exporter-scrape.yml").read_text())
    }
    single = jobs["pg_tls"]
    single["static_configs"] = [{"targets": targets}]
    single["relabel_configs"][-1]["replacement"] = exporters[0].address
    out = [single]
    for index, exporter in enumerate(exporters):
        job = jobs[f"pg_tls_shard_{index}"]
        job["static_configs"] = [{"targets": sharded}]
        job["relabel_configs"][-1]["replacement"] = exporter.address
        out.append(job)
    for job in out:
        # Quick rounds for the test; the probe gets 2 s minus the offset.
        job["scrape_interval"] = job["scrape_timeout"] = "2s"
    own = jobs["pg_tls_exporter"]
    own["static_configs"] = [{"targets": [e.address for e in exporters]}]
    return [*out, own]


@pytest.fixture(scope="module")
def scraped(
    server: ServerFactory, ca: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scraped]:
    path = tmp_path_factory.mktemp("exporter-prometheus")
    config = path / "pg_tls_exporter.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {"default": {"sslrootcert": str(ca.root_file)}},
                "allowed_targets": ["127.0.0.1", "::1", "*.test"],
            }
        )
    )
    valid = server("valid").port
    with RefusedPort() as dead:
        targets = {
            "good": f"127.0.0.1(db.test):{valid}",
            "expiring": f"127.0.0.1(db.test):{server('expiring_warn').port}",
            "untrusted": f"127.0.0.1(db.test):{server('unknown_ca').port}",
            "dead": f"127.0.0.1:{dead.port}",
        }
        sharded = [
            *targets.values(),
            f"127.0.0.1(db2.test):{valid}",
            f"127.0.0.1:{valid}",
            f"[::1](db.test):{valid}",
            f"127.0.0.1(db3.test):{valid}",
        ]
        exporters = [ExporterProcess(path, config).start() for _ in range(2)]
        prometheus = PrometheusServer(
            path / "prometheus",
            {},
            rule_files=[SHIPPED / "pg_tls-alerts.yml"],
            scrape_configs=_jobs(list(targets.values()), sharded, exporters),
        )
        prometheus.start()
        yield Scraped(prometheus, targets, sharded, {"0": exporters[0], "1": exporters[1]})
        prometheus.stop()
        for exporter in exporters:
            exporter.stop()


def test_promql_gives_the_days_left_per_instance(scraped: Scraped) -> None:
    t, prometheus = scraped.targets, scraped.prometheus
    days = prometheus.wait_for(
        '(probe_ssl_last_chain_expiry_timestamp_seconds{job="pg_tls"} - time()) / 86400',
        lambda found: len(found) == 3,
        label="instance",
    )
    assert set(days) == {t["good"], t["expiring"], t["untrusted"]}
    assert 89 < days[t["good"]] < 90.1
    assert 18 < days[t["expiring"]] < 18.6
    assert 89 < days[t["untrusted"]] < 90.1
    success = prometheus.wait_for(
        'probe_success{job="pg_tls"}', lambda found: len(found) == 4, label="instance"
    )
    assert success == {t["good"]: 1, t["expiring"]: 1, t["untrusted"]: 0, t["dead"]: 0}
    up = prometheus.query('up{job="pg_tls"}', label="instance")
    assert up == dict.fromkeys(t.values(), 1)
    assert prometheus.query('pg_tls_error_info{job="pg_tls"}', label="instance") == {t["dead"]: 1}
    # No target label came from the exporter: the instance is the target.
    assert prometheus.query('count(probe_success{job="pg_tls", target!=""})') == {}


def test_sharded_exporters_scrape_every_target_exactly_once(scraped: Scraped) -> None:
    prometheus = scraped.prometheus
    found = prometheus.wait_for(
        'count by (instance) (probe_success{job=~"pg_tls_shard_.*"})',
        lambda found: len(found) == len(scraped.sharded),
        label="instance",
    )
    assert found == dict.fromkeys(scraped.sharded, 1)
    for shard in ("0", "1"):
        jobs = prometheus.query(f'probe_success{{job="pg_tls_shard_{shard}"}}', label="instance")
        expected = {target for target in scraped.sharded if str(_shard(target, 2)) == shard}
        assert set(jobs) == expected, shard
    # Each exporter probed what its shard holds, and only that.
    for shard, exporter in scraped.shards.items():
        assert prometheus.query(
            f'up{{job="pg_tls_shard_{shard}"}}', label="instance"
        ) == dict.fromkeys([t for t in scraped.sharded if str(_shard(t, 2)) == shard], 1), (
            exporter.address
        )
    exporters = prometheus.wait_for(
        'pg_tls_exporter_config_last_reload_successful{job="pg_tls_exporter"}',
        lambda found: len(found) == 2,
        label="instance",
    )
    assert exporters == {e.address: 1 for e in scraped.shards.values()}


def test_the_shipped_alerts_fire_for_the_exporter_route(scraped: Scraped) -> None:
    t, prometheus = scraped.targets, scraped.prometheus

    def alerts() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for alert in prometheus.api("alerts")["alerts"]:
            if alert["labels"].get("job") == "pg_tls":
                found.setdefault(alert["labels"]["alertname"], set()).add(
                    alert["labels"].get("target", "")
                )
        return found

    # Each rule fires once its targets have been scraped and the rules
    # evaluated: wait for every expected alert, not only for one of them.
    def all_there(found: dict[str, set[str]]) -> bool:
        return (
            len(found.get("PgTlsClientsCannotConnect", ())) >= 2
            and "PgTlsCertificateExpiresSoon" in found
        )

    deadline = time.monotonic() + 30
    while not all_there(alerts()) and time.monotonic() < deadline:
        time.sleep(0.2)
    active = alerts()
    assert active["PgTlsCertificateExpiresSoon"] == {t["expiring"]}
    assert active["PgTlsClientsCannotConnect"] == {t["untrusted"], t["dead"]}
    assert "PgTlsCertificateExpiresVerySoon" not in active
    assert "PgTlsCheckFailed" not in active
