"""The only module that talks to the network.

One call, :func:`probe`, connects, sends the SSLRequest, runs the TLS
handshake without verification, and returns a frozen :class:`Observation`.
Verification happens afterwards in pure code, so an expired or untrusted
certificate still gets its days left reported. The handshake always ends
with close_notify: a probe leaves no error line in the server's log.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any, NamedTuple

from .errors import ServerMisbehaved, Unreachable
from .names import ip_literal
from .protocol import (
    SSL_REQUEST,
    ProtocolViolation,
    Reply,
    StartupReply,
    message_length,
    parse_reply,
    parse_startup_reply,
    startup_message,
)

__all__ = ["Observation", "Target", "probe", "probe_plaintext"]

# Offered like libpq 17+ does; older servers ignore it.
ALPN_PROTOCOL = "postgresql"

# ssl.Encoding is not public; the private module has the constant in 3.10+.
_ENCODING_DER: int = getattr(ssl, "_ssl").ENCODING_DER  # noqa: B009

_FAMILIES = {0: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}


class Target(NamedTuple):
    """Where to connect and which name the certificate must carry."""

    host: str
    port: int = 5432
    #: The name to verify and send as SNI (libpq's ``host`` when ``hostaddr``
    #: is given); ``None`` means ``host``.
    servername: str | None = None
    #: 0 for any address family, 4 or 6 to insist on one.
    family: int = 0

    @property
    def checked_name(self) -> str:
        return self.servername or self.host

    def __str__(self) -> str:
        """The target in spec form: ``host:port``, ``host(servername):port``, ``[v6]:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        name = f"({self.servername})" if self.servername and self.servername != self.host else ""
        return f"{host}{name}:{self.port}"


class Observation(NamedTuple):
    """What one probe saw. DER bytes only: parsing is the caller's business."""

    #: The address actually connected to (one of those ``host`` resolved to).
    address: str
    #: Every certificate the server presented, leaf first, as sent.
    chain: tuple[bytes, ...]
    tls_version: str
    cipher: str
    alpn: str | None
    #: Seconds from start to connected, and from start to handshake done.
    connect_seconds: float
    handshake_seconds: float


class _Deadline:
    """Time left for the whole probe.

    The network gets a little less than the user's timeout, so the plugin
    still reports its own, clear result before the monitoring system gives
    up; messages name the user's number.
    """

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + seconds - min(0.5, seconds * 0.1)
        self.seconds = seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise Unreachable(f"no answer within {self.seconds:g} seconds")
        return left

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def probe(target: Target, timeout: float, direct: bool = False) -> Observation:
    """Connect, negotiate TLS the PostgreSQL way, and record what was presented.

    Returns within ``timeout`` seconds. Never sends a StartupMessage, never
    authenticates. With ``direct``, skips the SSLRequest and starts TLS at
    once, as libpq's ``sslnegotiation=direct`` does (PostgreSQL 17+).

    Raises:
        Unreachable: resolution, connection or any step ran out of time.
        ServerMisbehaved: no TLS, an error reply, a protocol violation or a
            failed handshake.
    """
    deadline = _Deadline(timeout)
    addresses = _resolve(target, deadline)
    sock, address = _connect(addresses, target, deadline)
    connected = deadline.elapsed()
    try:
        if not direct:
            _negotiate(sock, deadline)
        return _handshake(sock, target, address, deadline, connected, direct)
    finally:
        sock.close()


