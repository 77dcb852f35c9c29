"""libpq connection strings as targets: the hosts they name, judged by libpq's rules.

Admins already have these, in their applications' settings, and libpq is
the judge of what they mean. :func:`parse_conninfo` reads the text as
libpq's ``PQconninfoParse`` does (:mod:`.conninfo_text`), then makes the
checks ``PQconnectdb`` makes before it connects (fe-connect.c,
connectOptions2 and the start of PQconnectPoll, PostgreSQL 18): host,
hostaddr and port lists that match, a numeric hostaddr, valid ports and
integer options, the values of the keywords with fixed choices, the
sslnegotiation and ``sslrootcert=system`` rules. A string libpq refuses is
refused with libpq's reason; none of the messages quotes a secret, and a
string whose host, port or database libpq would read from what looks like
a password (a URI's password with a ``/`` or an ``@`` of its own) is
refused without saying what libpq read.

The keywords that decide the TLS verdict, or whether a client gets in at
all (its TCP settings, channel_binding, require_auth), are honoured; those
that cannot change it (database, user, application name, ...) are ignored
once libpq's checks pass; any other keyword would change what a client does, and is
refused by name rather than silently dropped.

Pure text in, plain records out.
"""

from __future__ import annotations

import re
import socket

from .conninfo_text import read_options
from .record import Record

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
        # What libpq asks of the kernel for its socket: a value the kernel
        # refuses fails every connection.
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        # What libpq demands of the login, whatever the server.
        "channel_binding",
        "require_auth",
    }
)

#: Keywords that cannot change what the server's TLS presents or how libpq
#: judges it (libpq's own checks of their values still apply).
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
        "target_session_attrs",
        "load_balance_hosts",
        "replication",
        "gssencmode",
        "gssdelegation",
        "krbsrvname",
        "gsslib",
        "sslcompression",
        "requirepeer",
        "oauth_issuer",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_scope",
    }
)


class ConnSpec(Record):
    """One host of a connection string, with the TLS keywords that apply to it."""

    #: libpq's ``host`` for this host (the name verified and sent as SNI),
    #: or its hostaddr when no host name was given.
    host: str
    #: libpq's hostaddr for this host, when given: a numeric address.
    hostaddr: str | None
    port: int | None
    #: The honoured keywords other than host, hostaddr and port.
    settings: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        return dict(self.settings).get(key)


# --- stage 2: what PQconnectdb checks before it connects, and the hosts ---------


def parse_conninfo(text: str, sslmode: str = "verify-full") -> list[ConnSpec]:
    """Every host of a connection string, in libpq's order.

    ``sslmode`` applies when the string names none (``--sslmode``, as libpq's
    ``PGSSLMODE`` would).

    Raises:
        ValueError: libpq, or this check, refuses the string; the message says
            why and quotes no secret.
    """
    options, tainted = read_options(text)
    if tainted:
        # A URI's password with a '/', '?' or '@' of its own: libpq reads
        # part of it as a host, a port or a database name, which no message
        # may show, and which no client that meant a password connects to.
        raise ValueError(
            "libpq would read the host, port or database name from what looks like a "
            "password (an '@' follows that does not end the user info): percent-encode a "
            "password's '/', '?', '#' and '@' (%2F, %3F, %23, %40)"
        )
    for key in options:
        if key == "service":
            raise ValueError(
                "a service= connection string needs libpq's pg_service.conf: give its "
                "host, port and ssl settings instead"
            )
        if key not in HONOURED and key not in _IGNORED:
            raise ValueError(
                f"connection keyword {key!r} would change what a client does, and this "
                "check does not honour it"
            )
    slots = _slots(options)
    _check_values(options, sslmode)
    effective = options.get("sslmode", sslmode)
    settings = _settings(options)
    specs = []
    for host, hostaddr, port in slots:
        address = _numeric_address(hostaddr) if hostaddr else None
        if not host and address is None:
            raise ValueError(
                "a connection string for this check needs host or hostaddr (libpq would "
                "use its Unix socket)"
            )
        if host.startswith(("/", "@")) and address is None:
            raise ValueError(f"{host} is a Unix socket directory: TLS runs over TCP only")
        if "@" in host and address is None:
            # No resolver takes it; in a URI it is what is left of a password
            # with an '@' in it (libpq ends the password at the first '@').
            raise ValueError("a host name with '@' in it (in a URI, write a password's '@' as %40)")
        if effective == "verify-full" and not host:
            origin = "" if "sslmode" in options else " (--sslmode)"
            raise ValueError(
                f"sslmode=verify-full{origin} needs host= beside hostaddr=: libpq fails with "
                '"host name must be specified for a verified SSL connection"'
            )
        specs.append(ConnSpec(host or str(address), address, _port(port), settings))
    return specs


