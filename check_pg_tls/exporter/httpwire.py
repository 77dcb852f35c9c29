"""HTTP/1.1 requests and answers as bytes: no sockets here.

The exporter speaks just enough HTTP/1.1 for Prometheus, curl and a
browser, and refuses the rest with the status Go's net/http (and so
exporter-toolkit) would send. A request's head (request line and headers)
is bounded in bytes before it is parsed at all, so that whoever can reach
the port, authenticated or not, costs at most :data:`MAX_HEAD` bytes per
connection; the body, which only ``POST /-/reload`` takes, is bounded too.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from email.utils import formatdate

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "MAX_HEADERS",
    "NOT_HTTP_OVER_TLS",
    "BadRequest",
    "Request",
    "answer",
    "head_end",
    "parse_head",
]

#: The most bytes of a request's line and headers together. Prometheus
#: sends about 300; a long connection string as a target fits many times.
MAX_HEAD = 16384
#: The most header lines, as Python's own server and Go's count them.
MAX_HEADERS = 100
#: The largest request body read (only ``POST /-/reload`` has one).
MAX_BODY = 65536

#: What Go's server answers to plain HTTP on a TLS port, in plain HTTP.
NOT_HTTP_OVER_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
# RFC 9110's token: methods and header names.
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
# A field value: visible characters, blanks and obs-text; no controls.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


class BadRequest(Exception):
    """A request that is not answered as asked: the status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """A request's head, parsed."""

    method: str
    #: The request target as sent (origin form, or absolute form).
    target: str
    #: ``(1, 0)`` or ``(1, 1)``.
    version: tuple[int, int]
    #: Header names in lower case, values without surrounding blanks, in order.
    headers: tuple[tuple[str, str], ...] = field(default=())

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    @property
    def keep_alive(self) -> bool:
        """Whether the client lets the connection stay open after the answer."""
        tokens = {
            part.strip().lower() for value in self.all("connection") for part in value.split(",")
        }
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens

    def body_length(self) -> int:
        """The body's length from ``Content-Length`` (0 without one).

        Raises:
            BadRequest: a body framed any other way, a length that is not
                one number, or one larger than :data:`MAX_BODY`.
        """
        if self.header("transfer-encoding") is not None:
            # Nothing here takes a chunked body; Go answers 411 without a length too.
            raise BadRequest(411, "a request body needs Content-Length")
        values = {part.strip() for value in self.all("content-length") for part in value.split(",")}
        if not values:
            return 0
        if len(values) > 1:
            # RFC 9112 6.3: differing lengths are an unrecoverable error.
            raise BadRequest(400, "conflicting Content-Length headers")
        (text,) = values
        if not text.isdigit() or not text.isascii():
            raise BadRequest(400, "invalid Content-Length")
        if int(text) > MAX_BODY:
            raise BadRequest(413, "request body too large")
        return int(text)


def head_end(data: bytes) -> int | None:
    """Where the head in ``data`` ends (after its empty line), or None if it has not yet.

    Lines may end with CRLF or a bare LF, as RFC 9112 lets a server accept.
    """
    found = [at + 3 for at in (data.find(b"\n\r\n"),) if at >= 0]
    found += [at + 2 for at in (data.find(b"\n\n"),) if at >= 0]
    return min(found) if found else None


def parse_head(head: bytes) -> Request:
    """The request whose head (up to and with its empty line) is ``head``.

    Raises:
        BadRequest: with the status Go's server would answer.
    """
    lines = head.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    while lines and lines[0] == b"":
        # RFC 9112 2.2: empty lines before the request line are ignored.
        lines.pop(0)
    if not lines:
        raise BadRequest(400, "empty request")
    method, target, version = _request_line(lines[0])
    headers = []
    for line in lines[1:]:
        if line == b"":
            break
        if line[:1] in (b" ", b"\t"):
            # RFC 9112 5.2: obsolete line folding may be refused.
            raise BadRequest(400, "folded header line")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest(400, "malformed header line")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise BadRequest(400, "invalid character in a header value")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
        if len(headers) > MAX_HEADERS:
            raise BadRequest(431, "too many header lines")
    return Request(method, target, version, tuple(headers))


def _request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        # HTTP/0.9 ("GET /path") included: Go refuses it too.
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise BadRequest(400, "malformed request line")
    match = _VERSION.fullmatch(version)
    if match is None:
        raise BadRequest(400, "malformed HTTP version")
    numbers = (int(match.group(1)), int(match.group(2)))
    if numbers[0] != 1:
        raise BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are spoken")
    if not all(0x21 <= byte <= 0x7E for byte in target):
        raise BadRequest(400, "invalid character in the request target")
    return method.decode("ascii"), target.decode("ascii"), numbers


def answer(
    status: int,
    body: bytes,
    headers: dict[str, str],
    *,
    head_only: bool = False,
    close: bool = False,
) -> bytes:
    """An HTTP/1.1 answer: status line, ``headers``, length, date, and the body."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Date: {formatdate(time.time(), usegmt=True)}")
    if close:
        lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data if head_only else data + body


def interim_continue() -> bytes:
    """The interim answer to ``Expect: 100-continue``."""
    return b"HTTP/1.1 100 Continue\r\n\r\n"