def probe_plaintext(target: Target, user: str, database: str, timeout: float) -> StartupReply:
    """Send an unencrypted StartupMessage and return the server's first answer.

    This is the one probe that leaves a line in the server's log (a refusal,
    or a client that went away before authenticating): it asks whether the
    server would let ``user`` log in without TLS, and closes as soon as the
    answer is in. It never sends a password.

    Raises:
        Unreachable: as for :func:`probe`.
        ServerMisbehaved: no answer, or one that is not PostgreSQL's.
    """
    deadline = _Deadline(timeout)
    sock, _ = _connect(_resolve(target, deadline), target, deadline)
    try:
        sock.settimeout(deadline.remaining())
        sock.sendall(startup_message(user, database))
        header = _recv_exactly(sock, 5, deadline)
        body = _recv_exactly(sock, message_length(header), deadline)
        return parse_startup_reply(header + body)
    except ProtocolViolation as exc:
        raise ServerMisbehaved(str(exc)) from None
    except TimeoutError:
        raise Unreachable(
            f"server did not answer the StartupMessage within {deadline.seconds:g} seconds"
        ) from None
    except OSError as exc:
        raise ServerMisbehaved(
            f"connection failed during the StartupMessage: {_reason(exc)}"
        ) from None
    finally:
        sock.close()


def _recv_exactly(sock: socket.socket, count: int, deadline: _Deadline) -> bytes:
    data = b""
    while len(data) < count:
        sock.settimeout(deadline.remaining())
        chunk = sock.recv(count - len(data))
        if not chunk:
            break  # the parser reports what is missing
        data += chunk
    return data


def _resolve(target: Target, deadline: _Deadline) -> list[tuple[int, str]]:
    family = _FAMILIES[target.family]
    try:
        infos = socket.getaddrinfo(
            target.host,
            target.port,
            family,
            socket.SOCK_STREAM,
            flags=socket.AI_NUMERICHOST,
        )
    except socket.gaierror:
        infos = _resolve_name(target.host, target.port, family, deadline)
    return [(info[0], str(info[4][0])) for info in infos]


def _resolve_name(host: str, port: int, family: int, deadline: _Deadline) -> list:  # type: ignore[type-arg]
    # getaddrinfo cannot be interrupted; a daemon thread lets the deadline
    # win against a resolver that hangs.
    outcome: list[object] = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, family, socket.SOCK_STREAM))
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(deadline.remaining())
    if not outcome:
        raise Unreachable(f"cannot resolve {host}: no answer within {deadline.seconds:g} seconds")
    result = outcome[0]
    if isinstance(result, OSError):
        reason = result.strerror or str(result)
        raise Unreachable(f"cannot resolve {host}: {reason}")
    return result  # type: ignore[return-value]


def _connect(
    addresses: list[tuple[int, str]], target: Target, deadline: _Deadline
) -> tuple[socket.socket, str]:
    # Like libpq: try each address in turn, report the last failure.
    failure = "no address"
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect((address, target.port))
        except Unreachable:
            sock.close()
            raise
        except TimeoutError:
            sock.close()
            failure = f"connection to {address} timed out after {deadline.seconds:g} seconds"
            continue
        except OSError as exc:
            sock.close()
            failure = _reason(exc) if address == target.host else f"{_reason(exc)} ({address})"
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address
    raise Unreachable(failure)


def _negotiate(sock: socket.socket, deadline: _Deadline) -> None:
    try:
        sock.settimeout(deadline.remaining())
        sock.sendall(SSL_REQUEST)
        first = sock.recv(1)
        data = first + _queued(sock) if first == b"S" else first
    except TimeoutError:
        raise Unreachable(
            f"server accepted the connection but did not answer the SSLRequest "
            f"within {deadline.seconds:g} seconds"
        ) from None
    except ConnectionResetError:
        raise ServerMisbehaved(
            "server reset the connection instead of answering the SSLRequest: "
            "not a PostgreSQL server"
        ) from None
    except OSError as exc:
        raise ServerMisbehaved(f"connection failed during the SSLRequest: {_reason(exc)}") from None
    try:
        reply = parse_reply(data)
    except ProtocolViolation as exc:
        raise ServerMisbehaved(str(exc)) from None
    if reply is Reply.NO_TLS:
        raise ServerMisbehaved("server does not offer TLS (it answered N to the SSLRequest)")
    if reply is Reply.ERROR:
        raise ServerMisbehaved(
            "server answered the SSLRequest with an error message "
            "(not shown: it is unauthenticated)"
        )


def _queued(sock: socket.socket) -> bytes:
    # A peek on a socket with a timeout would wait for the whole timeout;
    # only bytes that are already here matter.
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return b""


