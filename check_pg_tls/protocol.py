"""The PostgreSQL protocol's first messages, as bytes only.

The client sends an 8-byte SSLRequest; a PostgreSQL server answers with
exactly one byte. A StartupMessage (``--check-plaintext``, ``--check-auth``)
is answered with an authentication request or an error; after
AuthenticationOk, the server sends its session's first messages up to
ReadyForQuery. This module knows those bytes and nothing about sockets, so
every malformed answer can be tested on its own.
"""

from __future__ import annotations

import enum
import re
import struct

from .record import Record

__all__ = [
    "MAX_MESSAGE",
    "PROTOCOL_3_0",
    "SSL_REQUEST",
    "SSL_REQUEST_CODE",
    "TERMINATE",
    "AuthCode",
    "ProtocolViolation",
    "Reply",
    "SessionMessage",
    "StartupReply",
    "StartupReplyKind",
    "message_length",
    "parse_reply",
    "parse_session_message",
    "parse_startup_reply",
    "session_message_length",
    "startup_message",
]

#: Request code of the SSLRequest message (1234 << 16 | 5679).
SSL_REQUEST_CODE = 80877103

#: The whole SSLRequest: Int32 length (8, itself included), Int32 code.
SSL_REQUEST = struct.pack("!II", 8, SSL_REQUEST_CODE)


class Reply(enum.Enum):
    """What the server's one-byte answer means."""

    #: ``S``: the server is ready for the TLS handshake.
    TLS = "S"
    #: ``N``: the server does not offer TLS on this connection.
    NO_TLS = "N"
    #: ``E``: an ErrorResponse. Its text is unauthenticated and must never be
    #: shown to anyone (CVE-2024-10977), so only the fact is kept.
    ERROR = "E"


class ProtocolViolation(Exception):
    """The server's answer is not one a PostgreSQL server gives."""


def parse_reply(data: bytes) -> Reply:
    """Judge every byte the server has sent in answer to the SSLRequest.

    ``data`` is the first byte read plus whatever was already queued behind
    it. A server that answers ``S`` must then wait for the client's
    ClientHello: bytes queued behind the ``S`` would be read as if they came
    through TLS, which is the buffer-stuffing attack of CVE-2021-23222, so
    they are a violation here rather than noise to ignore.

    Raises:
        ProtocolViolation: the answer is empty, unknown, or ``S`` with bytes
            behind it.
    """
    if not data:
        raise ProtocolViolation("server closed the connection without answering the SSLRequest")
    first = data[:1]
    if first == b"S":
        if len(data) > 1:
            raise ProtocolViolation(
                "server sent unencrypted data after agreeing to TLS "
                "(possible man-in-the-middle, CVE-2021-23222)"
            )
        return Reply.TLS
    if first == b"N":
        return Reply.NO_TLS
    if first == b"E":
        return Reply.ERROR
    raise ProtocolViolation(
        f"server answered the SSLRequest with byte 0x{first[0]:02x}, "
        "not S or N: not a PostgreSQL server"
    )


#: Protocol version 3.0 as a StartupMessage states it.
PROTOCOL_3_0 = 196608

#: The longest first reply to a StartupMessage worth reading. An
#: authentication request is a few bytes, an ErrorResponse a few hundred;
#: more is not a PostgreSQL server, and reading it would only let the other
#: side make us buffer.
MAX_MESSAGE = 8192

# Patterns, not compiled ones: only --check-auth and --check-plaintext read
# a StartupMessage's answer, so re compiles them (and keeps them) on first use
# rather than every check at start-up.
_SQLSTATE = rb"^[0-9A-Z]{5}$"


class StartupReplyKind(enum.Enum):
    #: ``R``: the server asks for (or skips) authentication: it would let the
    #: client log in over this connection.
    AUTHENTICATION = "R"
    #: ``E``: the server refused.
    ERROR = "E"


class AuthCode(enum.IntEnum):
    """The authentication request codes a server may start with."""

    #: AuthenticationOk: no password, no exchange: the client is in.
    OK = 0
    #: Kerberos V5: long gone from PostgreSQL and libpq.
    KERBEROS_V5 = 2
    CLEARTEXT_PASSWORD = 3
    #: MD5Password, followed by a 4-byte salt.
    MD5_PASSWORD = 5
    #: SCM credentials: long gone from PostgreSQL and libpq.
    SCM_CREDENTIAL = 6
    GSS = 7
    SSPI = 9
    #: SASL, followed by the mechanisms the server offers.
    SASL = 10


# Codes that continue an exchange: never the first thing a server sends.
_CONTINUATIONS = frozenset({8, 11, 12})
# The body each request has after its code, when it is fixed.
_EXTRA_BYTES = {code: 0 for code in AuthCode} | {AuthCode.MD5_PASSWORD: 4}
# RFC 4422 section 3.1: a mechanism name is 1 to 20 of A-Z, 0-9, - and _.
_SASL_NAME = rb"^[A-Z0-9_-]{1,20}$"


class StartupReply(Record):
    """The first message a server sends in answer to a StartupMessage."""

    kind: StartupReplyKind
    #: The authentication request code (0 = no password needed), for ``R``.
    auth_code: int | None = None
    #: The ErrorResponse's SQLSTATE (its only part worth keeping: five
    #: characters from a fixed alphabet, never free text), for ``E``.
    sqlstate: str | None = None
    #: The SASL mechanisms offered, in the server's order, for an
    #: AuthenticationSASL request (RFC 4422 names, checked as such).
    mechanisms: tuple[str, ...] = ()


