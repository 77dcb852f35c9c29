"""The PostgreSQL SSLRequest exchange, as bytes only.

The client sends an 8-byte SSLRequest; a PostgreSQL server answers with
exactly one byte. This module knows those bytes and nothing about sockets,
so every malformed answer can be tested on its own.
"""

from __future__ import annotations

import enum
import re
import struct
from typing import NamedTuple

__all__ = [
    "MAX_MESSAGE",
    "PROTOCOL_3_0",
    "SSL_REQUEST",
    "SSL_REQUEST_CODE",
    "ProtocolViolation",
    "Reply",
    "StartupReply",
    "StartupReplyKind",
    "message_length",
    "parse_reply",
    "parse_startup_reply",
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

_SQLSTATE = re.compile(rb"^[0-9A-Z]{5}$")


class StartupReplyKind(enum.Enum):
    #: ``R``: the server asks for (or skips) authentication: it would let the
    #: client log in over this connection.
    AUTHENTICATION = "R"
    #: ``E``: the server refused.
    ERROR = "E"


class StartupReply(NamedTuple):
    """The first message a server sends in answer to a StartupMessage."""

    kind: StartupReplyKind
    #: The authentication request code (0 = no password needed), for ``R``.
    auth_code: int | None = None
    #: The ErrorResponse's SQLSTATE (its only part worth keeping: five
    #: characters from a fixed alphabet, never free text), for ``E``.
    sqlstate: str | None = None


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


def message_length(header: bytes) -> int:
    """The body length announced by a 5-byte message header (type, Int32 length).

    Raises:
        ProtocolViolation: not a message type a server starts with, or a length
            out of bounds.
    """
    if len(header) < 5:
        raise ProtocolViolation("server closed the connection without answering the StartupMessage")
    if header[:1] not in (b"R", b"E"):
        raise ProtocolViolation(
            f"server answered the StartupMessage with byte 0x{header[0]:02x}: "
            "not a PostgreSQL server"
        )
    length = int.from_bytes(header[1:5], "big")
    if not 4 <= length <= MAX_MESSAGE:
        raise ProtocolViolation("server's answer to the StartupMessage has an impossible length")
    return length - 4


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
        if len(body) < 4:
            raise ProtocolViolation("server sent a malformed authentication request")
        (code,) = struct.unpack("!I", body[:4])
        return StartupReply(StartupReplyKind.AUTHENTICATION, auth_code=code)
    sqlstate = None
    for field in body.split(b"\x00"):
        if field[:1] == b"C" and _SQLSTATE.match(field[1:]):
            sqlstate = field[1:].decode("ascii")
            break
    return StartupReply(StartupReplyKind.ERROR, sqlstate=sqlstate)
