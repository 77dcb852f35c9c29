"""libpq connection strings as targets: ``postgresql://...`` URIs and ``key=value`` strings.

Admins already have these, in their applications' settings. The keywords
that decide the TLS verdict are honoured; those that cannot change it
(database, user, application name, ...) are ignored; any other keyword
would change what a client does, and is refused by name rather than
silently dropped. Pure text in, plain records out.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import NamedTuple

__all__ = ["HONOURED", "ConnSpec", "parse_conninfo"]

#: Keywords whose value reaches the check.
HONOURED = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "sslmode",
        "sslrootcert",
        "sslnegotiation",
        "sslsni",
        "sslcrl",
        "sslcrldir",
        "sslcert",
        "sslkey",
    }
)

#: Keywords that cannot change what the server's TLS presents or how
#: libpq judges it.
_IGNORED = frozenset(
    {
        "dbname",
        "user",
        "password",
        "passfile",
        "application_name",
        "fallback_application_name",
        "connect_timeout",
        "client_encoding",
        "options",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "target_session_attrs",
        "load_balance_hosts",
        "replication",
        "channel_binding",
        "require_auth",
        "gssencmode",
        "gssdelegation",
        "krbsrvname",
        "gsslib",
        "sslcompression",
        "requirepeer",
    }
)

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class ConnSpec(NamedTuple):
    """One host of a connection string, with the TLS keywords that apply to it."""

    host: str
    #: libpq's hostaddr for this host, when given.
    hostaddr: str | None
    port: int | None
    #: The honoured keywords other than host, hostaddr and port.
    settings: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        return dict(self.settings).get(key)


def parse_conninfo(text: str) -> list[ConnSpec]:
    """Every host of a connection string, in libpq's order.

    Raises:
        ValueError: with a message fit for the user.
    """
    stripped = text.strip()
    if stripped.startswith(("postgresql://", "postgres://")):
        pairs = _uri_pairs(stripped)
    else:
        pairs = _keyword_pairs(stripped)
    settings: dict[str, str] = {}
    for key, value in pairs:
        if key in HONOURED:
            settings[key] = value
        elif key == "service":
            raise ValueError(
                "a service= connection string needs libpq's pg_service.conf: give its "
                "host, port and ssl settings instead"
            )
        elif key not in _IGNORED:
            raise ValueError(
                f"connection keyword {key!r} would change what a client does, and this "
                "check does not honour it"
            )
    mode = settings.get("sslmode")
    if mode is not None and mode not in _SSLMODES:
        raise ValueError(f"invalid sslmode {mode!r}")
    for key, allowed in (("sslnegotiation", ("postgres", "direct")), ("sslsni", ("0", "1"))):
        if key in settings and settings[key] not in allowed:
            raise ValueError(f"invalid {key} {settings[key]!r}")
    return _hosts(settings)


def _uri_pairs(uri: str) -> list[tuple[str, str]]:
    rest = uri.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, _dbname = rest.partition("/")
    pairs: list[tuple[str, str]] = []
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]  # user and password: never used
    hosts, ports = [], []
    for part in netloc.split(",") if netloc else []:
        match = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*)(?::(\d*))?", part)
        if match is None:
            raise ValueError(f"invalid host in connection URI: {part!r}")
        hosts.append(urllib.parse.unquote(match.group(1).strip("[]")))
        ports.append(match.group(2) or "")
    if hosts:
        pairs.append(("host", ",".join(hosts)))
        if any(ports):
            pairs.append(("port", ",".join(ports)))
    for item in query.split("&") if query else []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"invalid parameter in connection URI: {item!r}")
        pairs.append((urllib.parse.unquote(key), urllib.parse.unquote(value)))
    return pairs


_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")


def _keyword_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"invalid connection string near {text[position:][:20]!r}")
        key, value = match.group(1), match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs.append((key, value))
        position = match.end()
    return pairs


def _split(value: str | None, count: int, what: str) -> list[str]:
    if value is None:
        return [""] * count
    parts = value.split(",")
    if len(parts) == 1:
        return parts * count
    if len(parts) != count:
        raise ValueError(f"{len(parts)} {what} values for {count} hosts")
    return parts


def _hosts(settings: dict[str, str]) -> list[ConnSpec]:
    hosts = (settings.get("host") or "").split(",")
    addresses = settings.get("hostaddr")
    count = max(len(hosts), len(addresses.split(",")) if addresses else 0)
    if len(hosts) == 1:
        hosts = hosts * count
    hostaddrs = _split(addresses, count, "hostaddr")
    ports = _split(settings.get("port"), count, "port")
    rest = tuple(
        sorted((k, v) for k, v in settings.items() if k not in ("host", "hostaddr", "port"))
    )
    specs = []
    for host, hostaddr, port in zip(hosts, hostaddrs, ports, strict=True):
        if not host and not hostaddr:
            raise ValueError("a connection string for this check needs host or hostaddr")
        if host.startswith("/"):
            raise ValueError(f"{host} is a Unix socket directory: TLS runs over TCP only")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"invalid port {port!r}")
        specs.append(
            ConnSpec(host or hostaddr, hostaddr or None, int(port) if port else None, rest)
        )
    return specs
