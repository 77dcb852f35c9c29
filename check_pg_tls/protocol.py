"""The PostgreSQL SSLRequest exchange, as bytes only.

The client sends an 8-byte SSLRequest; a PostgreSQL server answers with
exactly one byte. This module knows those bytes and nothing about sockets,
so every malformed answer can be tested on its own.
"""

from __future__ import annotations

import enum
import struct

__all__ = [
    "SSL_REQUEST",
    "SSL_REQUEST_CODE",
    "ProtocolViolation",
    "Reply",
    "parse_reply",
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
