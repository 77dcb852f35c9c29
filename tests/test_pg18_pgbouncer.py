"""The plugin against PostgreSQL 18 (direct TLS negotiation) and pgbouncer."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed import pki
from testbed.pg18 import pg18_bindir
from testbed.pgbouncer import PgBouncer
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, Run, check_local, run_plugin

NOISE = (
    "could not accept SSL connection",
    "invalid length of startup packet",
    "could not receive data from client",
    "unexpected eof",
    "FATAL",
    "ERROR",
    "without ALPN",
)


@pytest.fixture(scope="module")
def pg18(ca: Pki) -> Iterator[Cluster]:
    leaf = pki.make_leaf(ca.intermediate, dns=("db18.test",))
    space = Workspace(bindir=pg18_bindir())
    cluster = space.cluster([leaf, ca.intermediate], leaf)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        space.cleanup()


def check(port: int, ca: Pki, name: str, *args: str) -> Run:
    return check_local(port, ca.root_file, *args, servername=name)


def libpq18_connects(cluster: Cluster, ca: Pki, home: Path, negotiation: str) -> bool:
    conninfo = (
        f"host=db18.test hostaddr=127.0.0.1 port={cluster.port} sslmode=verify-full "
        f"sslrootcert={ca.root_file} sslnegotiation={negotiation} user=postgres "
        "dbname=postgres connect_timeout=10"
    )
    done = subprocess.run(
        [str(pg18_bindir() / "psql"), "-X", "-At", "-c", "select 1", conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env={"HOME": str(home)},
        stdin=subprocess.DEVNULL,
    )
    return done.returncode == 0 and done.stdout.strip() == "1"


@pytest.mark.parametrize("negotiation", ["postgres", "direct"])
def test_postgresql_18_both_negotiations(
    pg18: Cluster, ca: Pki, psql_home: Path, negotiation: str
) -> None:
    result = check(pg18.port, ca, "db18.test", "--negotiation", negotiation, "-v")
    assert result.returncode == 0, result.stdout
    assert result.status_line.startswith(f"PG_TLS OK - 127.0.0.1(db18.test):{pg18.port}: ")
    # The server chose ALPN postgresql: proof that the direct path was taken.
    assert "alpn postgresql" in result.stdout
    # libpq 18 agrees, with the same negotiation.
    assert libpq18_connects(pg18, ca, psql_home, negotiation)


def test_postgresql_18_probes_leave_no_error_lines(pg18: Cluster, ca: Pki) -> None:
    before = len(pg18.log().splitlines())
    for args in (
        ["--negotiation", "direct"],
        ["--negotiation", "postgres"],
        ["--negotiation", "direct", "--servername", "wrong.test"],
    ):
        assert run_plugin(
            "-H",
            "127.0.0.1",
            "-p",
            str(pg18.port),
            "--sslrootcert",
            str(ca.root_file),
            "--servername",
            "db18.test",
            *args,
        ).returncode in (0, 2)
    pg18.wait_for_backends()
    new = pg18.log().splitlines()[before:]
    assert sum("connection received" in line for line in new) == 3
    for line in new:
        assert not any(noise in line for noise in NOISE), line


def test_postgresql_18_direct_with_wrong_name_is_critical(pg18: Cluster, ca: Pki) -> None:
    result = check(pg18.port, ca, "db.test", "--negotiation", "direct")
    assert result.returncode == 2
    assert "certificate is not valid for db.test (valid for db18.test)" in result.status_line


@pytest.fixture(scope="module")
def bouncers(server: Callable[[str], Cluster], ca: Pki) -> Iterator[tuple[PgBouncer, PgBouncer]]:
    leaf = pki.make_leaf(ca.intermediate, dns=("bouncer.test",))
    with (
        PgBouncer(server("valid"), [leaf, ca.intermediate], leaf) as tls,
        PgBouncer(server("valid"), name="plain") as plain,
    ):
        yield tls, plain


def test_pgbouncer_with_tls_serves_its_own_chain(
    bouncers: tuple[PgBouncer, PgBouncer], ca: Pki
) -> None:
    tls, _ = bouncers
    result = check(tls.port, ca, "bouncer.test", "-v")
    assert result.returncode == 0, result.stdout
    assert "names: bouncer.test" in result.stdout
    # The database behind it has another certificate; the bouncer's is what clients see.
    wrong = check(tls.port, ca, "db.test")
    assert wrong.returncode == 2
    assert "certificate is not valid for db.test (valid for bouncer.test)" in wrong.status_line
    assert "TLS handshake error" not in tls.log()


def test_pgbouncer_without_tls_is_critical(bouncers: tuple[PgBouncer, PgBouncer], ca: Pki) -> None:
    _, plain = bouncers
    result = check(plain.port, ca, "bouncer.test")
    assert result.returncode == 2
    assert result.status_line.split(" | ")[0] == (
        f"PG_TLS CRITICAL - 127.0.0.1(bouncer.test):{plain.port}: "
        "server does not offer TLS (it answered N to the SSLRequest)"
    )


def test_pgbouncer_does_not_do_direct_tls(bouncers: tuple[PgBouncer, PgBouncer], ca: Pki) -> None:
    tls, _ = bouncers
    result = check(tls.port, ca, "bouncer.test", "--negotiation", "direct")
    assert result.returncode == 2, result.stdout
    assert "server does not support direct TLS negotiation" in result.status_line


def test_a_connection_string_with_direct_negotiation_is_labelled_direct(
    pg18: Cluster, ca: Pki, tmp_path: Path
) -> None:
    # The run's --negotiation is postgres; the string's own sslnegotiation wins,
    # and every output says how this target was checked.
    import json
    from urllib.parse import quote

    from prometheus_client.parser import text_string_to_metric_families

    from testbed.exporter import ExporterProcess

    spec = f"host=db18.test hostaddr=127.0.0.1 port={pg18.port} sslnegotiation=direct"

    def negotiation_labels(text: str) -> list[tuple[str, str]]:
        return [
            (sample.labels["negotiation"], sample.labels["alpn"])
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "pg_tls_negotiation_info"
        ]

    metrics = run_plugin(spec, "--sslrootcert", str(ca.root_file), "--openmetrics")
    assert metrics.returncode == 0, metrics.stdout
    assert negotiation_labels(metrics.stdout) == [("direct", "postgresql")]

    document = run_plugin(spec, "--sslrootcert", str(ca.root_file), "--json")
    (target,) = json.loads(document.stdout)["targets"]
    assert (target["state"], target["negotiation"]) == ("OK", "direct")
    assert target["tls"]["alpn"] == "postgresql"

    config = tmp_path / "exporter.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {"default": {"sslrootcert": str(ca.root_file), "timeout": 5}},
                "allowed_targets": ["127.0.0.1", "db18.test"],
            }
        )
    )
    exporter = ExporterProcess(tmp_path, config).start()
    try:
        answer = exporter.get(f"/probe?target={quote(spec)}")
    finally:
        exporter.stop()
    assert answer.status == 200, answer.body
    assert negotiation_labels(answer.body) == [("direct", "postgresql")]
    # The server's own proof: it completed a direct handshake, with ALPN.
    assert "without ALPN" not in pg18.log()
