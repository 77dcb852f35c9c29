"""Misbehaving servers on loopback, for what a real PostgreSQL never does.

Each server reads the 8-byte SSLRequest, then follows a script: answer with
some bytes and close, answer and then hold the connection open, never answer
at all. A ``listen(0)`` socket with a full queue never even accepts.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "FaultServer",
    "FullBacklog",
    "RefusedPort",
    "postgres_tls",
    "scripted",
    "scripted_login",
    "silent",
    "tls_only",
]

Behaviour = Callable[[socket.socket, threading.Event], None]


class FaultServer:
    """A loopback TCP server that runs ``behaviour`` for each connection."""

    def __init__(self, behaviour: Behaviour, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(16)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.received: list[bytes] = []
        self._conns: list[socket.socket] = []
        self._handled = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self.behaviour(conn, self.stopping)
        except OSError:
            pass
        finally:
            conn.close()
            with self._done:
                self._handled += 1
                self._done.notify_all()

    def wait_connections(self, count: int, timeout: float = 10) -> None:
        """Return once ``count`` connections have been handled to their end."""
        with self._done:
            if not self._done.wait_for(lambda: self._handled >= count, timeout):
                raise TimeoutError(f"{self._handled} of {count} connections handled")

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while len(data) < 8:
        chunk = conn.recv(8 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def scripted(reply: bytes, hold: bool = False) -> Behaviour:
    """Read the SSLRequest, send ``reply`` in one write, then close or hold."""

    def behaviour(conn: socket.socket, stopping: threading.Event) -> None:
        _read_request(conn)
        if reply:
            conn.sendall(reply)
        if hold:
            stopping.wait(60)

    return behaviour


def silent() -> Behaviour:
    """Accept, then say nothing until the test ends."""

    def behaviour(conn: socket.socket, stopping: threading.Event) -> None:
        stopping.wait(60)

    return behaviour


def tls_only(cert_file: Path, key_file: Path) -> Behaviour:
    """An ordinary TLS server (HTTPS-like): expects a ClientHello at once."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)

    def behaviour(conn: socket.socket, stopping: threading.Event) -> None:
        conn.settimeout(10)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
        except (ssl.SSLError, OSError):
            pass

    return behaviour


class FullBacklog:
    """A listening socket whose accept queue is full: connects never complete."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port: int = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        # Fill the queue until a connect no longer completes at once.
        for _ in range(8):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            self.fillers.append(filler)
            if filler.connect_ex(("127.0.0.1", self.port)) not in (0, 115):
                break

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()


class RefusedPort:
    """A port that refuses connections and that nothing else can take meanwhile.

    Bound but not listening: connects get a reset, and the kernel will not
    hand the port to another socket (a merely closed port may be reused).
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]

    def __enter__(self) -> RefusedPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def postgres_tls(cert_file: Path, key_file: Path) -> Behaviour:
    """PostgreSQL's negotiation in miniature: read the SSLRequest, say ``S``, serve TLS.

    Serves whatever chain ``cert_file`` holds, so that a test can show the
    client any chain without starting a PostgreSQL server.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)

    def behaviour(conn: socket.socket, stopping: threading.Event) -> None:
        conn.settimeout(10)
        if _read_request(conn) != b"\x00\x00\x00\x08\x04\xd2\x16\x2f":
            return
        conn.sendall(b"S")
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
        except (ssl.SSLError, OSError):
            pass

    return behaviour


def scripted_login(
    cert_file: Path, key_file: Path, reply: bytes, received: list[bytes]
) -> Behaviour:
    """A server that answers a StartupMessage over TLS with ``reply`` and records the client.

    PostgreSQL's negotiation (SSLRequest, ``S``, TLS with ``cert_file``), then
    ``reply`` after the client's StartupMessage; every byte the client sent
    inside TLS, up to its close, is appended to ``received`` as one entry
    per connection. The server keeps the connection open after the reply
    until the client goes.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)

    def behaviour(conn: socket.socket, stopping: threading.Event) -> None:
        conn.settimeout(10)
        if _read_request(conn) != b"\x00\x00\x00\x08\x04\xd2\x16\x2f":
            return
        conn.sendall(b"S")
        data = b""
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                while len(data) < 4 or len(data) < int.from_bytes(data[:4], "big"):
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                tls.sendall(reply)
                while True:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except (ssl.SSLError, OSError):
            pass
        finally:
            received.append(data)

    return behaviour
