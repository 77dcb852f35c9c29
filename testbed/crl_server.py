"""An HTTP server on loopback that serves CRLs, and misbehaves on request.

Each path answers with a status, a body and an optional delay before the
answer: a good CRL, a stale or forged one, a 404, an oversized body, a
server too slow for the check's deadline, or one that trickles its answer
(the body, or the headers too) a few bytes at a time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

__all__ = ["CrlServer", "Route"]


class Route(NamedTuple):
    body: bytes
    status: int = 200
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: Bytes per second to send the body at (0: all at once), in ten pieces a second.
    rate: int = 0
    #: Send the status line and headers at ``rate`` too, not only the body.
    trickle_headers: bool = False


class CrlServer:
    """``routes`` maps a path (``/int.crl``) to what it answers; ``url(path)`` builds URLs."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        routes, requests = self.routes, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                route = routes.get(self.path, Route(b"not found", 404))
                if route.delay:
                    time.sleep(route.delay)  # the misbehaviour under test, not a wait
                head = (
                    f"HTTP/1.0 {route.status} Answer\r\n"
                    "Content-Type: application/pkix-crl\r\n"
                    f"Content-Length: {len(route.body)}\r\n\r\n"
                ).encode()
                # The client may give up, as it should past its deadline.
                with contextlib.suppress(OSError):
                    if not route.rate:
                        self.wfile.write(head + route.body)
                        return
                    slow = head + route.body if route.trickle_headers else route.body
                    if not route.trickle_headers:
                        self.wfile.write(head)
                    piece = max(1, route.rate // 10)
                    for start in range(0, len(slow), piece):
                        self.wfile.write(slow[start : start + piece])
                        time.sleep(piece / route.rate)  # the trickle under test

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> CrlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
