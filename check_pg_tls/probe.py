"""The TLS probe: a check's connection to the PostgreSQL server.

Beside it, only :mod:`.tlsa_lookup` (DNS) and :mod:`.crl_fetch` (HTTP) use
the network. One call, :func:`probe`, connects, sends the SSLRequest (none
with direct negotiation), runs the TLS handshake and returns a frozen
:class:`~.model.Observation`. OpenSSL verifies the chain inside the
handshake, as it does for libpq, but its complaints are recorded rather than
fatal (see :mod:`.openssl_client`): the handshake completes, an expired or
untrusted certificate still gets its days left reported, and the connection
always ends with close_notify, so a probe leaves no error line in the
server's log. With a :class:`~.model.Login`, a StartupMessage goes over the
same connection and the server's answer is recorded; no password is ever
sent. :func:`probe_plaintext` asks, without TLS, whether the server would
let a user log in unencrypted.
"""

from __future__ import annotations

import functools
import select
import socket
import time
from collections.abc import Callable
from typing import TypeVar

from OpenSSL import SSL, crypto

from .errors import CheckFailed, ClientRefused, ServerMisbehaved, Unreachable
from .model import Login, LoginAnswer, Observation, Target, TcpSettings, VerifyError
from .names import ip_literal
from .openssl_client import (
    ALPN_PROTOCOL,
    ClientContexts,
    HandshakeLog,
    openssl_reason,
    verify_error_message,
)
from .protocol import (
    SSL_REQUEST,
    TERMINATE,
    AuthCode,
    ProtocolViolation,
    Reply,
    StartupReply,
    StartupReplyKind,
    message_length,
    parse_reply,
    parse_session_message,
    parse_startup_reply,
    session_message_length,
    startup_message,
)
from .text import safe

__all__ = ["probe", "probe_plaintext"]

_FAMILIES = {0: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}

_T = TypeVar("_T")


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


def probe(
    target: Target,
    timeout: float,
    contexts: ClientContexts,
    direct: bool = False,
    login: Login | None = None,
    tcp: TcpSettings | None = None,
) -> Observation:
    """Connect, negotiate TLS the PostgreSQL way, and record what was presented.

    Returns within ``timeout`` seconds. Never authenticates; sends a
    StartupMessage only for a ``login``, after the handshake, and records
    what the server asks for. With ``direct``, skips the SSLRequest and
    starts TLS at once, as libpq's ``sslnegotiation=direct`` does
    (PostgreSQL 17+).

    The handshake uses libpq's settings first. Only when that handshake
    fails is a second one tried with legacy settings, so that an old server
    is named for what it speaks; the observation then says why the first
    one failed. A connection string's TCP settings (``tcp``) go to the socket
    as libpq gives them to its own, before it connects.

    Raises:
        Unreachable: resolution, connection or any step ran out of time.
        ServerMisbehaved: no TLS, an error reply, a protocol violation or a
            failed handshake.
        ClientRefused: the kernel refuses a TCP setting, as it would libpq's.
    """
    deadline = _Deadline(timeout)
    addresses = _resolve(target, deadline)
    try:
        return _attempt(addresses, target, deadline, contexts.current, direct, login, tcp)
    except _HandshakeFailed as exc:
        if direct:
            # PostgreSQL 16 and older read the ClientHello as a startup packet
            # and hang up; pgbouncer answers in plain text.
            raise ServerMisbehaved(
                f"server does not support direct TLS negotiation (TLS handshake failed: "
                f"{exc.reason})"
            ) from None
        first = exc.reason
    try:
        observation = _attempt(addresses, target, deadline, contexts.legacy, direct, login, tcp)
    except (_HandshakeFailed, Unreachable, ServerMisbehaved):
        raise ServerMisbehaved(f"TLS handshake failed: {first}") from None
    return observation._replace(legacy_reason=first)


