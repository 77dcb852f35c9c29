"""Servers that misbehave, and the network failing: always a clear CRITICAL, in time."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from check_pg_tls.protocol import SSL_REQUEST
from testbed import pki
from testbed.faults import FaultServer, FullBacklog, RefusedPort, scripted, silent, tls_only

from .conftest import Pki, run_plugin
from .test_deadline import MARGIN

# An ErrorResponse whose text tries to reach the operator's screen.
EVIL = "FATAL: \x1b[31mcall 555-0100 and read out your password\x1b[0m"
ERROR_RESPONSE = (
    b"E" + struct.pack("!I", 4 + len(EVIL) + 4) + b"SFATAL\x00M" + EVIL.encode() + b"\x00\x00"
)


@pytest.fixture
def fault() -> Iterator[list[FaultServer]]:
    servers: list[FaultServer] = []
    yield servers
    for server in servers:
        server.close()


def start(fault: list[FaultServer], behaviour, host: str = "127.0.0.1") -> FaultServer:  # type: ignore[no-untyped-def]
    server = FaultServer(behaviour, host)
    fault.append(server)
    return server


def check(server: FaultServer, *args: str, guard: float = 60):  # type: ignore[no-untyped-def]
    return run_plugin(
        "-H", server.host, "-p", str(server.port), "--sslmode", "require", *args, guard=guard
    )


@pytest.mark.parametrize(
    ("reply", "hold", "message"),
    [
        (b"N", False, "server does not offer TLS (it answered N to the SSLRequest)"),
        (b"SXYZ", True, "server sent unencrypted data after agreeing to TLS"),
        (ERROR_RESPONSE, False, "answered the SSLRequest with an error message (not shown"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", False, "with byte 0x48, not S or N"),
        (b"", False, "closed the connection without answering the SSLRequest"),
        (b"S", False, "TLS handshake failed"),
    ],
    ids=["N", "S-plus-extra", "E", "garbage", "closed", "S-then-close"],
)
def test_misbehaving_server_is_critical(
    fault: list[FaultServer], reply: bytes, hold: bool, message: str
) -> None:
    server = start(fault, scripted(reply, hold))
    result = check(server)
    assert result.returncode == 2, result.stdout
    assert result.status_line.startswith(f"PG_TLS CRITICAL - 127.0.0.1:{server.port}: ")
    assert message in result.status_line
    assert result.stderr == ""


def test_error_text_from_server_is_never_shown(fault: list[FaultServer]) -> None:
    server = start(fault, scripted(ERROR_RESPONSE))
    result = check(server, "-vvv")
    assert result.returncode == 2, result.stdout
    assert result.stdout.startswith(
        f"PG_TLS CRITICAL - 127.0.0.1:{server.port}: server answered the SSLRequest with "
        "an error message (not shown: it is unauthenticated) | time="
    )
    assert result.stdout.count("\n") == 1, result.stdout
    assert "555-0100" not in result.stdout
    assert "\x1b" not in result.stdout


def test_probe_sends_exactly_the_ssl_request(fault: list[FaultServer]) -> None:
    seen: list[bytes] = []

    def record(conn, stopping):  # type: ignore[no-untyped-def]
        seen.append(conn.recv(64))
        conn.sendall(b"N")

    server = start(fault, record)
    result = check(server)
    assert result.returncode == 2, result.stdout
    assert result.status_line.startswith(
        f"PG_TLS CRITICAL - 127.0.0.1:{server.port}: server does not offer TLS"
    )
    assert seen == [SSL_REQUEST]


@pytest.mark.serial
def test_silent_server_times_out_critical_within_t(fault: list[FaultServer]) -> None:
    started = time.monotonic()
    result = check(start(fault, silent()), "-t", "2", guard=10)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stdout
    assert "did not answer the SSLRequest within 2 seconds" in result.status_line
    # Within -t, start-up included, and not long before it either.
    assert 1.5 < took < 2 + MARGIN, took


@pytest.mark.serial
def test_stalled_handshake_times_out_critical(fault: list[FaultServer]) -> None:
    result = check(start(fault, scripted(b"S", hold=True)), "-t", "2", guard=10)
    assert result.returncode == 2, result.stdout
    assert "TLS handshake did not complete within 2 seconds" in result.status_line


def test_timeout_can_be_mapped_to_unknown(fault: list[FaultServer]) -> None:
    result = check(start(fault, silent()), "-t", "1", "--unreachable-state", "unknown", guard=10)
    assert result.returncode == 3, result.stdout
    assert result.status_line.startswith("PG_TLS UNKNOWN - ")


@pytest.mark.serial
def test_connect_that_never_completes_is_critical() -> None:
    backlog = FullBacklog()
    try:
        result = run_plugin("-H", "127.0.0.1", "-p", str(backlog.port), "-t", "1", guard=10)
    finally:
        backlog.close()
    assert result.returncode == 2, result.stdout
    assert "timed out after 1 seconds" in result.status_line


def test_connection_refused_is_critical() -> None:
    with RefusedPort() as closed:
        port = closed.port
        result = run_plugin("-H", "127.0.0.1", "-p", str(port))
    assert result.returncode == 2
    text, _, perfdata = result.status_line.partition(" | ")
    assert text == f"PG_TLS CRITICAL - 127.0.0.1:{port}: connection refused"
    # Every run has perfdata, an outage too: the time to the failure.
    assert re.fullmatch(r"time=[0-9.]+s;;;0", perfdata), perfdata


def test_connection_refused_can_be_unknown() -> None:
    with RefusedPort() as closed:
        result = run_plugin(
            "-H", "127.0.0.1", "-p", str(closed.port), "--unreachable-state", "unknown"
        )
    assert result.returncode == 3
    assert result.status_line.split(" | ")[0].endswith(": connection refused")


def test_name_that_does_not_resolve_is_critical() -> None:
    # In a network namespace of its own the resolver cannot reach anything,
    # so no query leaves this machine.
    result = run_plugin("-H", "db.example.invalid", prefix=("unshare", "-n"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot resolve db.example.invalid" in result.status_line


def test_plain_tls_server_is_not_postgres(
    fault: list[FaultServer], ca: Pki, tmp_path: Path
) -> None:
    leaf = pki.make_leaf(ca.intermediate)
    cert, key = tmp_path / "https.crt", tmp_path / "https.key"
    pki.write_pem(cert, leaf, ca.intermediate)
    key.write_bytes(leaf.key_pem)
    result = check(start(fault, tls_only(cert, key)))
    assert result.returncode == 2, result.stdout
    assert "not a PostgreSQL server" in result.status_line


def test_ipv6_fault_server(fault: list[FaultServer]) -> None:
    server = start(fault, scripted(b"N"), host="::1")
    result = check(server)
    assert result.returncode == 2
    assert result.status_line.startswith(f"PG_TLS CRITICAL - [::1]:{server.port}: ")
