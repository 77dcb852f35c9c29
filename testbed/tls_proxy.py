"""A TLS-terminating PostgreSQL proxy that records what its clients send.

A client negotiates TLS with the proxy the PostgreSQL way (SSLRequest,
``S``, a handshake with the proxy's own certificate); the proxy does the
same with the real server behind it and relays the decrypted bytes both
ways, keeping every byte each client sent after its handshake. A test can
then assert what went over the wire inside TLS: that no password did.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from pathlib import Path

__all__ = ["RecordingProxy"]

_SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


class RecordingProxy:
    """Listens on 127.0.0.1; relays each connection to ``upstream_port`` over TLS."""

    def __init__(self, upstream_port: int, cert_file: Path, key_file: Path) -> None:
        self.upstream_port = upstream_port
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(cert_file, key_file)
        self.client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client_context.check_hostname = False
        self.client_context.verify_mode = ssl.CERT_NONE
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        #: What each client sent after its handshake, one entry per finished connection.
        self.sessions: list[bytes] = []
        self._finished = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def wait_sessions(self, count: int, timeout: float = 10) -> list[bytes]:
        """The first ``count`` finished sessions, once both sides have closed."""
        with self._finished:
            if not self._finished.wait_for(lambda: len(self.sessions) >= count, timeout):
                raise TimeoutError(f"{len(self.sessions)} of {count} sessions finished")
            return self.sessions[:count]

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        received = bytearray()
        try:
            conn.settimeout(10)
            if _read_exactly(conn, 8) != _SSL_REQUEST:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            upstream.sendall(_SSL_REQUEST)
            if upstream.recv(1) != b"S":
                upstream.close()
                return
            conn.sendall(b"S")
            client = self.server_context.wrap_socket(conn, server_side=True)
            server = self.client_context.wrap_socket(upstream)
            _pump(client, server, received)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()
            with self._finished:
                self.sessions.append(bytes(received))
                self._finished.notify_all()

    def close(self) -> None:
        self.listener.close()

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _pump(client: ssl.SSLSocket, server: ssl.SSLSocket, record: bytearray) -> None:
    """Relay both ways until one side closes, then close the other politely.

    One thread per connection: an SSL object must not be read and written
    from two threads at once.
    """
    sockets = (client, server)
    for sock in sockets:
        sock.setblocking(False)
    try:
        while True:
            ready = [s for s in sockets if s.pending()] or select.select(sockets, [], [], 10)[0]
            if not ready:
                return
            for source in ready:
                sink = server if source is client else client
                try:
                    data = source.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                except (OSError, ssl.SSLError):
                    data = b""
                if not data:
                    _close(sink)
                    return
                if source is client:
                    record += data
                sink.setblocking(True)
                sink.sendall(data)
                sink.setblocking(False)
    except (OSError, ssl.SSLError):
        return
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _close(sock: ssl.SSLSocket) -> None:
    sock.settimeout(2)
    with contextlib.suppress(OSError, ssl.SSLError, ValueError):
        sock.unwrap()
