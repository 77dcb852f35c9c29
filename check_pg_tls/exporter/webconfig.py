"""``--web.config.file``: exporter-toolkit's web configuration, so one file serves all.

The same file that secures node_exporter or blackbox_exporter works here:
``tls_server_config`` (certificate, key, versions, client certificates),
``http_server_config`` (extra headers), ``basic_auth_users`` (bcrypt hashes)
and ``rate_limit``. Relative paths are relative to the file, as there.
What Python's ``ssl`` module cannot do is refused with the reason, never
ignored: client certificates accepted without verification
(``RequestClientCert``, ``RequireAnyClientCert``), ``cipher_suites``,
``curve_preferences`` and inline ``cert``/``key``.

As exporter-toolkit does, the file and the files it names are read again
when they change (checked at each connection), so a renewed certificate is
served without a restart; a change that does not load is an error for
every request until it is fixed, never a silent fall back to no security.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .auth import is_bcrypt_hash
from .yamlfile import FileError, Node, compose, entries, value

__all__ = ["FileError", "RateLimit", "WebConfig", "WebConfigSource", "load", "san_allowed"]

_log = logging.getLogger("pg_tls_exporter")

_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_VERIFYING = {
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
#: exporter-toolkit's headers, and the values it accepts (None: any).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_TLS_KEYS = {
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}
_TLS_ON = (
    "cert_file",
    "key_file",
    "cert",
    "key",
    "client_ca_file",
    "client_ca",
    "client_auth_type",
)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``burst`` requests at once, one more every ``interval`` seconds."""

    interval: float
    burst: int


@dataclass(frozen=True)
class WebConfig:
    """A loaded web configuration."""

    #: The TLS server context, or None for plain HTTP.
    context: ssl.SSLContext | None = None
    #: SANs of which a client certificate must carry one (None: any).
    allowed_sans: tuple[str, ...] | None = None
    users: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    rate_limit: RateLimit | None = None
    #: Every file read, for noticing changes.
    files: tuple[str, ...] = ()


def load(path: str | Path) -> WebConfig:
    """Read the web configuration and everything it names.

    Raises:
        FileError: ``FILE:LINE: reason``.
    """
    top = entries(path, compose(path), "the web configuration")
    known = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
    for key, (_, at) in top.items():
        if key not in known:
            raise FileError(path, at, f"unknown key {key!r} (expected one of {', '.join(known)})")
    users: dict[str, str] = {}
    if "basic_auth_users" in top:
        for user, (node, at) in entries(
            path, top["basic_auth_users"][0], "basic_auth_users"
        ).items():
            hashed = value(path, node)
            if not isinstance(hashed, str) or not is_bcrypt_hash(hashed):
                raise FileError(
                    path,
                    at,
                    f"basic_auth_users: the password of {user!r} is not a bcrypt hash "
                    '($2y$, $2b$ or $2a$, e.g. from htpasswd -nBC 10 "")',
                )
            users[user] = hashed
    headers = _headers(path, top.get("http_server_config"))
    rate = _rate_limit(path, top.get("rate_limit"))
    context, sans, files = None, None, [str(path)]
    if "tls_server_config" in top:
        context, sans, named = _tls(path, top["tls_server_config"][0])
        files += named
    return WebConfig(context, sans, users, headers, rate, tuple(files))


def _headers(path: str | Path, item: tuple[Node, int] | None) -> dict[str, str]:
    if item is None:
        return {}
    found = entries(path, item[0], "http_server_config")
    headers: dict[str, str] = {}
    for key, (node, at) in found.items():
        if key == "http2":
            # Only HTTP/1.1 is spoken; a client that asks for HTTP/2 gets 1.1.
            if not isinstance(value(path, node), bool):
                raise FileError(path, at, "http_server_config: http2 is true or false")
            continue
        if key != "headers":
            raise FileError(path, at, f"http_server_config: unknown key {key!r}")
        for name, (header, line) in entries(path, node, "headers").items():
            text = value(path, header)
            if name not in _HEADERS:
                raise FileError(path, line, f"HTTP header {name!r} cannot be configured")
            allowed = _HEADERS[name]
            if not isinstance(text, str) or (allowed is not None and text not in allowed):
                raise FileError(path, line, f"invalid value for {name}: expected one of {allowed}")
            if text:
                headers[name] = text
    return headers