class _HandshakeFailed(ServerMisbehaved):
    """The TLS handshake itself failed; ``reason`` is OpenSSL's word for why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"TLS handshake failed: {reason}")
        self.reason = reason


def _attempt(
    addresses: list[tuple[int, str]],
    target: Target,
    deadline: _Deadline,
    context: SSL.Context,
    direct: bool,
    login: Login | None,
    tcp: TcpSettings | None,
) -> Observation:
    sock, address = _connect(addresses, target, deadline, tcp)
    connected = deadline.elapsed()
    try:
        if not direct:
            _negotiate(sock, deadline)
        return _handshake(sock, target, address, deadline, connected, context, direct, login)
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
    except UnicodeError:
        # Python's IDNA encoder refuses it (an empty or over-long label).
        raise CheckFailed(
            f"cannot look up {safe(target.host, 100)}: not a valid host name"
        ) from None
    return [(info[0], str(info[4][0])) for info in infos]


def _resolve_name(host: str, port: int, family: int, deadline: _Deadline) -> list:  # type: ignore[type-arg]
    from .lookups import getaddrinfo_within

    try:
        found = getaddrinfo_within(host, port, family, deadline.remaining())
    except UnicodeError:
        raise CheckFailed(f"cannot look up {safe(host, 100)}: not a valid host name") from None
    except OSError as exc:
        raise Unreachable(f"cannot resolve {host}: {exc.strerror or exc}") from None
    if found is None:
        raise Unreachable(f"cannot resolve {host}: no answer within {deadline.seconds:g} seconds")
    return found


def _connect(
    addresses: list[tuple[int, str]],
    target: Target,
    deadline: _Deadline,
    tcp: TcpSettings | None = None,
) -> tuple[socket.socket, str]:
    # Like libpq: try each address in turn, report the last failure.
    failure = "no address"
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if tcp is not None:
                _apply(tcp, sock)
            sock.settimeout(deadline.remaining())
            sock.connect((address, target.port))
        except (Unreachable, ClientRefused):
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


#: libpq's keepalive keywords and the socket options it sets from them
#: (PG_TCP_KEEPALIVE_IDLE is TCP_KEEPIDLE on Linux and the BSDs).
_KEEPALIVES = (
    ("keepalives_idle", "TCP_KEEPIDLE"),
    ("keepalives_interval", "TCP_KEEPINTVL"),
    ("keepalives_count", "TCP_KEEPCNT"),
)


def _apply(tcp: TcpSettings, sock: socket.socket) -> None:
    """The connection string's TCP settings, given to the kernel as libpq gives them
    (fe-connect.c, PQconnectPoll): nothing with ``keepalives=0``; else SO_KEEPALIVE,
    each keepalive setting given (a negative one as 0), then TCP_USER_TIMEOUT. The
    kernel's refusal is libpq's failure, in libpq's words."""
    if tcp.keepalives == 0:
        return
    steps = [("keepalives", "SO_KEEPALIVE", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for keyword, name in (*_KEEPALIVES, ("tcp_user_timeout", "TCP_USER_TIMEOUT")):
        value = getattr(tcp, keyword)
        option = getattr(socket, name, None)
        # Where the system has no such option, libpq sets nothing either.
        if value is not None and option is not None:
            steps.append((f"{keyword}={value}", name, socket.IPPROTO_TCP, option, max(0, value)))
    for given, name, level, option, value in steps:
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:
            raise ClientRefused(
                f"libpq clients with this connection string cannot connect: setsockopt({name}) "
                f"failed: {exc.strerror or exc} (the kernel refuses {given})"
            ) from None


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


def _wait(sock: socket.socket, deadline: _Deadline, writable: bool, what: str) -> None:
    try:
        left = deadline.remaining()
    except Unreachable:
        raise Unreachable(f"{what} did not complete within {deadline.seconds:g} seconds") from None
    ready = select.select([], [sock], [], left) if writable else select.select([sock], [], [], left)
    if not any(ready):
        raise Unreachable(f"{what} did not complete within {deadline.seconds:g} seconds")


def _drive(step: Callable[[], _T], sock: socket.socket, deadline: _Deadline, what: str) -> _T:
    # pyOpenSSL ignores socket timeouts (the socket is non-blocking
    # underneath): every step that would block says so, and waits here for
    # the socket against the probe's deadline.
    while True:
        try:
            return step()
        except SSL.WantReadError:
            _wait(sock, deadline, False, what)
        except SSL.WantWriteError:
            _wait(sock, deadline, True, what)


def _handshake(
    sock: socket.socket,
    target: Target,
    address: str,
    deadline: _Deadline,
    connected: float,
    context: SSL.Context,
    direct: bool,
    login: Login | None = None,
) -> Observation:
    name = target.checked_name
    sock.setblocking(False)
    tls = SSL.Connection(context, sock)
    log = HandshakeLog()
    tls.set_app_data(log)
    # libpq sends SNI unless the host is an IP literal (sslsni=1); OpenSSL
    # itself would send an IP literal too.
    sni = name.encode("utf-8", "surrogateescape")
    if target.sni and ip_literal(name) is None and 0 < len(sni) <= 255:
        tls.set_tlsext_host_name(sni)
    tls.set_connect_state()
    refusal = None
    try:
        _drive(tls.do_handshake, sock, deadline, "TLS handshake")
    except (SSL.SysCallError, SSL.Error) as exc:
        reason = _failure_reason(exc)
        if not (log.certificate_requested and tls.get_peer_cert_chain()):
            raise _HandshakeFailed(reason) from None
        # TLS 1.2: the server refuses the client (no certificate, or one it
        # does not trust) at the end of the handshake, after it has sent its
        # own chain. That chain is still worth its verdict.
        refusal = reason
    handshake_done = deadline.elapsed()
    alpn = tls.get_alpn_proto_negotiated() or None
    if refusal is None and direct and alpn != ALPN_PROTOCOL:
        # PostgreSQL 18 completes a handshake without ALPN and only then
        # hangs up: a finished handshake alone proves nothing.
        _close_politely(tls, sock, deadline)
        raise ServerMisbehaved(
            "server does not support direct TLS negotiation (it did not select ALPN "
            f"{ALPN_PROTOCOL.decode()})"
        )
    chain = tuple(_der(cert) for cert in tls.get_peer_cert_chain() or ())
    if not chain:
        _close_politely(tls, sock, deadline)
        raise ServerMisbehaved("server presented no certificate")
    sent = tls.get_certificate() is not None
    answer = None
    if login is not None:
        answer = (
            LoginAnswer(login, None, f"no login possible: {refusal}")
            if refusal is not None
            else _ask_login(tls, sock, deadline, login)
        )
        # TLS 1.3: a server that refuses the client's certificate (or its
        # absence) says so with an alert, which the login's read received.
        if refusal is None and answer.failure is not None and log.certificate_requested:
            alert = answer.failure.removeprefix(_ALERT)
            if alert != answer.failure:
                refusal = alert
    elif refusal is None and log.certificate_requested:
        # TLS 1.3: the client's handshake is over before the server has
        # judged the client, so its refusal comes as an alert on the first
        # read. Wait for it only as long as the server took to answer.
        refusal = _refusal_after_handshake(tls, sock, deadline, max(0.1, 3 * connected))
    observation = Observation(
        address=address,
        chain=chain,
        tls_version=tls.get_protocol_version_name() or "unknown",
        cipher=tls.get_cipher_name() or "unknown",
        alpn=alpn.decode("ascii", "replace") if alpn else None,
        connect_seconds=connected,
        handshake_seconds=handshake_done,
        verify_errors=tuple(
            VerifyError(depth, code, verify_error_message(code), _der(cert))
            for depth, code, cert in log.complaints
        ),
        verified_chain=tuple(_der(cert) for cert in tls.get_verified_chain() or ()),
        certificate_requested=log.certificate_requested,
        client_certificate_sent=sent and log.certificate_requested,
        client_refusal=refusal,
        login=answer,
    )
    if refusal is None:
        _close_politely(tls, sock, deadline)
    return observation


# A TLS alert that ended the login: the server's verdict on the client's
# certificate (TLS 1.3), told apart from other failures by this prefix.
_ALERT = "the TLS connection failed: "
#: Messages a session's start may have before ReadyForQuery: the server's
#: parameters and notices; more is not a PostgreSQL server.
_SESSION_MESSAGES = 64


def _ask_login(
    tls: SSL.Connection, sock: socket.socket, deadline: _Deadline, login: Login
) -> LoginAnswer:
    """Send a StartupMessage over TLS and read what the server asks for.

    Nothing else is sent while the server waits for authentication: a client
    may walk away before it authenticates, and PostgreSQL (and pgbouncer)
    log nothing when it does, while a Terminate there is a protocol
    violation they log. Only a server that lets the client in
    (AuthenticationOk) gets a Terminate, once its session is ready, which
    ends it as any client ends one.
    """
    reply: StartupReply | None = None
    try:
        _send(tls, sock, deadline, startup_message(login.user, login.database))
        header = _read(tls, sock, 5, deadline)
        reply = parse_startup_reply(header + _read(tls, sock, message_length(header), deadline))
        if reply.kind is not StartupReplyKind.AUTHENTICATION or reply.auth_code != AuthCode.OK:
            return LoginAnswer(login, reply)
        for _ in range(_SESSION_MESSAGES):
            header = _read(tls, sock, 5, deadline)
            body = _read(tls, sock, session_message_length(header), deadline)
            message = parse_session_message(header + body)
            if message.kind == "E":
                return LoginAnswer(login, reply, session_sqlstate=message.sqlstate or "unknown")
            if message.ends_start:
                _send(tls, sock, deadline, TERMINATE)
                return LoginAnswer(login, reply)
        raise ProtocolViolation("server sent no end to the start of the session")
    except ProtocolViolation as exc:
        return LoginAnswer(login, reply, str(exc))
    except Unreachable:
        waited = "ReadyForQuery" if reply is not None else "answer to the StartupMessage"
        return LoginAnswer(login, reply, f"no {waited} within {deadline.seconds:g} seconds")
    except (SSL.SysCallError, SSL.Error) as exc:
        return LoginAnswer(login, reply, _ALERT + _failure_reason(exc))
    except OSError as exc:
        return LoginAnswer(login, reply, f"connection failed during the login: {_reason(exc)}")


def _send(tls: SSL.Connection, sock: socket.socket, deadline: _Deadline, data: bytes) -> None:
    while data:
        sent = _drive(functools.partial(tls.send, data), sock, deadline, "login")
        data = data[sent:]


def _read(tls: SSL.Connection, sock: socket.socket, count: int, deadline: _Deadline) -> bytes:
    data = b""
    while len(data) < count:
        try:
            chunk = _drive(functools.partial(tls.recv, count - len(data)), sock, deadline, "login")
        except SSL.ZeroReturnError:
            break  # the parser reports what is missing
        if not chunk:
            break
        data += chunk
    return data


def _failure_reason(exc: SSL.Error) -> str:
    if isinstance(exc, SSL.SysCallError):
        return _syscall_reason(exc)
    return openssl_reason(exc) or "unknown error"


def _refusal_after_handshake(
    tls: SSL.Connection, sock: socket.socket, deadline: _Deadline, patience: float
) -> str | None:
    """The server's alert after a finished handshake, or None if it says nothing in time."""
    end = min(deadline.end, time.monotonic() + patience)
    while True:
        try:
            tls.recv(1)
        except SSL.WantReadError:
            left = end - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                return None
            continue
        except SSL.ZeroReturnError:
            return "server closed the connection after the handshake"
        except (SSL.SysCallError, SSL.Error) as exc:
            # pgbouncer sometimes resets the connection instead of alerting.
            return _failure_reason(exc)
        # Data before any StartupMessage: not PostgreSQL's way, but no refusal.
        return None


def _der(cert: crypto.X509) -> bytes:
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)


def _close_politely(tls: SSL.Connection, sock: socket.socket, deadline: _Deadline) -> None:
    # close_notify lets the server end the session quietly; without it the
    # server logs "could not receive data from client". What the server does
    # after that no longer matters: the observation is complete.
    try:
        tls.shutdown()
    except SSL.WantWriteError:
        try:
            _wait(sock, deadline, True, "close")
            tls.shutdown()
        except (SSL.Error, Unreachable, OSError):
            pass
    except (SSL.Error, OSError):
        pass


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _syscall_reason(exc: SSL.SysCallError) -> str:
    # (-1, "Unexpected EOF") when the server hung up, (errno, text) otherwise.
    code = exc.args[0] if exc.args else None
    if code == -1 or not exc.args:
        return "server closed the connection"
    if isinstance(code, int) and code > 0:
        return _reason(OSError(code, str(exc.args[1]) if len(exc.args) > 1 else ""))
    return str(exc.args[-1]).lower()