def startup_message(user: str, database: str) -> bytes:
    """A protocol 3.0 StartupMessage for ``user`` and ``database``.

    Raises:
        ValueError: a name contains a NUL byte or the message would be too long.
    """
    fields = b""
    for key, value in (("user", user), ("database", database)):
        raw = value.encode("utf-8")
        if b"\x00" in raw or not raw:
            raise ValueError(f"invalid {key} name {value!r}")
        fields += key.encode() + b"\x00" + raw + b"\x00"
    body = struct.pack("!I", PROTOCOL_3_0) + fields + b"\x00"
    if len(body) + 4 > 10000:
        raise ValueError("user or database name too long")
    return struct.pack("!I", len(body) + 4) + body


#: The Terminate message: how a client ends a session it was let into.
TERMINATE = b"X\x00\x00\x00\x04"


def _length(header: bytes, allowed: bytes, answering: str) -> int:
    if len(header) < 5:
        raise ProtocolViolation(f"server closed the connection without answering {answering}")
    if header[0] == ord("v") and b"R" in allowed:
        # NegotiateProtocolVersion: PostgreSQL sends it only to a client that
        # asks for a newer protocol or for options, which the check does not.
        raise ProtocolViolation(
            f"server answered {answering} with NegotiateProtocolVersion, which PostgreSQL "
            "does not send to a protocol 3.0 StartupMessage without options"
        )
    if header[0] not in allowed:
        raise ProtocolViolation(
            f"server answered {answering} with byte 0x{header[0]:02x}: not a PostgreSQL server"
        )
    length = int.from_bytes(header[1:5], "big")
    if not 4 <= length <= MAX_MESSAGE:
        raise ProtocolViolation(f"server's answer to {answering} has an impossible length")
    return length - 4


def message_length(header: bytes) -> int:
    """The body length announced by a 5-byte message header (type, Int32 length).

    Raises:
        ProtocolViolation: not a message type a server starts with, or a length
            out of bounds.
    """
    return _length(header, b"RE", "the StartupMessage")


def parse_startup_reply(message: bytes) -> StartupReply:
    """Judge a whole first reply: header and body.

    Raises:
        ProtocolViolation: the message is malformed.
    """
    body_length = message_length(message[:5])
    body = message[5:]
    if len(body) != body_length:
        raise ProtocolViolation("server's answer to the StartupMessage is truncated")
    if message[:1] == b"R":
        return _authentication_request(body)
    return StartupReply(StartupReplyKind.ERROR, sqlstate=_sqlstate(body))


def _authentication_request(body: bytes) -> StartupReply:
    if len(body) < 4:
        raise ProtocolViolation("server sent a malformed authentication request")
    (code,) = struct.unpack("!I", body[:4])
    extra = body[4:]
    if code in _CONTINUATIONS:
        raise ProtocolViolation("server continued an authentication exchange that had not begun")
    if code == AuthCode.SASL:
        return StartupReply(
            StartupReplyKind.AUTHENTICATION, auth_code=code, mechanisms=_mechanisms(extra)
        )
    expected = _EXTRA_BYTES.get(code)
    if expected is not None and len(extra) != expected:
        raise ProtocolViolation("server sent a malformed authentication request")
    return StartupReply(StartupReplyKind.AUTHENTICATION, auth_code=code)


def _mechanisms(data: bytes) -> tuple[str, ...]:
    # Each name ends in a NUL; an empty name ends the list, and nothing may follow.
    names: list[str] = []
    while True:
        end = data.find(b"\x00")
        if end < 0:
            raise ProtocolViolation("server's list of SASL mechanisms is not terminated")
        name, data = data[:end], data[end + 1 :]
        if not name:
            break
        if not re.match(_SASL_NAME, name):
            raise ProtocolViolation("server offered a SASL mechanism with an impossible name")
        names.append(name.decode("ascii"))
    if data:
        raise ProtocolViolation("server sent data after its list of SASL mechanisms")
    return tuple(names)


def _sqlstate(body: bytes) -> str | None:
    for field in body.split(b"\x00"):
        if field[:1] == b"C" and re.match(_SQLSTATE, field[1:]):
            return field[1:].decode("ascii")
    return None


class SessionMessage(Record):
    """One message of a session's start, after AuthenticationOk."""

    #: Its type byte: ``S`` ParameterStatus, ``K`` BackendKeyData, ``N``
    #: NoticeResponse, ``Z`` ReadyForQuery, ``E`` ErrorResponse.
    kind: str
    #: For an ErrorResponse, its SQLSTATE (never its text).
    sqlstate: str | None = None

    @property
    def ends_start(self) -> bool:
        """ReadyForQuery or an error: the server waits, or has given up."""
        return self.kind in ("Z", "E")


def session_message_length(header: bytes) -> int:
    """The body length of a message that may follow AuthenticationOk.

    Raises:
        ProtocolViolation: a type that does not belong there, or a length
            out of bounds.
    """
    return _length(header, b"SKNZE", "the login")


def parse_session_message(message: bytes) -> SessionMessage:
    """Judge one whole message after AuthenticationOk.

    Raises:
        ProtocolViolation: the message is malformed.
    """
    body_length = session_message_length(message[:5])
    body = message[5:]
    if len(body) != body_length:
        raise ProtocolViolation("server's answer to the login is truncated")
    kind = chr(message[0])
    if kind == "Z" and (len(body) != 1 or body not in (b"I", b"T", b"E")):
        raise ProtocolViolation("server sent a malformed ReadyForQuery")
    return SessionMessage(kind, _sqlstate(body) if kind == "E" else None)
