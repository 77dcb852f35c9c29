"""Fetching CRLs from their distribution points (HTTP only), within one deadline.

Public CAs now publish revocation only as CRLs (Let's Encrypt ended OCSP in
2025), at the URL in each certificate's CRL Distribution Points. A fleet
run asks for each URL once: many servers share an issuer.

The deadline covers the whole fetch: name lookup, connection, request,
status line, headers and body. A per-read timeout would let a server that
sends a byte a second hold the check for as long as it likes, so every read
waits only for what is left of the deadline. The URL comes from a
certificate: it is checked before use, and a URL that is not a plain
``http://host[:port]/path`` is a failure of its own, never an exception.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from urllib.parse import urlsplit

from .record import Record

__all__ = [
    "MAX_CRL_BYTES",
    "CrlFetcher",
    "CrlUrl",
    "Fetched",
    "dechunk",
    "parse_crl_url",
    "parse_head",
]

#: Larger than any real CRL shard (Let's Encrypt's are well under 1 MB),
#: small enough that a hostile URL cannot fill the monitoring host's memory.
MAX_CRL_BYTES = 10 * 1024 * 1024
#: Status line and headers: far more than any CRL server sends.
_MAX_HEAD_BYTES = 64 * 1024
_READ_SIZE = 64 * 1024

# A host name as DNS and HTTP know it; anything else in a certificate's URL
# (a space, a control character, a percent sign) is no host to connect to.
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
# RFC 3986's characters for a path and a query, percent-escapes included.
_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@/%?-]*")


class Fetched(Record):
    """The body of a CRL URL, or why there is none."""

    url: str
    body: bytes | None
    failure: str | None = None


class CrlUrl(Record):
    """A CRL URL taken apart: where to connect and what to ask for."""

    host: str
    port: int
    #: Path and query as sent in the request line.
    target: str
    #: The Host header's value.
    authority: str


def parse_crl_url(url: str) -> CrlUrl:
    """Take an ``http://`` URL apart.

    Raises:
        ValueError: not a URL the check fetches; the message says why.
    """
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError("not a valid URL (spaces, control or non-ASCII characters)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("not a valid URL (host or port)") from None
    if parts.scheme.lower() != "http":
        raise ValueError("only http:// CRL URLs are fetched")
    if "@" in parts.netloc:
        raise ValueError("not a valid URL (user information)")
    host = parts.hostname or ""
    if parts.netloc.startswith("["):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("not a valid URL (IPv6 address)") from None
        if address.version != 6:
            raise ValueError("not a valid URL (IPv6 address)")
    elif not _HOST_NAME.fullmatch(host):
        raise ValueError("not a valid URL (host)")
    if port == 0:
        raise ValueError("not a valid URL (port)")
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    if not target.startswith("/") or not _PATH.fullmatch(target):
        raise ValueError("not a valid URL (path)")
    authority = parts.netloc.rpartition("@")[2]
    return CrlUrl(host, port or 80, target, authority)


class _Failed(Exception):
    """One fetch failed; the message is the reason."""


class CrlFetcher:
    """Fetches each URL at most once per run; safe to share between threads."""

    def __init__(self, max_bytes: int = MAX_CRL_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._done: dict[str, Fetched] = {}

    def fetch(self, url: str, deadline: float) -> Fetched:
        """The body at ``url``; ``deadline`` is a time.monotonic() value not to pass."""
        with self._lock:
            known = self._done.get(url)
        if known is not None:
            return known
        fetched = self._fetch(url, deadline)
        if fetched.body is not None or "timed out" not in (fetched.failure or ""):
            # A time-out may be this target's short deadline: another may fare better.
            with self._lock:
                self._done[url] = fetched
        return fetched

    def _fetch(self, url: str, deadline: float) -> Fetched:
        try:
            where = parse_crl_url(url)
        except ValueError as exc:
            return Fetched(url, None, str(exc))
        budget = deadline - time.monotonic()
        if budget <= 0:
            return Fetched(url, None, "no time left within the timeout")
        try:
            body = _get(where, deadline, budget, self.max_bytes)
        except _Failed as exc:
            return Fetched(url, None, str(exc))
        return Fetched(url, body)


def _left(deadline: float, budget: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Failed(f"timed out after {budget:.1f} seconds")
    return left


def _get(where: CrlUrl, deadline: float, budget: float, max_bytes: int) -> bytes:
    addresses = _resolve(where, deadline, budget)
    sock = _connect(addresses, where.port, deadline, budget)
    request = (
        f"GET {where.target} HTTP/1.0\r\nHost: {where.authority}\r\n"
        "User-Agent: check_pg_tls\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    try:
        sock.settimeout(_left(deadline, budget))
        sock.sendall(request.encode("ascii"))
        head, start = _read_head(sock, deadline, budget)
        status, headers = parse_head(head)
        if status != 200:
            raise _Failed(f"HTTP {status}")
        length = _content_length(headers, max_bytes)
        body = _read_body(sock, start, length, deadline, budget, max_bytes)
        if headers.get("transfer-encoding", "identity").lower() == "chunked":
            body = dechunk(body)
    except TimeoutError:
        raise _Failed(f"timed out after {budget:.1f} seconds") from None
    except ValueError as exc:
        raise _Failed(str(exc)) from None
    except OSError as exc:
        raise _Failed((exc.strerror or str(exc)).lower()) from None
    finally:
        sock.close()
    return body


def _content_length(headers: dict[str, str], max_bytes: int) -> int | None:
    length = headers.get("content-length")
    if length is None:
        return None
    if not length.isdigit():
        raise _Failed("invalid Content-Length")
    if int(length) > max_bytes:
        raise _Failed(f"larger than {max_bytes // (1024 * 1024)} MiB")
    return int(length)


def _resolve(where: CrlUrl, deadline: float, budget: float) -> list[tuple[int, str]]:
    try:
        infos = socket.getaddrinfo(
            where.host, where.port, 0, socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
    except socket.gaierror:
        infos = _lookup(where, deadline, budget)
    return [(info[0], str(info[4][0])) for info in infos]


def _lookup(where: CrlUrl, deadline: float, budget: float) -> list:  # type: ignore[type-arg]
    from .lookups import getaddrinfo_within

    try:
        found = getaddrinfo_within(where.host, where.port, 0, _left(deadline, budget))
    except OSError as exc:
        raise _Failed(f"cannot resolve the host: {(exc.strerror or str(exc)).lower()}") from None
    except UnicodeError:
        raise _Failed("not a valid URL (host)") from None
    if found is None:
        raise _Failed(f"timed out after {budget:.1f} seconds (name lookup)")
    return found


def _connect(
    addresses: list[tuple[int, str]], port: int, deadline: float, budget: float
) -> socket.socket:
    failure = "no address"
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_left(deadline, budget))
            sock.connect((address, port))
        except TimeoutError:
            sock.close()
            raise _Failed(f"timed out after {budget:.1f} seconds") from None
        except _Failed:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            failure = (exc.strerror or str(exc)).lower()
            continue
        return sock
    raise _Failed(failure)


def _read_head(sock: socket.socket, deadline: float, budget: float) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD_BYTES:
            raise _Failed("not an HTTP answer (headers too long)")
        sock.settimeout(_left(deadline, budget))
        chunk = sock.recv(_READ_SIZE)
        if not chunk:
            raise _Failed("connection closed before the end of the headers")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _read_body(
    sock: socket.socket,
    body: bytes,
    length: int | None,
    deadline: float,
    budget: float,
    max_bytes: int,
) -> bytes:
    parts = [body]
    size = len(body)
    while length is None or size < length:
        if size > max_bytes:
            raise _Failed(f"larger than {max_bytes // (1024 * 1024)} MiB")
        sock.settimeout(_left(deadline, budget))
        chunk = sock.recv(_READ_SIZE)
        if not chunk:
            if length is not None:
                raise _Failed(f"connection closed after {size} of {length} bytes")
            break
        parts.append(chunk)
        size += len(chunk)
    if size > max_bytes:
        raise _Failed(f"larger than {max_bytes // (1024 * 1024)} MiB")
    return b"".join(parts)[:length] if length is not None else b"".join(parts)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status code and the headers (names in lower case) of an HTTP answer.

    Raises:
        ValueError: not an HTTP/1.x status line.
    """
    lines = head.split(b"\r\n")
    status = re.fullmatch(rb"HTTP/1\.[01] ([0-9]{3})(?: .*)?", lines[0])
    if status is None:
        raise ValueError("not an HTTP answer")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return int(status.group(1)), headers


def dechunk(body: bytes) -> bytes:
    """The content of a chunked body (RFC 9112 section 7.1), trailers dropped.

    Raises:
        ValueError: the chunks do not add up.
    """
    out: list[bytes] = []
    while True:
        line, sep, body = body.partition(b"\r\n")
        size_text = line.split(b";")[0].strip()
        if not sep or not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
            raise ValueError("broken chunked encoding")
        size = int(size_text, 16)
        if size == 0:
            return b"".join(out)
        if len(body) < size + 2 or body[size : size + 2] != b"\r\n":
            raise ValueError("broken chunked encoding")
        out.append(body[:size])
        body = body[size + 2 :]
