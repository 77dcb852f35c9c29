"""pg_tls_exporter secured with exporter-toolkit's web configuration: TLS, client
certificates, bcrypt basic auth; the same file secures a real node_exporter."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from check_pg_tls.exporter.webconfig import FileError, load, san_allowed
from testbed import pki
from testbed.exporter import Answer, ExporterProcess
from testbed.pgcluster import Cluster, free_port, spawn_as
from testbed.prometheus import promtool

from .conftest import Pki

ServerFactory = Callable[[str], Cluster]
USER, PASSWORD = "prometheus", "correct horse battery staple"


@dataclass
class Secured:
    exporter: ExporterProcess
    web_config: Path
    #: A client with the right certificate (and no password).
    client: ssl.SSLContext
    #: Clients with no certificate, and one from a CA the exporter does not trust.
    anonymous: ssl.SSLContext
    stranger: ssl.SSLContext
    dir: Path


def _client(root: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _hash(password: str, prefix: str = "$2y$") -> str:
    # htpasswd writes $2y$; the bcrypt library writes $2b$: the same hash.
    return prefix + bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()[4:]


def _web_config(users: dict[str, str]) -> str:
    return json.dumps(
        {
            # Relative paths: relative to the file, as in exporter-toolkit.
            "tls_server_config": {
                "cert_file": "exporter.crt",
                "key_file": "exporter.key",
                "min_version": "TLS12",
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": "clients-ca.crt",
                "client_allowed_sans": ["prometheus.test"],
            },
            "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
            "basic_auth_users": users,
        }
    )


@pytest.fixture(scope="module")
def secured(ca: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    path = tmp_path_factory.mktemp("web")
    leaf = pki.make_leaf(ca.intermediate, dns=("localhost",), ips=("127.0.0.1",))
    pki.write_pem(path / "exporter.crt", leaf, ca.intermediate)
    (path / "exporter.key").write_bytes(leaf.key_pem)
    pki.write_pem(path / "clients-ca.crt", ca.other_root)
    client = pki.make_leaf(ca.other_intermediate, dns=("prometheus.test",), server_auth=False)
    pki.write_pem(path / "client.crt", client, ca.other_intermediate)
    (path / "client.key").write_bytes(client.key_pem)
    nameless = pki.make_leaf(ca.other_intermediate, dns=("grafana.test",), server_auth=False)
    pki.write_pem(path / "nameless.crt", nameless, ca.other_intermediate)
    (path / "nameless.key").write_bytes(nameless.key_pem)
    stranger = pki.make_leaf(ca.intermediate, dns=("prometheus.test",), server_auth=False)
    pki.write_pem(path / "stranger.crt", stranger, ca.intermediate)
    (path / "stranger.key").write_bytes(stranger.key_pem)
    web = path / "web-config.yml"
    web.write_text(_web_config({USER: _hash(PASSWORD)}))
    config = path / "pg_tls_exporter.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {"default": {"sslrootcert": str(ca.root_file)}},
                "allowed_targets": ["127.0.0.1", "*.test"],
            }
        )
    )
    good = _client(ca.root_file, path / "client.crt", path / "client.key")
    exporter = ExporterProcess(
        path,
        config,
        "--log.level=debug",
        "--web.request-timeout=2",
        web_config=web,
        tls=good,
        auth=(USER, PASSWORD),
    ).start()
    yield Secured(
        exporter,
        web,
        good,
        _client(ca.root_file),
        _client(ca.root_file, path / "stranger.crt", path / "stranger.key"),
        path,
    )
    exporter.stop()


def test_the_right_password_and_certificate_get_in(secured: Secured, server: ServerFactory) -> None:
    exporter = secured.exporter
    own = exporter.get("/metrics")
    assert own.status == 200
    assert own.headers["X-Content-Type-Options"] == "nosniff"
    probe = exporter.get(f"/probe?target=127.0.0.1(db.test):{server('valid').port}")
    assert probe.status == 200
    assert "probe_success 1.0" in probe.body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/probe?target=db.test"),
        ("GET", "/-/healthy"),
        ("POST", "/-/reload"),
        ("GET", "/no-such-page"),
    ],
)
def test_a_wrong_or_missing_password_is_401_everywhere(
    secured: Secured, method: str, path: str
) -> None:
    exporter = secured.exporter
    for auth in ((USER, "wrong"), ("nobody", PASSWORD), (USER, "")):
        answer = exporter.request(method, path, auth=auth)
        assert (answer.status, answer.headers["WWW-Authenticate"]) == (
            401,
            'Basic realm="pg_tls_exporter"',
        )
    none = _without_auth(exporter, method, path, secured.client)
    assert none.status == 401 and "WWW-Authenticate" in none.headers


def _without_auth(exporter: ExporterProcess, method: str, path: str, tls: ssl.SSLContext) -> Answer:
    conn = http.client.HTTPSConnection("127.0.0.1", exporter.port, timeout=10, context=tls)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read().decode())
    finally:
        conn.close()


def test_no_answer_without_a_trusted_client_certificate(secured: Secured, ca: Pki) -> None:
    exporter = secured.exporter
    nameless = _client(ca.root_file, secured.dir / "nameless.crt", secured.dir / "nameless.key")
    for context in (secured.anonymous, secured.stranger, nameless):
        with pytest.raises(OSError):
            exporter.get("/-/healthy", tls=context)
    # Nor over plain HTTP: as Go's server, a 400 that says why, in plain HTTP.
    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10)
    try:
        conn.request("GET", "/-/healthy")
        response = conn.getresponse()
        plain = (response.status, response.read())
    finally:
        conn.close()
    assert plain == (400, b"Client sent an HTTP request to an HTTPS server.\n")
    exporter.wait_logged("client certificate of 127.0.0.1 has none of client_allowed_sans")


def test_a_changed_hash_is_read_and_no_cached_success_outlives_it(secured: Secured) -> None:
    exporter, web = secured.exporter, secured.web_config
    assert exporter.get("/-/healthy").status == 200  # verified, and remembered
    before = web.read_text()
    try:
        web.write_text(_web_config({USER: _hash("a new password", "$2b$")}))
        assert exporter.get("/-/healthy").status == 401
        assert exporter.get("/-/healthy", auth=(USER, "a new password")).status == 200
        web.write_text(_web_config({USER: _hash(PASSWORD, "$2a$")}))
        assert exporter.get("/-/healthy", auth=(USER, "a new password")).status == 401
        assert exporter.get("/-/healthy").status == 200
    finally:
        web.write_text(before)


def test_a_web_config_that_no_longer_loads_lets_nothing_through(secured: Secured) -> None:
    exporter, web = secured.exporter, secured.web_config
    before = web.read_text()
    try:
        web.write_text(before.replace('"basic_auth_users"', '"basic_auth_user"'))
        with pytest.raises(OSError):
            exporter.get("/-/healthy")
        assert "web configuration changed and does not load" in exporter.log()
    finally:
        web.write_text(before)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if exporter.get("/-/healthy").status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the restored web configuration was not read again")


def test_the_log_holds_no_credentials(secured: Secured) -> None:
    secured.exporter.get("/metrics")
    secured.exporter.get("/metrics", auth=(USER, "a wrong one"))
    log = secured.exporter.wait_logged("GET /metrics 200", "GET /metrics 401")
    for secret in (PASSWORD, "a wrong one", "Authorization", "Basic "):
        assert secret not in log


def test_the_same_file_secures_node_exporter(secured: Secured, tmp_path: Path) -> None:
    # Debian 12's node_exporter (1.5) predates client_allowed_sans (newer
    # exporter-toolkit reads it): the same file without that key.
    document = json.loads(secured.web_config.read_text())
    del document["tls_server_config"]["client_allowed_sans"]
    shared = secured.dir / "web-config-node.yml"
    shared.write_text(json.dumps(document))
    said = promtool("check", "web-config", str(shared))
    assert said[0] == 0, said
    program = shutil.which("prometheus-node-exporter", path="/usr/bin:/usr/sbin") or ""
    port = free_port()
    with open(tmp_path / "node.log", "wb") as log:
        process = spawn_as(
            None,
            [
                program,
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.config.file={shared}",
                "--collector.disable-defaults",
            ],
            log,
        )
    try:
        node = ExporterProcess(tmp_path, tmp_path, tls=secured.client, auth=(USER, PASSWORD))
        node.port = port
        deadline = time.monotonic() + 20
        while True:
            try:
                if node.get("/metrics").status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        assert node.get("/metrics", auth=(USER, "wrong")).status == 401
        with pytest.raises(OSError):
            node.get("/metrics", tls=secured.stranger)
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("tls_server_config:\n  cert_file: x\n  certfile: y\n", 3, "unknown key 'certfile'"),
        ("basic_auth_users:\n  alice: secret\n", 2, "is not a bcrypt hash"),
        ("unknown: 1\n", 1, "unknown key 'unknown'"),
        (
            "tls_server_config:\n  cert_file: {d}/exporter.crt\n  key_file: {d}/exporter.key\n"
            "  client_auth_type: RequireAnyClientCert\n",
            4,
            "RequireAnyClientCert is not supported",
        ),
        (
            "tls_server_config:\n  cert_file: {d}/exporter.crt\n  key_file: {d}/exporter.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            4,
            "RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: {d}/exporter.crt\n  key_file: {d}/exporter.key\n"
            "  client_ca_file: {d}/clients-ca.crt\n",
            None,
            "client CAs are given without a client auth type",
        ),
        (
            "tls_server_config:\n  cert_file: {d}/exporter.crt\n  key_file: {d}/exporter.key\n"
            "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            4,
            "cipher_suites: not supported",
        ),
        (
            "tls_server_config:\n  cert_file: {d}/exporter.crt\n  key_file: {d}/missing.key\n",
            2,
            "cannot load",
        ),
        (
            "tls_server_config:\n  cert_file: {d}/exporter.crt\n  key_file: {d}/exporter.key\n"
            "  min_version: TLS14\n",
            4,
            "unknown TLS version 'TLS14'",
        ),
        (
            "tls_server_config:\n  cert_file: {d}/exporter.crt\n  key_file: {d}/exporter.key\n"
            "  max_version: TLS11\n  min_version: TLS13\n",
            4,
            "min_version TLS13 is above max_version TLS11: no TLS version is left",
        ),
        ("http_server_config:\n  headers:\n    X-Frame-Options: always\n", 3, "X-Frame-Options"),
        ("rate_limit:\n  interval: soon\n", 2, "invalid interval"),
    ],
)
def test_web_config_errors(
    secured: Secured, tmp_path: Path, text: str, line: int | None, reason: str
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text.format(d=secured.dir))
    with pytest.raises(FileError) as caught:
        load(path)
    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(caught.value).startswith(where), str(caught.value)
    assert reason in str(caught.value)


def test_a_flood_without_client_certificates_does_not_keep_scrapes_out(secured: Secured) -> None:
    # A client with no certificate keeps 300 connections open (more than the
    # limit), never starting a handshake, and opens again each one closed.
    exporter = secured.exporter
    stop = threading.Event()

    def flood() -> None:
        socks: list[socket.socket] = []
        while not stop.is_set():
            alive = []
            for sock in socks:
                try:
                    if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                        sock.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    sock.close()
                    continue
                alive.append(sock)
            socks = alive
            while len(socks) < 300 and not stop.is_set():
                try:
                    socks.append(socket.create_connection(("127.0.0.1", exporter.port), 2))
                except OSError:
                    break
            stop.wait(0.1)
        for sock in socks:
            sock.close()

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        time.sleep(0.5)  # the flood is at its height
        statuses = []
        for _ in range(10):
            statuses.append(exporter.get("/-/healthy", timeout=5).status)
            time.sleep(0.1)
    finally:
        stop.set()
        flooder.join(10)
    assert statuses == [200] * 10


def test_a_handshake_has_one_deadline_from_accept(secured: Secured) -> None:
    # A ClientHello's first byte, then a byte every 0.3 s: the connection is
    # closed at the request deadline (2 s here), not kept while bytes trickle.
    with socket.create_connection(("127.0.0.1", secured.exporter.port), 5) as sock:
        started = time.monotonic()
        hello = b"\x16\x03\x01\x02\x00" + b"\x01" * 512
        sock.settimeout(0.3)
        closed = None
        for byte in hello:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    closed = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = time.monotonic() - started
                break
    assert closed is not None and 1.8 < closed < 3.5, closed


def _peer_certificate(ca: Pki, directory: Path, ips: tuple[str, ...]) -> dict[str, object]:
    """What a TLS server's getpeercert() says of a client certificate with IP SANs ``ips``."""
    client = pki.make_leaf(ca.other_intermediate, dns=(), ips=ips, server_auth=False)
    pki.write_pem(directory / "ip-client.crt", client, ca.other_intermediate)
    (directory / "ip-client.key").write_bytes(client.key_pem)
    leaf = pki.make_leaf(ca.intermediate, dns=("localhost",))
    pki.write_pem(directory / "ip-server.crt", leaf, ca.intermediate)
    (directory / "ip-server.key").write_bytes(leaf.key_pem)
    pki.write_pem(directory / "ip-clients-ca.crt", ca.other_root)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "ip-server.crt", directory / "ip-server.key")
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(directory / "ip-clients-ca.crt")
    ours = _client(ca.root_file, directory / "ip-client.crt", directory / "ip-client.key")
    left, right = socket.socketpair()
    seen: list[dict[str, object]] = []

    def serve() -> None:
        with server.wrap_socket(left, server_side=True) as tls:
            seen.append(dict(tls.getpeercert()))  # type: ignore[arg-type]

    thread = threading.Thread(target=serve)
    thread.start()
    with ours.wrap_socket(right, server_hostname="localhost"):
        thread.join(10)
    return seen[0]


def test_client_allowed_sans_compare_ip_addresses_as_addresses(ca: Pki, tmp_path: Path) -> None:
    certificate = _peer_certificate(ca, tmp_path, ("::1", "2001:db8::1", "192.0.2.7"))
    for allowed, verdict in (
        (("::1",), True),
        (("0:0:0:0:0:0:0:1",), True),
        (("2001:db8::1",), True),
        (("2001:DB8:0::1",), True),
        (("192.0.2.7",), True),
        (("::ffff:192.0.2.7",), True),
        (("2001:db8::2",), False),
        (("::2", "192.0.2.8", "localhost"), False),
    ):
        assert san_allowed(certificate, allowed) is verdict, allowed