def _slots(options: dict[str, str]) -> list[tuple[str, str, str]]:
    """(host, hostaddr, port) per host, counted as libpq's connectOptions2 counts them."""
    hostaddr, host, port = (options.get(k, "") for k in ("hostaddr", "host", "port"))
    count = len((hostaddr or host or "").split(","))
    addresses = hostaddr.split(",") if hostaddr else [""] * count
    hosts = host.split(",") if host else [""] * count
    if len(hosts) != count:
        raise ValueError(f"could not match {len(hosts)} host names to {count} hostaddr values")
    ports = port.split(",") if port else [""]
    if len(ports) == 1:
        ports *= count
    elif len(ports) != count:
        raise ValueError(f"could not match {len(ports)} port numbers to {count} hosts")
    return list(zip(hosts, addresses, ports, strict=True))


_CHOICES = {
    "channel_binding": ("disable", "prefer", "require"),
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "sslnegotiation": ("postgres", "direct"),
    "gssencmode": ("disable", "prefer", "require"),
    "target_session_attrs": (
        "any", "read-write", "read-only", "primary", "standby", "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
}  # fmt: skip

#: Integer options libpq parses (strtol, blanks around allowed) before or while connecting.
_INTEGERS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)


def _check_values(options: dict[str, str], default_sslmode: str) -> None:
    """libpq's connectOptions2 checks of values, then the integer options."""
    if options.get("require_auth"):
        _check_require_auth(options["require_auth"])
    for key, allowed in _CHOICES.items():
        if key in options and options[key] not in allowed:
            raise ValueError(f'invalid {key} value: "{options[key]}"')
    sslmode = options.get("sslmode", default_sslmode)
    if options.get("sslnegotiation") == "direct" and sslmode not in ("require", *_VERIFYING):
        raise ValueError(
            f'weak sslmode "{sslmode}" may not be used with sslnegotiation=direct '
            '(use "require", "verify-ca", or "verify-full")'
        )
    # libpq 16+: the system's many CAs only with the name checked too.
    if options.get("sslrootcert") == "system" and sslmode != "verify-full":
        raise ValueError(
            f'weak sslmode "{sslmode}" may not be used with sslrootcert=system (use "verify-full")'
        )
    if options.get("gssencmode") == "require":
        raise ValueError(
            "gssencmode=require: a client encrypts with GSSAPI instead of TLS, which this "
            "check does not judge"
        )
    for key in _INTEGERS:
        if key in options:
            _integer(options[key], key)


_VERIFYING = ("verify-ca", "verify-full")
_AUTH_METHODS = ("password", "md5", "gss", "sspi", "scram-sha-256", "oauth", "none")


def _check_require_auth(value: str) -> None:
    """libpq's require_auth grammar: methods, all negated (``!``) or none, each once."""
    seen: set[str] = set()
    negated = value.startswith("!")
    for part in value.split(","):
        method = part[1:] if part.startswith("!") else part
        if part.startswith("!") != negated:
            if negated:
                raise ValueError(
                    f'require_auth method "{method}" cannot be mixed with negative methods'
                )
            raise ValueError(
                f'negative require_auth method "{method}" cannot be mixed with non-negative methods'
            )
        if method not in _AUTH_METHODS:
            raise ValueError(f'invalid require_auth value: "{method}"')
        if method in seen:
            raise ValueError(f'require_auth method "{part}" is specified more than once')
        seen.add(method)


def _integer(value: str, key: str) -> int:
    """libpq's pqParseIntParam: strtol in base 10, a C int, blanks around it allowed."""
    match = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*", value)
    number = int(match.group(1)) if match else None
    if number is None or not -(2**31) <= number < 2**31:
        raise ValueError(f'invalid integer value "{value}" for connection option "{key}"')
    return number


def _port(text: str) -> int | None:
    if not text:
        return None
    number = _integer(text, "port")
    if not 1 <= number <= 65535:
        raise ValueError(f'invalid port number: "{text}"')
    return number


def _numeric_address(text: str) -> str:
    """libpq's hostaddr: what getaddrinfo() takes with AI_NUMERICHOST, canonical."""
    try:
        infos = socket.getaddrinfo(text, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror as exc:
        raise ValueError(f'could not parse network address "{text}": {exc.strerror}') from None
    except (UnicodeError, ValueError):
        raise ValueError(f'could not parse network address "{text}"') from None
    return str(infos[0][4][0])


#: Paths that libpq, when empty, takes as not given.
_PATHS = ("sslrootcert", "sslcrl", "sslcrldir", "sslcert", "sslkey")


def _settings(options: dict[str, str]) -> tuple[tuple[str, str], ...]:
    settings = {}
    for key, value in options.items():
        if key not in HONOURED or key in ("host", "hostaddr", "port"):
            continue
        if key in _PATHS and not value:
            continue
        if key == "sslsni":
            # libpq sends SNI when the value starts with 1; anything else is off.
            if value.startswith("1"):
                continue
            value = "0"
        settings[key] = value
    return tuple(sorted(settings.items()))
