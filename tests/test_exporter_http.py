"""pg_tls_exporter's HTTP side under hostile clients: size and time limits, answers, the log.

Whoever reaches the port can open connections before any password is
asked: these tests are such clients, many at once, against an exporter with
basic authentication and a one-second request deadline (shrunk from ten so
that the tests stay quick), and prove that memory stays bounded, that a
scraper still gets in, that every request gets an HTTP answer in plain text
with the configured headers, and that the log holds no traceback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import bcrypt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from check_pg_tls.exporter.httpwire import MAX_HEAD, BadRequest, head_end, parse_head
from testbed.exporter import ExporterProcess, exporter_argv
from testbed.faults import FaultServer, silent
from testbed.pgcluster import Cluster, free_port

from .conftest import Pki

ServerFactory = Callable[[str], Cluster]
USER, PASSWORD = "prometheus", "s3cret"
LONG = "L" * 72
HEALTHY = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Plain:
    exporter: ExporterProcess
    web_config: Path


@pytest.fixture(scope="module")
def plain(ca: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plain]:
    path = tmp_path_factory.mktemp("http")
    web = path / "web-config.yml"
    users = {
        # Cost 4: these tests are about the HTTP side, not bcrypt's price.
        name: bcrypt.hashpw(secret.encode(), bcrypt.gensalt(4)).decode()
        for name, secret in ((USER, PASSWORD), ("long", LONG))
    }
    web.write_text(
        json.dumps(
            {
                "basic_auth_users": users,
                "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
            }
        )
    )
    config = path / "pg_tls_exporter.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {"default": {"sslrootcert": str(ca.root_file), "timeout": 3}},
                "allowed_targets": ["127.0.0.1", "*.test"],
            }
        )
    )
    exporter = ExporterProcess(
        path,
        config,
        "--log.level=debug",
        "--probe.concurrency=4",
        "--web.request-timeout=1",
        web_config=web,
        auth=(USER, PASSWORD),
    ).start()
    yield Plain(exporter, web)
    exporter.stop()


def _raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send ``data`` on a new connection; everything the exporter answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(data)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return out + b"<no end>"
        if not chunk:
            return out
        out += chunk


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def _counted(exporter: ExporterProcess) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(exporter.get("/metrics").body):
        for sample in family.samples:
            if sample.name == "pg_tls_exporter_http_requests_total":
                found[(sample.labels["handler"], sample.labels["code"])] = sample.value
    return found


def _metric(exporter: ExporterProcess, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(exporter.get("/metrics").body):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    raise KeyError(name)


# --- the request head, as bytes ------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0),
        (b"GET / HTTP/1.0\n\n", 0),  # bare LF, as RFC 9112 lets a server accept
        (b"\r\nGET / HTTP/1.1\r\n\r\n", 0),  # an empty line before is ignored
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.x\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\n\r\n", 400),
        (b"GET /a\x00b HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nName : v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: a\r\n" % i for i in range(101)) + b"\r\n", 431),
        (b"\r\n\r\n", 400),
    ],
)
def test_a_request_head_is_read_as_go_reads_it(head: bytes, status: int) -> None:
    assert head_end(head) == len(head)
    try:
        parse_head(head)
    except BadRequest as bad:
        assert bad.status == status, bad.reason
    else:
        assert status == 0


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ("", 0),
        ("Content-Length: 5\r\n", 5),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", 5),
        ("Content-Length: 5, 5\r\n", 5),
        ("Content-Length: 0\r\nContent-Length: 5\r\n", 400),  # RFC 9112 6.3
        ("Content-Length: -5\r\n", 400),
        ("Content-Length: +5\r\n", 400),
        ("Content-Length: 99999999999\r\n", 413),
        ("Transfer-Encoding: chunked\r\n", 411),
        ("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", 411),
    ],
)
def test_a_body_is_framed_by_one_length(headers: str, outcome: int) -> None:
    request = parse_head(f"POST /-/reload HTTP/1.1\r\n{headers}\r\n".encode())
    try:
        assert request.body_length() == outcome
    except BadRequest as bad:
        assert bad.status == outcome, bad.reason


def test_keep_alive_as_each_version_has_it() -> None:
    assert not parse_head(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive
    assert parse_head(b"GET / HTTP/1.1\r\n\r\n").keep_alive
    assert not parse_head(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive


# --- answers ----------------------------------------------------------------------


def test_every_refusal_is_plain_text_with_the_headers_and_counted(plain: Plain) -> None:
    exporter = plain.exporter
    authorized = f"Authorization: {_basic(USER, PASSWORD)}\r\n".encode()
    cases = {
        b"GET /-/healthy\r\n\r\n": 400,  # HTTP/0.9
        b"GET /-/healthy HTTP/2.0\r\n\r\n": 505,
        b"GET /-/healthy HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n": 431,
        b"GET /probe?target=" + b"a" * MAX_HEAD + b" HTTP/1.1\r\n\r\n": 414,
        # Two lengths that differ: the rest of the body must not become a request.
        b"POST /-/reload HTTP/1.1\r\n"
        + authorized
        + b"Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello": 400,
        b"POST /-/reload HTTP/1.1\r\n" + authorized + b"Transfer-Encoding: chunked\r\n\r\n": 411,
        b"POST /-/reload HTTP/1.1\r\n" + authorized + b"Content-Length: 999999999\r\n\r\n": 413,
        b"GET /-/healthy HTTP/1.1\r\n\r\n": 401,
    }
    before = _counted(exporter)
    for request, status in cases.items():
        answer = _raw(exporter.port, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert _status(answer) == status, (request[:40], answer[:200])
        lines = head.decode().split("\r\n")
        assert "Content-Type: text/plain; charset=utf-8" in lines, lines
        assert "X-Content-Type-Options: nosniff" in lines, lines
        assert "Connection: close" in lines, lines
        assert body.count(b"\n") == 1 and body.endswith(b"\n"), body
    after = _counted(exporter)
    for code in ("400", "401", "411", "413", "414", "431", "505"):
        grown = sum(v for (_, c), v in after.items() if c == code) - sum(
            v for (_, c), v in before.items() if c == code
        )
        assert grown >= 1, code
    assert after[("/-/reload", "411")] - before.get(("/-/reload", "411"), 0) == 1


@pytest.mark.parametrize(
    "header",
    [
        "Basic  " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),  # two spaces
        _basic(USER, PASSWORD) + " junk",
        _basic(USER, PASSWORD).rstrip("="),
        "Basic " + base64.urlsafe_b64encode(f"{USER}:{PASSWORD}".encode()).decode() + "~",
    ],
)
def test_basic_credentials_are_read_as_go_reads_them(plain: Plain, header: str) -> None:
    request = f"GET /-/healthy HTTP/1.1\r\nAuthorization: {header}\r\n\r\n".encode()
    assert _status(_raw(plain.exporter.port, request)) == 401
    right = f"GET /-/healthy HTTP/1.1\r\nAuthorization: {_basic(USER, PASSWORD)}\r\n"
    assert _status(_raw(plain.exporter.port, (right + "Connection: close\r\n\r\n").encode())) == 200


def test_a_long_password_counts_by_its_first_72_bytes_as_in_node_exporter(
    plain: Plain, tmp_path: Path
) -> None:
    # The hash was made from 72 bytes; bcrypt reads no more of a password.
    passwords = {
        "72 bytes": LONG,
        "73 bytes": LONG + "x",
        "100 bytes": LONG + "y" * 28,
        "another 72": "M" + LONG[1:],
        "another 100": "M" + LONG[1:] + "y" * 28,
    }
    ours = {
        name: plain.exporter.get("/-/healthy", auth=("long", password)).status
        for name, password in passwords.items()
    }
    port = free_port()
    with open(tmp_path / "node.log", "wb") as log:
        node = subprocess.Popen(
            [
                "prometheus-node-exporter",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.config.file={plain.web_config}",
                "--collector.disable-defaults",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        other = ExporterProcess(tmp_path, tmp_path)
        other.port = port
        deadline = time.monotonic() + 20
        while True:
            try:
                other.get("/metrics", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and node.poll() is None
                time.sleep(0.05)
        theirs = {
            name: other.get("/metrics", auth=("long", password)).status
            for name, password in passwords.items()
        }
    finally:
        node.terminate()
        node.wait(10)
    assert ours == theirs
    assert ours == {
        "72 bytes": 200,
        "73 bytes": 200,
        "100 bytes": 200,
        "another 72": 401,
        "another 100": 401,
    }


# --- hostile clients ------------------------------------------------------------


def test_large_heads_of_256_unauthenticated_clients_take_bounded_memory(plain: Plain) -> None:
    exporter = plain.exporter
    before = exporter.rss_kib()
    line = b"X-h: " + b"a" * 65000 + b"\r\n"
    socks = []
    try:
        for _ in range(256):
            sock = socket.create_connection(("127.0.0.1", exporter.port), 5)
            # More than the head may have, and no end to it.
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.send(HEALTHY + line * 16)
            socks.append(sock)
        peak = exporter.rss_kib()
        answers = set()
        for sock in socks:
            sock.setblocking(True)
            sock.settimeout(5)
            answers.add(_read_all(sock)[:12])
    finally:
        for sock in socks:
            sock.close()
    assert answers == {b"HTTP/1.1 431"}
    grown = max(peak, exporter.rss_kib()) - before
    assert grown < 30 * 1024, f"{grown} KiB more with 256 connections"
    assert exporter.rss_kib() < 100 * 1024


def test_a_request_head_has_one_deadline_not_one_per_read(plain: Plain) -> None:
    with socket.create_connection(("127.0.0.1", plain.exporter.port), 5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nX-a: ")
        sock.settimeout(0.2)
        answer = b""
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"a")  # a byte every 0.2 s: never idle for long
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert 0.9 < elapsed < 2.0, elapsed


def test_a_flood_of_slow_and_silent_clients_does_not_keep_scrapes_out(plain: Plain) -> None:
    exporter = plain.exporter
    evicted = _metric(exporter, "pg_tls_exporter_http_connections_closed_total", reason="evicted")
    stop = threading.Event()

    def flood() -> None:
        # 300 connections, more than the limit, half of them trickling a
        # request, the others silent; each one closed is opened again.
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
                    sock = socket.create_connection(("127.0.0.1", exporter.port), 2)
                except OSError:
                    break
                if len(socks) % 2:
                    sock.send(b"GET /-/healthy HTTP/1.1\r\nX-a: ")
                socks.append(sock)
            for sock in socks[1::2]:
                with contextlib.suppress(OSError):
                    sock.send(b"a")
            stop.wait(0.1)
        for sock in socks:
            sock.close()

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        time.sleep(0.5)  # the flood is at its height
        answers = []
        for _ in range(10):
            started = time.monotonic()
            answers.append(
                (exporter.get("/-/healthy", timeout=5).status, time.monotonic() - started)
            )
            time.sleep(0.2)
    finally:
        stop.set()
        flooder.join(10)
    assert [status for status, _ in answers] == [200] * 10
    assert max(elapsed for _, elapsed in answers) < 1, answers
    assert _metric(exporter, "pg_tls_exporter_http_connections_closed_total", reason="evicted") > (
        evicted
    )


def test_clients_that_never_read_their_answers_do_not_keep_scrapes_out(
    ca: Pki, tmp_path: Path
) -> None:
    # No password, so anyone can send requests: 8 workers (half of 16
    # connections), and 12 clients that pipeline requests and read nothing.
    config = tmp_path / "pg_tls_exporter.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {"default": {"sslrootcert": str(ca.root_file)}},
                "allowed_targets": ["127.0.0.1"],
            }
        )
    )
    exporter = ExporterProcess(
        tmp_path, config, "--web.max-connections=16", "--web.request-timeout=2"
    ).start()
    stop = threading.Event()

    def flood() -> None:
        socks: list[socket.socket] = []
        while not stop.is_set():
            while len(socks) < 12 and not stop.is_set():
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                try:
                    sock.connect(("127.0.0.1", exporter.port))
                except OSError:
                    sock.close()
                    break
                socks.append(sock)
            alive = []
            for sock in socks:
                try:
                    sock.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 400)
                    alive.append(sock)
                except BlockingIOError:
                    alive.append(sock)
                except OSError:
                    sock.close()
            socks = alive
            for sock in socks:
                sock.setblocking(False)
            stop.wait(0.2)
        for sock in socks:
            sock.close()

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        time.sleep(1)  # every flooding connection has answers it does not take
        answers = []
        for _ in range(10):
            started = time.monotonic()
            answers.append(
                (exporter.get("/-/healthy", timeout=5).status, time.monotonic() - started)
            )
            time.sleep(0.2)
        assert [status for status, _ in answers] == [200] * 10, answers
        assert max(elapsed for _, elapsed in answers) < 1, answers
        # The flood's connections end when their answers are not taken in time.
        give_up = time.monotonic() + 15
        while not (
            stuck := _metric(
                exporter, "pg_tls_exporter_http_connections_closed_total", reason="timeout"
            )
        ):
            assert time.monotonic() < give_up, "no connection closed for its untaken answers"
            time.sleep(0.1)
    finally:
        stop.set()
        flooder.join(10)
        exporter.stop()
    assert stuck > 0


def test_300_requests_at_once_each_get_an_http_answer(plain: Plain) -> None:
    exporter = plain.exporter
    with FaultServer(silent()) as mute:
        path = f"/probe?target=127.0.0.1:{mute.port}"

        def one(_: int) -> int | str:
            try:
                return exporter.get(
                    path, headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"}, timeout=10
                ).status
            except OSError as exc:
                return type(exc).__name__

        with ThreadPoolExecutor(300) as pool:
            found = list(pool.map(one, range(300)))
            threads = exporter.threads()
    assert set(found) <= {200, 503}, sorted(set(map(str, found)))
    assert found.count(200) >= 4
    # Four probe slots, at most 128 requests answered at once (half the
    # 256 connections), the reception and the main thread.
    assert threads <= 4 + 128 + 4, threads


def test_clients_that_go_away_leave_debug_lines_not_tracebacks(plain: Plain) -> None:
    exporter = plain.exporter
    auth = f"Authorization: {_basic(USER, PASSWORD)}\r\n".encode()
    answered = _counted(exporter).get(("/probe", "200"), 0)
    with FaultServer(silent()) as mute:
        probe = (
            f"GET /probe?target={quote(f'127.0.0.1:{mute.port}')} HTTP/1.1\r\n"
            "X-Prometheus-Scrape-Timeout-Seconds: 1\r\n"
        ).encode() + auth
        for request in (probe + b"\r\n", b"GET / HTTP/1.1\r\n" + auth + b"\r\n", HEALTHY + b"\r\n"):
            for reset in (False, True):
                sock = socket.create_connection(("127.0.0.1", exporter.port), 5)
                sock.sendall(request)
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        # A client that closed its side still gets its answer (it may be
        # waiting for it); one that reset has nothing to be answered. The
        # probe ends within its half second; then its answer has been tried.
        deadline = time.monotonic() + 5
        while _counted(exporter).get(("/probe", "200"), 0) < answered + 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert exporter.get("/-/healthy").status == 200
    time.sleep(0.2)
    lines = exporter.log().splitlines()
    assert lines and all(line.startswith("time=") for line in lines), [
        line for line in lines if not line.startswith("time=")
    ][:5]
    assert "Traceback" not in exporter.log()


# --- a resolver that never answers -----------------------------------------------


def test_a_hanging_resolver_does_not_pile_up_threads(ca: Pki, tmp_path: Path) -> None:
    # A resolv.conf of our own, seen by the exporter alone (a private mount
    # namespace), naming a server on a loopback address that never answers.
    address = "127.0.0.77"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket()
    udp.bind((address, 53))
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, 53))
    tcp.listen(64)
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {address}\noptions timeout:5 attempts:2\n")
    config = tmp_path / "c.yml"
    config.write_text(json.dumps({"modules": {"default": {}}, "allowed_targets": ["*.test"]}))
    port = free_port()
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen(
            [
                "unshare",
                "-m",
                "sh",
                "-c",
                script,
                str(conf),
                *exporter_argv(),
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
    exporter = ExporterProcess(tmp_path, config)
    exporter.port, exporter.process = port, process
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                exporter.get("/-/healthy", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        base = exporter.threads()

        def one(index: int) -> tuple[float, str]:
            started = time.monotonic()
            answer = exporter.get(
                f"/probe?target=n{index}.test:5432",
                headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"},
            )
            reasons = [
                line for line in answer.body.splitlines() if line.startswith("pg_tls_error_info")
            ]
            return time.monotonic() - started, reasons[0] if reasons else answer.body

        peak = 0
        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(one, index) for index in range(100)]
            while not all(future.done() for future in futures):
                peak = max(peak, exporter.threads())
                time.sleep(0.05)
            found = [future.result() for future in futures]
    finally:
        process.terminate()
        process.wait(10)
        udp.close()
        tcp.close()
    assert max(elapsed for elapsed, _ in found) < 1, max(found)
    # Each says the probe's half second (a probe that the busy machine made
    # miss its own deadline by a hair says it had no result in it).
    reasons = {reason.split("{", 1)[1] for _, reason in found}
    assert all(reason.endswith('within 0.5 seconds"} 1.0') for reason in reasons), [*reasons][:3]
    assert sum("cannot resolve" in reason for reason in reasons) > 50, [*reasons][:3]
    # A probe thread and a request thread for each of the 20 at once, and
    # 32 lookups at most, however many probes gave up on theirs.
    assert peak - base <= 20 + 20 + 32 + 4, (base, peak)
