"""The test servers themselves: PostgreSQL 18 (both TLS negotiation styles)
and pgbouncer (with and without TLS). Raw sockets and Python's ssl only."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from testbed import pki
from testbed.pg18 import pg18_bindir
from testbed.pgbouncer import PgBouncer
from testbed.pgcluster import Cluster, Workspace

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@pytest.fixture(scope="module")
def certs() -> tuple[pki.Issued, pki.Issued, pki.Issued]:
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    return root, inter, pki.make_leaf(inter, dns=("db.test",), ips=("127.0.0.1", "::1"))


@pytest.fixture(scope="module")
def pg18(certs: tuple[pki.Issued, pki.Issued, pki.Issued]) -> Iterator[Cluster]:
    _, inter, leaf = certs
    space = Workspace(bindir=pg18_bindir())
    cluster = space.cluster([leaf, inter], leaf, {"listen_addresses": "'127.0.0.1,::1'"})
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        space.cleanup()


def context(root: pki.Issued, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=root.cert_pem.decode())
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def presented(tls: ssl.SSLSocket) -> list[bytes]:
    # Public from Python 3.13; before, only on the private _sslobj.
    sslobj = tls if hasattr(tls, "get_unverified_chain") else tls._sslobj  # type: ignore[attr-defined]
    chain = sslobj.get_unverified_chain()
    return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]


def der(*certs: pki.Issued) -> list[bytes]:
    return [c.cert.public_bytes(serialization.Encoding.DER) for c in certs]


def ssl_request(host: str, port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(SSL_REQUEST)
    return sock, sock.recv(1)


def wait_for(log: Callable[[], str], text: str, timeout: float = 5) -> str:
    end = time.monotonic() + timeout
    while text not in (seen := log()) and time.monotonic() < end:
        time.sleep(0.01)
    assert text in seen, seen
    return seen


def test_pg18_is_postgresql_18(pg18: Cluster) -> None:
    assert "starting PostgreSQL 18." in pg18.log()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_pg18_sslrequest_then_tls(
    pg18: Cluster, certs: tuple[pki.Issued, pki.Issued, pki.Issued], host: str
) -> None:
    root, inter, leaf = certs
    sock, answer = ssl_request(host, pg18.port)
    assert answer == b"S"
    with context(root, ["postgresql"]).wrap_socket(sock, server_hostname="db.test") as tls:
        assert presented(tls) == der(leaf, inter)
        assert tls.selected_alpn_protocol() == "postgresql"
        tls.unwrap()


def test_pg18_direct_tls_with_alpn(
    pg18: Cluster, certs: tuple[pki.Issued, pki.Issued, pki.Issued]
) -> None:
    root, inter, leaf = certs
    sock = socket.create_connection(("127.0.0.1", pg18.port), timeout=5)
    with context(root, ["postgresql"]).wrap_socket(sock, server_hostname="db.test") as tls:
        assert tls.selected_alpn_protocol() == "postgresql"
        assert presented(tls) == der(leaf, inter)
        tls.unwrap()


def test_pg18_direct_tls_without_alpn_handshakes_then_closes(
    pg18: Cluster, certs: tuple[pki.Issued, pki.Issued, pki.Issued]
) -> None:
    root, inter, leaf = certs
    sock = socket.create_connection(("127.0.0.1", pg18.port), timeout=5)
    with context(root).wrap_socket(sock, server_hostname="db.test") as tls:
        assert tls.selected_alpn_protocol() is None
        assert presented(tls) == der(leaf, inter)
        # The server sends close_notify and closes: a clean TLS EOF.
        assert tls.recv(1) == b""
    wait_for(pg18.log, "received direct SSL connection request without ALPN")


def test_pg18_direct_tls_with_other_alpn_is_refused(
    pg18: Cluster, certs: tuple[pki.Issued, pki.Issued, pki.Issued]
) -> None:
    root = certs[0]
    sock = socket.create_connection(("127.0.0.1", pg18.port), timeout=5)
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        context(root, ["http/1.1"]).wrap_socket(sock, server_hostname="db.test")
    sock.close()
    wait_for(pg18.log, "could not accept SSL connection: no application protocol")


def test_pg18_psql_connects_with_direct_negotiation(
    pg18: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # PostgreSQL 18's own psql (libpq 18): the oracle for sslnegotiation=direct.
    home = tmp_path_factory.mktemp("home")
    conninfo = (
        f"host=127.0.0.1 port={pg18.port} user=postgres dbname=postgres "
        f"sslmode=require sslnegotiation=direct sslrootcert={home / 'none.crt'} connect_timeout=10"
    )
    done = subprocess.run(
        [
            str(pg18_bindir() / "psql"),
            "-X",
            "-At",
            "-c",
            "select current_setting('server_version_num')",
            conninfo,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("18")


@pytest.fixture(scope="module")
def bouncer_leaf(certs: tuple[pki.Issued, pki.Issued, pki.Issued]) -> pki.Issued:
    return pki.make_leaf(certs[1], dns=("bouncer.test",), ips=("127.0.0.1",))


@pytest.fixture(scope="module")
def bouncers(
    server: Callable[[str], Cluster],
    certs: tuple[pki.Issued, pki.Issued, pki.Issued],
    bouncer_leaf: pki.Issued,
) -> Iterator[tuple[PgBouncer, PgBouncer]]:
    # In front of a PostgreSQL 15 cluster of the shared session workspace.
    backend = server("valid")
    chain = [bouncer_leaf, certs[1]]
    with PgBouncer(backend, chain, bouncer_leaf) as tls, PgBouncer(backend, host="::1") as plain:
        yield tls, plain


def test_pgbouncer_tls_answers_s_and_presents_its_chain(
    bouncers: tuple[PgBouncer, PgBouncer],
    certs: tuple[pki.Issued, pki.Issued, pki.Issued],
    bouncer_leaf: pki.Issued,
) -> None:
    bouncer = bouncers[0]
    root, inter, _ = certs
    sock, answer = ssl_request("127.0.0.1", bouncer.port)
    assert answer == b"S"
    with context(root).wrap_socket(sock, server_hostname="bouncer.test") as tls:
        assert presented(tls) == der(bouncer_leaf, inter)
        tls.unwrap()
    assert f"listening on 127.0.0.1:{bouncer.port}" in bouncer.log()


def test_pgbouncer_plain_answers_n(bouncers: tuple[PgBouncer, PgBouncer]) -> None:
    plain = bouncers[1]
    sock, answer = ssl_request("::1", plain.port)
    with sock:
        assert answer == b"N"
    assert f"listening on [::1]:{plain.port}" in plain.log()