def _rate_limit(path: str | Path, item: tuple[Node, int] | None) -> RateLimit | None:
    if item is None:
        return None
    found = entries(path, item[0], "rate_limit")
    interval, burst = 0.0, 0
    for key, (node, at) in found.items():
        raw = value(path, node)
        if key == "interval":
            seconds = _duration(raw)
            if seconds is None:
                raise FileError(path, at, f"rate_limit: invalid interval {raw!r} (e.g. 1s, 100ms)")
            interval = seconds
        elif key == "burst":
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                raise FileError(path, at, "rate_limit: burst is a whole number")
            burst = raw
        else:
            raise FileError(path, at, f"rate_limit: unknown key {key!r}")
    return RateLimit(interval, burst) if interval > 0 else None


def _duration(raw: object) -> float | None:
    """A Go duration (``1s``, ``1m30s``, ``250ms``), or 0."""
    if raw == 0 and not isinstance(raw, bool):
        return 0.0
    if not isinstance(raw, str) or not raw:
        return None
    parts = _DURATION.findall(raw)
    if "".join(number + unit for number, unit in parts) != raw:
        return None
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _tls(
    path: str | Path, node: Node
) -> tuple[ssl.SSLContext | None, tuple[str, ...] | None, list[str]]:
    found = entries(path, node, "tls_server_config")
    raw: dict[str, object] = {}
    for key, (item, at) in found.items():
        if key not in _TLS_KEYS:
            raise FileError(path, at, f"tls_server_config: unknown key {key!r}")
        raw[key] = value(path, item)

    def line(key: str) -> int | None:
        return found[key][1] if key in found else None

    def refuse(key: str, why: str) -> FileError:
        return FileError(path, line(key), f"tls_server_config: {key}: {why}")

    # As exporter-toolkit: TLS is on when any of these is set.
    if not any(raw.get(key) for key in _TLS_ON):
        return None, None, []
    for key in ("cert", "key"):
        if raw.get(key):
            raise refuse(
                key, "inline certificates and keys are not supported: give cert_file and key_file"
            )
    for key in ("cipher_suites", "curve_preferences"):
        if raw.get(key):
            raise refuse(
                key, "not supported by pg_tls_exporter: remove it to use OpenSSL's defaults"
            )
    base = Path(path).parent

    def file(key: str) -> str | None:
        text = raw.get(key)
        if text in (None, ""):
            return None
        if not isinstance(text, str):
            raise refuse(key, "expected a file name")
        return str(base / text)

    cert_file, key_file, ca_file = file("cert_file"), file("key_file"), file("client_ca_file")
    if cert_file is None:
        raise FileError(path, None, "tls_server_config: missing cert_file")
    if key_file is None:
        raise FileError(path, None, "tls_server_config: missing key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = []
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = raw.get(key) or default
        if name not in _VERSIONS:
            raise refuse(key, f"unknown TLS version {name!r} (TLS10, TLS11, TLS12, TLS13)")
        versions.append(str(name))
    lowest, highest = versions
    if _VERSIONS[lowest] > _VERSIONS[highest]:
        # Every handshake would fail: say so at load, not at each scrape.
        raise refuse(
            "max_version" if "max_version" in found else "min_version",
            f"min_version {lowest} is above max_version {highest}: no TLS version is left",
        )
    context.minimum_version = _VERSIONS[lowest]
    context.maximum_version = _VERSIONS[highest]
    if raw.get("prefer_server_cipher_suites", True) is not False:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise refuse(
            "cert_file", f"cannot load {cert_file} with {key_file}: {_reason(exc)}"
        ) from None
    mode = raw.get("client_auth_type") or "NoClientCert"
    inline_ca = raw.get("client_ca")
    if mode in _UNVERIFIED:
        raise refuse(
            "client_auth_type",
            f"{mode} is not supported: Python's ssl module verifies every client certificate "
            "it asks for; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with "
            "client_ca_file",
        )
    if mode == "NoClientCert":
        if ca_file or inline_ca:
            raise refuse("client_auth_type", "client CAs are given without a client auth type")
        if raw.get("client_allowed_sans"):
            raise refuse("client_allowed_sans", "needs a client_auth_type that verifies")
        return context, None, [cert_file, key_file]
    if mode not in _VERIFYING:
        raise refuse("client_auth_type", f"invalid client_auth_type {mode!r}")
    if not (ca_file or inline_ca):
        raise refuse("client_auth_type", f"{mode} needs client_ca_file")
    context.verify_mode = _VERIFYING[str(mode)]
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_verify_locations(cadata=str(inline_ca))
    except (OSError, ssl.SSLError, ValueError) as exc:
        key = "client_ca_file" if ca_file else "client_ca"
        raise refuse(key, f"cannot load the client CAs: {_reason(exc)}") from None
    sans = raw.get("client_allowed_sans")
    allowed: tuple[str, ...] | None = None
    if sans:
        if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
            raise refuse("client_allowed_sans", "expected a list of names")
        allowed = tuple(sans)
    return context, allowed, [cert_file, key_file, *([ca_file] if ca_file else [])]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def san_allowed(certificate: Mapping[str, object] | None, allowed: tuple[str, ...]) -> bool:
    """Whether a verified client certificate has one of the ``allowed`` SANs.

    As exporter-toolkit: a DNS name, e-mail address or URI is compared as
    written; an IP address as an address, so that ``::1`` and
    ``2001:db8::1`` match however Python happens to spell them
    (``0:0:0:0:0:0:0:1``), and an IPv4 address as itself when a certificate
    holds it IPv4-mapped (Go prints those as IPv4).
    """
    if not certificate:
        return False
    addresses = {found for found in map(_address, allowed) if found is not None}
    for kind, text in certificate.get("subjectAltName", ()):  # type: ignore[attr-defined]
        text = str(text).strip()
        if kind == "IP Address":
            if _address(text) in addresses:
                return True
        elif kind in ("DNS", "email", "URI") and text in allowed:
            return True
    return False


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class WebConfigSource:
    """The current web configuration: read again when it or a file it names changes.

    The file itself is compared by content (a rewrite within the file
    system's timestamp granularity still counts), the files it names by
    inode, size and modification time.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._config: WebConfig | None = load(path) if path else WebConfig()
        self._files = self._config.files[1:]
        self._seen = self._signature()

    def _signature(self) -> tuple[object, ...]:
        try:
            content: bytes | None = Path(self.path).read_bytes() if self.path else None
        except OSError:
            content = None
        found: list[object] = [content]
        for name in self._files:
            try:
                status = os.stat(name)
            except OSError:
                found.append(None)
                continue
            found.append((status.st_ino, status.st_size, status.st_mtime_ns))
        return tuple(found)

    def current(self) -> WebConfig | None:
        """The configuration to apply now; None while a changed file does not load."""
        if self.path is None:
            return self._config
        with self._lock:
            seen = self._signature()
            if seen == self._seen:
                return self._config
            try:
                fresh = load(self.path)
            except FileError as exc:
                if self._config is not None:
                    _log.error("web configuration changed and does not load: %s", exc)
                self._config = None
                self._seen = seen
                return None
            self._config = fresh
            self._files = fresh.files[1:]
            self._seen = self._signature()
            _log.info("web configuration read again from %s", self.path)
            return fresh