def _context() -> ssl.SSLContext:
    # Verification is done afterwards on the captured chain: verifying in the
    # handshake would abort it with an alert and leave an error line in the
    # server's log, and would hide the days left of a bad certificate.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Accept every protocol version and cipher a server may still offer, so
    # that an old or weak server is seen and judged (libpq's own minimum is
    # TLS 1.2: the verdict compares against --min-tls-version), rather than
    # reported as a bare handshake failure.
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.set_alpn_protocols([ALPN_PROTOCOL])
    return context


def _handshake(
    sock: socket.socket,
    target: Target,
    address: str,
    deadline: _Deadline,
    connected: float,
    direct: bool,
) -> Observation:
    name = target.checked_name
    # libpq sends SNI unless the host is an IP literal (sslsni=1).
    sni = None if ip_literal(name) is not None else name
    try:
        sock.settimeout(deadline.remaining())
        tls = _context().wrap_socket(sock, server_hostname=sni, do_handshake_on_connect=False)
        tls.settimeout(deadline.remaining())
        tls.do_handshake()
    except TimeoutError:
        raise Unreachable(
            f"TLS handshake did not complete within {deadline.seconds:g} seconds"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else _reason(exc)
        if direct:
            # PostgreSQL 16 and older read the ClientHello as a startup packet
            # and hang up; pgbouncer answers in plain text.
            raise ServerMisbehaved(
                f"server does not support direct TLS negotiation (TLS handshake failed: {reason})"
            ) from None
        raise ServerMisbehaved(f"TLS handshake failed: {reason}") from None
    handshake_done = deadline.elapsed()
    if direct and tls.selected_alpn_protocol() != ALPN_PROTOCOL:
        # PostgreSQL 18 completes a handshake without ALPN and only then
        # hangs up: a finished handshake alone proves nothing.
        _close_politely(tls, deadline)
        raise ServerMisbehaved(
            "server does not support direct TLS negotiation (it did not select ALPN "
            f"{ALPN_PROTOCOL})"
        )
    chain = _presented_chain(tls)
    cipher = tls.cipher()
    observation = Observation(
        address=address,
        chain=chain,
        tls_version=tls.version() or "unknown",
        cipher=cipher[0] if cipher else "unknown",
        alpn=tls.selected_alpn_protocol(),
        connect_seconds=connected,
        handshake_seconds=handshake_done,
    )
    _close_politely(tls, deadline)
    return observation


def _presented_chain(tls: ssl.SSLSocket) -> tuple[bytes, ...]:
    # getpeercert() gives the leaf only. The whole chain as sent is public
    # from Python 3.13 on and private (but present) before.
    owner: Any = tls if hasattr(tls, "get_unverified_chain") else getattr(tls, "_sslobj", None)
    chain = owner.get_unverified_chain() if owner is not None else None
    # Elements are DER bytes (3.13+) or _ssl.Certificate objects (before).
    ders = tuple(
        item if isinstance(item, bytes) else item.public_bytes(_ENCODING_DER)
        for item in chain or ()
    )
    if not ders:
        leaf = tls.getpeercert(binary_form=True)
        if not leaf:
            raise ServerMisbehaved("server presented no certificate")
        ders = (leaf,)
    return ders


def _close_politely(tls: ssl.SSLSocket, deadline: _Deadline) -> None:
    # close_notify lets the server end the session quietly; without it the
    # server logs "could not receive data from client". What the server does
    # after that no longer matters: the observation is complete.
    try:
        tls.settimeout(max(0.001, min(deadline.end - time.monotonic(), 1.0)))
        tls.unwrap()
    except (OSError, ValueError):
        pass


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _ssl_reason(exc: ssl.SSLError) -> str:
    # OpenSSL's reason code (e.g. TLSV1_ALERT_PROTOCOL_VERSION): our library's
    # words for what happened, never text the server chose.
    reason = getattr(exc, "reason", None)
    return (
        str(reason).lower().replace("_", " ") if reason else str(exc.args[-1] if exc.args else exc)
    )
