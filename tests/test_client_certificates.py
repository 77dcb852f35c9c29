"""Client certificates, as pgbouncer and PostgreSQL ask for them.

pgbouncer with ``client_tls_sslmode`` verify-ca or verify-full refuses a
client without a certificate: inside the handshake under TLS 1.2, on the
first read after it under TLS 1.3. Either way the server's own chain is
judged, and the refusal is named. psql shows that libpq fails the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from testbed import pki
from testbed.pgbouncer import PgBouncer
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, Run, check_local, psql_connects, run_plugin


@dataclass
class Client:
    cert: Path
    key: Path


@dataclass
class ClientPki:
    ca_file: Path
    good: Client
    expiring: Client
    rogue: Client


def _client(folder: Path, name: str, issued: pki.Issued) -> Client:
    cert = pki.write_pem(folder / f"{name}.crt", issued)
    key = folder / f"{name}.key"
    key.write_bytes(issued.key_pem)
    os.chmod(key, 0o600)
    return Client(cert, key)


@pytest.fixture(scope="module")
def clients(workspace: Workspace) -> ClientPki:
    client_ca = pki.make_root("Client CA")
    rogue_ca = pki.make_root("Rogue CA")
    folder = workspace.new_dir("clients")
    ca_file = pki.write_pem(folder / "client-ca.crt", client_ca)
    os.chmod(ca_file, 0o644)

    def issue(issuer: pki.Issued, days: float = 90) -> pki.Issued:
        return pki.make_leaf(
            issuer, dns=(), common_name="postgres", server_auth=False, days_after=days
        )

    return ClientPki(
        ca_file=ca_file,
        good=_client(folder, "good", issue(client_ca)),
        expiring=_client(folder, "expiring", issue(client_ca, 10.5)),
        rogue=_client(folder, "rogue", issue(rogue_ca)),
    )


@pytest.fixture(scope="module")
def bouncers(
    server: Callable[[str], Cluster], ca: Pki, clients: ClientPki
) -> Iterator[dict[tuple[str, str], PgBouncer]]:
    leaf = pki.make_leaf(ca.intermediate)
    started = {}
    for mode in ("verify-ca", "verify-full"):
        for protocol in ("tlsv1.2", "tlsv1.3"):
            bouncer = PgBouncer(
                server("valid"),
                [leaf, ca.intermediate],
                leaf,
                settings={
                    "client_tls_sslmode": mode,
                    "client_tls_ca_file": str(clients.ca_file),
                    "client_tls_protocols": protocol,
                },
                name=f"bouncer-{mode}-{protocol}",
            )
            started[(mode, protocol)] = bouncer.start()
    yield started
    for bouncer in started.values():
        bouncer.stop()


def check(bouncer: PgBouncer, ca: Pki, *args: str) -> Run:
    return check_local(bouncer.port, ca.root_file, *args, servername="db.test")


def with_cert(client: Client) -> tuple[str, ...]:
    return ("--sslcert", str(client.cert), "--sslkey", str(client.key))


MODES = [
    pytest.param(mode, protocol, id=f"{mode}-{protocol}")
    for mode in ("verify-ca", "verify-full")
    for protocol in ("tlsv1.2", "tlsv1.3")
]


@pytest.mark.parametrize(("mode", "protocol"), MODES)
def test_missing_client_certificate_is_named_and_the_chain_still_judged(
    bouncers: dict[tuple[str, str], PgBouncer], ca: Pki, psql_home: Path, mode: str, protocol: str
) -> None:
    bouncer = bouncers[(mode, protocol)]
    assert not _psql_through(bouncer, psql_home, ca, ())
    result = check(bouncer, ca)
    assert result.returncode == 2, result.stdout
    assert "server requires a client certificate (give --sslcert and --sslkey)" in (
        result.status_line
    )
    # The server's own certificate was still seen and judged.
    assert "certificate expires in 89 days" in result.status_line
    assert "trusted root" not in result.status_line
    assert float(result.perfdata["days_left"].split(";")[0]) > 89


@pytest.mark.parametrize(("mode", "protocol"), MODES)
def test_good_client_certificate_is_accepted(
    bouncers: dict[tuple[str, str], PgBouncer],
    ca: Pki,
    clients: ClientPki,
    psql_home: Path,
    mode: str,
    protocol: str,
) -> None:
    bouncer = bouncers[(mode, protocol)]
    assert _psql_through(bouncer, psql_home, ca, with_cert(clients.good))
    result = check(bouncer, ca, *with_cert(clients.good), "-v")
    assert result.returncode == 0, result.stdout
    assert "client_certificate: server accepted the client certificate" in result.stdout
    assert float(result.perfdata["client_days_left"].split(";")[0]) > 89


@pytest.mark.parametrize("protocol", ["tlsv1.2", "tlsv1.3"])
def test_client_certificate_from_an_unknown_ca_is_refused(
    bouncers: dict[tuple[str, str], PgBouncer],
    ca: Pki,
    clients: ClientPki,
    psql_home: Path,
    protocol: str,
) -> None:
    bouncer = bouncers[("verify-ca", protocol)]
    assert not _psql_through(bouncer, psql_home, ca, with_cert(clients.rogue))
    result = check(bouncer, ca, *with_cert(clients.rogue))
    assert result.returncode == 2, result.stdout
    assert "server refuses the client certificate: the server does not trust its CA" in (
        result.status_line
    )


def test_expiring_client_certificate_is_critical_by_the_thresholds(
    bouncers: dict[tuple[str, str], PgBouncer], ca: Pki, clients: ClientPki
) -> None:
    result = check(bouncers[("verify-ca", "tlsv1.3")], ca, *with_cert(clients.expiring))
    assert result.returncode == 2, result.stdout
    assert "client certificate expires in 10 days" in result.status_line
    assert result.perfdata["client_days_left"].startswith("10.")


@pytest.mark.serial
def test_server_that_asks_in_every_handshake_costs_little(
    workspace: Workspace, ca: Pki, clients: ClientPki
) -> None:
    # PostgreSQL with ssl_ca_file asks for a client certificate but lets a
    # client without one finish the handshake: OK, no claim about logins,
    # and no long wait.
    leaf = pki.make_leaf(ca.intermediate)
    folder = workspace.new_dir("asks")
    ca_copy = folder / "client-ca.crt"
    ca_copy.write_bytes(clients.ca_file.read_bytes())
    os.chmod(ca_copy, 0o644)
    cluster = workspace.cluster(
        [leaf, ca.intermediate], leaf, {"ssl_ca_file": f"'{ca_copy}'"}, name="asks"
    ).start()
    try:
        started = time.monotonic()
        result = check_local(cluster.port, ca.root_file, "-v", servername="db.test")
        elapsed = time.monotonic() - started
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stdout
    # Whether pg_hba.conf wants one is decided only after a StartupMessage:
    # the handshake alone proves nothing either way.
    assert "does not require" not in result.stdout
    assert (
        "client_certificate: server asks for a client certificate and completes the TLS "
        "handshake without one; whether a login needs one (pg_hba.conf clientcert or cert) "
        "is decided after the StartupMessage (only a login can tell: --check-auth USER)"
    ) in result.stdout
    assert elapsed < 2.0


def test_sslkey_without_sslcert_is_a_bad_option() -> None:
    result = run_plugin("-H", "127.0.0.1", "--sslkey", "/nonexistent.key")
    assert result.returncode == 3
    assert result.stdout == "PG_TLS UNKNOWN - --sslkey needs --sslcert\n"


def test_unreadable_client_certificate_is_unknown(tmp_path: Path) -> None:
    result = run_plugin("-H", "127.0.0.1", "--sslcert", str(tmp_path / "absent.crt"))
    assert result.returncode == 3
    assert "cannot read client certificate file" in result.status_line


def _psql_through(bouncer: PgBouncer, home: Path, ca: Pki, cert_args: tuple[str, ...]) -> bool:
    """psql through the bouncer, with or without a client certificate."""
    extra = ["sslcert=" + str(home / "none.crt"), "sslkey=" + str(home / "none.key")]
    if cert_args:
        extra = [f"sslcert={cert_args[1]}", f"sslkey={cert_args[3]}"]
    proxy = cast(Cluster, SimpleNamespace(port=bouncer.port))
    return psql_connects(proxy, home, "db.test", "verify-full", str(ca.root_file), tuple(extra))
