"""Connections: accepted, TLS-handshaken and read to a whole request head in one thread.

Whoever can reach the port can open connections, authenticated or not; a
server that gives each one a thread and reads it with a timeout per
``recv`` lets a few hundred slow or silent clients hold every slot (and,
with generous header limits, gigabytes). Here one thread, the reception,
does everything a client can make last: it accepts, makes the TLS
handshake without blocking, and reads a request's head into a buffer of at
most :data:`~.httpwire.MAX_HEAD` bytes. Each connection has one deadline
for all of that (:attr:`Limits.head_timeout`, from accept, or from the
first byte of a later request), not one per read, and an idle keep-alive
connection one of its own (:attr:`Limits.idle_timeout`). Only a complete
head goes to a worker thread, which authenticates and answers it, and then
hands the connection back.

At most :attr:`Limits.connections` are open. When a new one comes and
that many are, the one that has gone longest without finishing a request
is closed, first among those that never authenticated: a flood of
connections that send nothing, or trickle, or have no client certificate,
cannot keep a scraper out, whose own request takes milliseconds. Requests
beyond :attr:`Limits.workers` at once wait for a worker in turn (503 if
none frees within the head deadline); a connection has one request
answered at a time, so a client that pipelines requests without end takes
one worker at most. A worker never waits for a client to read: what the
socket does not take at once the reception sends (:attr:`Conn.output`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from .httpwire import MAX_HEAD, NOT_HTTP_OVER_TLS, answer, head_end
from .webconfig import WebConfig, WebConfigSource, san_allowed

__all__ = ["Conn", "Limits", "Reception"]

_log = logging.getLogger("pg_tls_exporter")

#: Seconds between sweeps for connections past their deadline.
_SWEEP = 0.25
#: Seconds a worker thread waits for a request before it ends.
_WORKER_IDLE = 60.0
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Limits:
    #: Client connections open at once, in every state.
    connections: int
    #: Requests being answered at once (each holds a worker thread).
    workers: int
    #: Seconds from accept (TLS handshake included), or from a later
    #: request's first byte, to the end of the request's head.
    head_timeout: float = 10.0
    #: Seconds a keep-alive connection may wait for its next request.
    idle_timeout: float = 120.0


class _State(Enum):
    PEEK = "peek"  # TLS port: nothing read yet
    HANDSHAKE = "handshake"
    HEAD = "head"  # reading a request's head
    IDLE = "idle"  # keep-alive, between requests
    QUEUED = "queued"  # a whole request waits for a worker
    BUSY = "busy"  # a worker answers it
    WRITING = "writing"  # answered: the reception sends what the client has not taken yet
    CLOSING = "closing"  # answered and half-closed: what the client still sends is dropped


@dataclass(eq=False)
class Conn:
    """One client connection."""

    sock: socket.socket
    #: The client's address, for the log.
    peer: str
    #: The web configuration when the connection was accepted.
    web: WebConfig
    state: _State = _State.HEAD
    deadline: float = 0.0
    #: Bytes read and not yet used: a head, or what followed one.
    buffer: bytearray = field(default_factory=bytearray)
    #: Whether a request on it was authenticated (or needed no authentication).
    proven: bool = False
    #: Set by the worker: whether the connection stays open after its answer.
    keep: bool = False
    #: Closed by the reception (an event already selected for it is stale).
    closed: bool = False
    #: The client has closed its side: what it sent is answered, then the connection ends.
    ended: bool = False
    #: Answers the client has not taken yet; the reception sends them.
    output: bytearray = field(default_factory=bytearray)
    #: The head of a request waiting for a worker.
    queued: bytes = b""


Handler = Callable[[Conn, bytes], None]
#: Told of each answer the reception gives itself: its status, and what it had of the head.
Refused = Callable[[int, bytes], None]
#: Told of each connection closed before its time, and why.
Closed = Callable[[str], None]
#: Seconds a closed connection's unread input is still read and dropped, so
#: that the kernel's reset does not destroy the answer before the client reads it.
_LINGER = 1.0


class Reception:
    """Accepts on ``listeners`` and hands each complete request head to ``handler``.

    ``handler(conn, head)`` runs in a worker thread with the socket in
    blocking mode; it answers, sets ``conn.keep``, and returns, leaving in
    ``conn.output`` what the client did not take at once: the reception
    sends that, within the request deadline, without holding a worker. ``refused``
    is told about each answer the reception gives itself (its status code)
    and ``closed`` about each connection it closes before its time (why).
    """

    def __init__(
        self,
        listeners: list[socket.socket],
        web: WebConfigSource,
        limits: Limits,
        handler: Handler,
        refused: Refused,
        closed: Closed,
    ) -> None:
        self.limits = limits
        self._listeners = listeners
        self._web = web
        self._handler = handler
        self._refused = refused
        self._closed = closed
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._returned: queue.SimpleQueue[Conn] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[tuple[Conn, bytes]] = queue.SimpleQueue()
        # Whole requests waiting for a worker, in the order they came.
        self._queued: deque[Conn] = deque()
        # Connections a client holds without a worker, oldest first: those
        # never authenticated, then the others.
        self._unproven: dict[Conn, None] = {}
        self._proven: dict[Conn, None] = {}
        self.busy = 0
        self._workers = 0
        self._idle_workers = 0
        self._worker_lock = threading.Lock()
        self._stopping = threading.Event()
        self._paused_until = 0.0
        self._warned = -60.0
        for listener in listeners:
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)

    # --- the reception thread ------------------------------------------------

    def serve(self) -> None:
        """The reception's loop; runs until the process ends."""
        next_sweep = time.monotonic() + _SWEEP
        while True:
            try:
                next_sweep = self._turn(next_sweep)
            except Exception:  # noqa: BLE001 - a bug must not stop the reception
                _log.exception("internal error in the reception")

    def _turn(self, next_sweep: float) -> float:
        now = time.monotonic()
        for key, _events in self._selector.select(max(0.0, next_sweep - now)):
            if key.data is None:
                self._accept(key.fileobj)  # type: ignore[arg-type]
            elif key.data is self._wake_r:
                self._woken()
            elif not key.data.closed:
                try:
                    self._progress(key.data)
                except Exception:  # noqa: BLE001 - one connection's bug must not stop the rest
                    _log.exception("internal error with the connection of %s", key.data.peer)
                    self._close(key.data)
        now = time.monotonic()
        if now >= next_sweep:
            self._sweep(now)
            next_sweep = now + _SWEEP
        return next_sweep

    def stop(self) -> None:
        """Stop accepting, close every connection no worker holds, and close the rest
        as their answers end. Safe from any thread."""
        self._stopping.set()
        self._wake()

    @property
    def open_connections(self) -> int:
        return len(self._unproven) + len(self._proven) + self.busy

    def _wake(self) -> None:
        # A full pipe means the reception is awake already.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _woken(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        if self._stopping.is_set() and self._listeners:
            for listener in self._listeners:
                self._selector.unregister(listener)
                listener.close()
            self._listeners = []
            for conn in [*self._unproven, *self._proven]:
                self._close(conn)
        while True:
            try:
                conn = self._returned.get_nowait()
            except queue.Empty:
                break
            self._back(conn)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            if listener.fileno() < 0:
                return  # closed by stop() in this very turn
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors: stop accepting for a moment rather than spin.
                now = time.monotonic()
                if now - self._warned > 60:
                    self._warned = now
                    _log.warning("cannot accept connections: %s", exc.strerror or exc)
                if self._registered(listener):
                    self._selector.unregister(listener)
                self._paused_until = now + 0.1
                return
            self._admit(sock, str(address[0]))

    def _admit(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        web = self._web.current()
        if web is None or self._stopping.is_set():
            # A web configuration that no longer loads: serve nothing.
            sock.close()
            return
        if not self._make_room():
            # Every connection has a worker: a plain client still gets an answer.
            if web.context is None:
                self._refused(503, b"")
                _send_now(sock, _refusal(503, "too many connections", web))
            sock.close()
            return
        conn = Conn(sock, peer, web, deadline=time.monotonic() + self.limits.head_timeout)
        conn.state = _State.PEEK if web.context is not None else _State.HEAD
        self._unproven[conn] = None
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _full(self) -> bool:
        return len(self._unproven) + len(self._proven) + self.busy >= self.limits.connections

    def _make_room(self) -> bool:
        """Below the connection limit, closing the connection longest without a request
        if need be; False if every connection has a worker."""
        for _ in range(8):
            if not self._full():
                return True
            oldest = next(iter(self._unproven), None) or next(iter(self._proven), None)
            if oldest is None:
                return False
            if oldest.state in (_State.HEAD, _State.IDLE):
                # A request that has arrived but not been read yet gets its turn.
                self._read(oldest)
                if oldest.closed or oldest.state not in (_State.HEAD, _State.IDLE):
                    continue
            _log.debug("connection from %s closed: too many connections", oldest.peer)
            self._closed("evicted")
            if oldest.state is _State.QUEUED or (oldest.state is _State.HEAD and oldest.buffer):
                self._refused(503, oldest.queued or bytes(oldest.buffer))
                _send_now(oldest.sock, _refusal(503, "too many connections", oldest.web))
            self._close(oldest)
        return not self._full()

    def _progress(self, conn: Conn) -> None:
        if conn.state is _State.PEEK:
            self._peek(conn)
        elif conn.state is _State.HANDSHAKE:
            self._handshake(conn)
        elif conn.state in (_State.HEAD, _State.IDLE):
            self._read(conn)
        elif conn.state is _State.WRITING:
            self._flush(conn)
        elif conn.state is _State.CLOSING:
            self._drop_input(conn)

    def _peek(self, conn: Conn) -> None:
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if first != b"\x16":
            # Not a TLS handshake record: as Go's server, tell an HTTP client why.
            if first.isalpha():
                self._refused(400, b"")
                _send_now(conn.sock, NOT_HTTP_OVER_TLS)
                self._linger(conn)
            else:
                self._close(conn)
            return
        assert conn.web.context is not None
        self._selector.unregister(conn.sock)
        try:
            conn.sock = conn.web.context.wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            _log.debug("TLS with %s failed: %s", conn.peer, exc)
            self._closed("tls")
            self._close(conn)
            return
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.state = _State.HANDSHAKE
        self._handshake(conn)

    def _handshake(self, conn: Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self._selector.modify(sock, selectors.EVENT_WRITE, conn)
            return
        except (OSError, ssl.SSLError) as exc:
            _log.debug("TLS handshake with %s failed: %s", conn.peer, exc)
            self._closed("tls")
            self._close(conn)
            return
        if conn.web.allowed_sans is not None and not san_allowed(
            sock.getpeercert(), conn.web.allowed_sans
        ):
            _log.warning("client certificate of %s has none of client_allowed_sans", conn.peer)
            self._closed("tls")
            self._close(conn)
            return
        # A verified client certificate is an authentication of its own.
        conn.proven = conn.web.context is not None and (
            conn.web.context.verify_mode == ssl.CERT_REQUIRED
        )
        conn.state = _State.HEAD
        self._selector.modify(sock, selectors.EVENT_READ, conn)
        # TLS 1.3 clients send their request with the handshake's end.
        self._read(conn)

    def _read(self, conn: Conn) -> None:
        sock = conn.sock
        while True:
            room = MAX_HEAD + 1 - len(conn.buffer)
            if room <= 0:
                break
            try:
                chunk = sock.recv(min(room, 65536))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (OSError, ssl.SSLError):
                self._close(conn)
                return
            if not chunk:
                # The client closed its side: between requests, that is how
                # keep-alive ends; after a request, it may still read the answer.
                if not conn.buffer:
                    self._close(conn)
                    return
                conn.ended = True
                break
            if conn.state is _State.IDLE:
                conn.state = _State.HEAD
                conn.deadline = time.monotonic() + self.limits.head_timeout
            conn.buffer += chunk
        self._look(conn)

    def _look(self, conn: Conn) -> None:
        """Hand over a complete head, refuse one too large, or wait for more."""
        start = conn.buffer.lstrip(b"\r\n")[:1]
        if start and not start.isalpha():
            # Not the start of a method: a TLS handshake on the plain port, or
            # noise; no line will ever make it a request.
            self._refuse(conn, 400, "not an HTTP request")
            return
        end = head_end(bytes(conn.buffer[: MAX_HEAD + 3]))
        if end is not None and end <= MAX_HEAD + 2:
            head = bytes(conn.buffer[:end])
            del conn.buffer[:end]
            self._dispatch(conn, head)
        elif len(conn.buffer) > MAX_HEAD:
            if b"\n" not in conn.buffer[:MAX_HEAD]:
                self._refuse(conn, 414, "request line too long")
            else:
                self._refuse(conn, 431, f"request head larger than {MAX_HEAD} bytes")
        elif conn.ended:
            self._close(conn)

    def _dispatch(self, conn: Conn, head: bytes) -> None:
        self._selector.unregister(conn.sock)
        if self.busy >= self.limits.workers:
            # Every worker is answering: wait for one, in turn. A client has
            # one request answered at a time, so one that pipelines cheap
            # requests without end keeps no scraper out; the connection stays
            # evictable, and gets a 503 if no worker frees in time.
            conn.state, conn.queued = _State.QUEUED, head
            conn.deadline = time.monotonic() + self.limits.head_timeout
            self._queued.append(conn)
            return
        self._start(conn, head)

    def _start(self, conn: Conn, head: bytes) -> None:
        self._forget(conn)
        conn.state = _State.BUSY
        self.busy += 1
        self._jobs.put((conn, head))
        with self._worker_lock:
            start = self._idle_workers == 0 and self._workers < self.limits.workers
            if start:
                self._workers += 1
            else:
                self._idle_workers -= 1
        if start:
            threading.Thread(target=self._work, name="http", daemon=True).start()

    def _back(self, conn: Conn) -> None:
        """A worker is done with ``conn``."""
        self.busy -= 1
        self._next()
        try:
            conn.sock.setblocking(False)
        except OSError:
            self._close(conn)
            return
        if self._stopping.is_set():
            # Stopping: the answer is the connection's last.
            conn.keep = False
            if not conn.output:
                self._close(conn)
                return
        (self._proven if conn.proven else self._unproven)[conn] = None
        if conn.output:
            # The client has not taken its answer: no worker waits for it,
            # and no further request of it is read until it has.
            conn.state = _State.WRITING
            conn.deadline = time.monotonic() + self.limits.head_timeout
            self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
            return
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._answered(conn)

    def _next(self) -> None:
        """Start the requests that waited for a worker, while there is one."""
        while self._queued and self.busy < self.limits.workers:
            conn = self._queued.popleft()
            if not conn.closed and conn.state is _State.QUEUED:
                head, conn.queued = conn.queued, b""
                self._start(conn, head)

    def _flush(self, conn: Conn) -> None:
        try:
            while conn.output:
                del conn.output[: conn.sock.send(conn.output)]
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except (OSError, ssl.SSLError):
            self._close(conn)
            return
        self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        self._answered(conn)

    def _answered(self, conn: Conn) -> None:
        """``conn``'s answer is sent: end it, or wait for its next request."""
        if not conn.keep:
            self._linger(conn)
            return
        now = time.monotonic()
        if conn.buffer:
            conn.state, conn.deadline = _State.HEAD, now + self.limits.head_timeout
        else:
            conn.state, conn.deadline = _State.IDLE, now + self.limits.idle_timeout
        # A pipelined request may be whole already, or wait in TLS's buffer.
        self._read(conn)

    def _sweep(self, now: float) -> None:
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            for listener in self._listeners:
                if listener.fileno() >= 0 and not self._registered(listener):
                    self._selector.register(listener, selectors.EVENT_READ, None)
        for conn in [*self._unproven, *self._proven]:
            if now < conn.deadline:
                continue
            if conn.state is _State.HEAD and conn.buffer:
                _log.debug("request from %s not read within the time allowed", conn.peer)
                self._closed("timeout")
                self._refuse(conn, 408, "request not read in time")
            elif conn.state in (_State.IDLE, _State.CLOSING):
                self._close(conn)
            elif conn.state is _State.QUEUED:
                head, conn.queued = conn.queued, b""
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)
                self._refuse(conn, 503, "too many requests at once", head)
            elif conn.state is _State.WRITING:
                _log.debug("connection from %s closed: answer not taken in time", conn.peer)
                self._closed("timeout")
                self._close(conn)
            else:
                _log.debug("connection from %s closed: no request in time", conn.peer)
                self._closed("timeout")
                self._close(conn)

    def _registered(self, sock: socket.socket) -> bool:
        try:
            self._selector.get_key(sock)
        except (KeyError, ValueError):
            return False
        return True

    def _refuse(self, conn: Conn, status: int, reason: str, head: bytes | None = None) -> None:
        """Answer ``status`` without a worker (small enough for any socket buffer) and close."""
        self._refused(status, bytes(conn.buffer) if head is None else head)
        conn.buffer.clear()
        _send_now(conn.sock, _refusal(status, reason, conn.web))
        self._linger(conn)

    def _linger(self, conn: Conn) -> None:
        """Half-close ``conn`` after its last answer, and drop what the client still sends."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except (OSError, ssl.SSLError):
            self._close(conn)
            return
        conn.state = _State.CLOSING
        conn.deadline = time.monotonic() + _LINGER
        conn.buffer.clear()
        self._drop_input(conn)

    def _drop_input(self, conn: Conn) -> None:
        for _ in range(16):
            try:
                if not conn.sock.recv(65536):
                    break
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (OSError, ssl.SSLError):
                break
        else:
            return
        self._close(conn)

    def _forget(self, conn: Conn) -> None:
        self._unproven.pop(conn, None)
        self._proven.pop(conn, None)

    def _close(self, conn: Conn) -> None:
        self._forget(conn)
        if conn.closed:
            return
        conn.closed = True
        if self._registered(conn.sock):
            self._selector.unregister(conn.sock)
        _shut(conn.sock)

    # --- worker threads ------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                conn, head = self._jobs.get(timeout=_WORKER_IDLE)
            except queue.Empty:
                with self._worker_lock:
                    # Unless a request has just counted on this thread.
                    if self._idle_workers > 0:
                        self._idle_workers -= 1
                        self._workers -= 1
                        return
                continue
            try:
                conn.sock.setblocking(True)
                self._handler(conn, head)
            except Exception:  # noqa: BLE001 - one request's bug must not end the worker
                _log.exception("internal error while answering %s", conn.peer)
                conn.keep = False
            finally:
                with self._worker_lock:
                    self._idle_workers += 1
                self._returned.put(conn)
                self._wake()


def _refusal(status: int, reason: str, web: WebConfig) -> bytes:
    return answer(
        status,
        f"{reason}\n".encode(),
        {"Content-Type": _TEXT, **web.headers},
        close=True,
    )


def _send_now(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` if the socket takes it at once; a client that does not read gets nothing."""
    with contextlib.suppress(OSError, ssl.SSLError):
        sock.send(data)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
