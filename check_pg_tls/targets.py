"""Targets: specs (``host[:port]``, ``host(servername):port``, ``[::1]:5432``),
libpq connection strings, and targets files.

The ``host(servername)`` form is the one the cron tool this plugin grew out
of uses, so its users can keep their lists. Specs come from the command line
or, one a line, from a targets file (:func:`read_targets` reads both); a
name that no resolver or TLS library would take is refused here, with a
reason, before anything is sent.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from .errors import UsageError
from .model import Target, TargetDefaults
from .names import ip_version
from .record import Record
from .text import safe

__all__ = [
    "Line",
    "Unparsed",
    "distinct",
    "looks_like_conninfo",
    "name_problem",
    "parse_conninfo_targets",
    "parse_target",
    "read_targets",
    "read_targets_file",
    "shown_spec",
]

_SPEC = re.compile(
    r"""^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^\s()\[\]:]+))    # [v6] or host
        (?:\((?P<name>[^\s()]+)\))?                        # optional (servername)
        (?::(?P<port>\d+))?$                               # optional :port
    """,
    re.VERBOSE,
)


class Unparsed(Target):
    """Stands for a line of a targets file that names no server: ``line 3``."""

    def __str__(self) -> str:
        return self.host


class Line(Record):
    """One line of a targets file that is neither blank nor a comment."""

    number: int
    #: The spec, comment and blanks removed; bytes that are not UTF-8 as
    #: surrogates (``surrogateescape``), which :func:`.text.safe` shows as ``\\xNN``.
    text: str
    #: Why the line cannot be a spec before it is even parsed, or None.
    problem: str | None = None


def parse_target(
    spec: str, default_port: int = 5432, servername: str | None = None, family: int = 0
) -> Target:
    """Parse one target spec; ``servername`` applies when the spec names none.

    Raises:
        ValueError: with a message fit for the user.
    """
    text = spec.strip()
    shown = f"invalid target '{shown_spec(spec)}'"
    if "://" in text:
        raise ValueError(
            f"{shown}: only postgresql:// and postgres:// connection URIs are read; "
            "otherwise give host[:port], host(servername):port or [ipv6]:port"
        )
    # A bare IPv6 address has colons of its own; only brackets add a port.
    if text.count(":") > 1 and not text.startswith("["):
        host, name, port = text, None, None
        if "(" in text and text.endswith(")"):
            host, _, rest = text.partition("(")
            name = rest[:-1]
        if ip_version(host) != 6:
            raise ValueError(f"{shown}: an IPv6 address with a port goes in brackets, [::1]:5432")
    else:
        match = _SPEC.match(text)
        if not match:
            raise ValueError(f"{shown}: expected host[:port] or host(name):port")
        host = match.group("v6") or match.group("host")
        name = match.group("name")
        port = match.group("port")
    if not host:
        raise ValueError(f"{shown}: no host")
    for checked in (host, name):
        problem = name_problem(checked) if checked else None
        if problem:
            raise ValueError(f"{shown}: {problem}")
    number = default_port if port is None else int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"{shown}: port must be 1-65535")
    return Target(host, number, name or servername, family)


def name_problem(name: str) -> str | None:
    """Why ``name`` is neither an IP address nor a host name a resolver takes, or None.

    The rules are those of the IDNA encoding that ``getaddrinfo`` and the
    TLS library apply to a name (empty labels, 63 and 253 bytes), checked
    here so that a typo is reported as such.
    """
    if ip_version(name) is not None:
        return None
    if any(ord(char) < 0x20 or char == "\x7f" for char in name):
        return "control character in host name"
    labels = (name[:-1] if name.endswith(".") else name).split(".")
    if "" in labels:
        return "empty label in host name"
    length = len(labels) - 1
    for label in labels:
        try:
            encoded = label.encode("ascii") if label.isascii() else label.encode("idna")
        except UnicodeError:
            return f"host name label '{safe(label, 70)}' is not a valid internationalized name"
        if len(encoded) > 63:
            return "host name label longer than 63 characters"
        length += len(encoded)
    if length > 253:
        return "host name longer than 253 characters"
    return None


def read_targets_file(path: str) -> list[Line]:
    """The lines of a targets file that hold a spec; ``#`` comments and blank lines go.

    A ``#`` inside what may be a password of a connection string (see
    :func:`.conninfo_text.secret_spans`) is part of it, not a comment: cut
    there, the rest of a URI's password would read as a host and a port.
    Every line stands alone: one that is not UTF-8 comes back with its
    problem, and the others are unaffected.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    lines = []
    for number, raw in enumerate(data.splitlines(), 1):
        # Bytes that are not UTF-8 become surrogates, which no ASCII test matches.
        text = raw.decode("utf-8", "surrogateescape")
        spec = text[: _comment_start(text)].strip()
        if not spec:
            continue
        try:
            spec.encode("utf-8")
        except UnicodeEncodeError:
            lines.append(Line(number, spec, "not UTF-8"))
            continue
        lines.append(Line(number, spec))
    return lines


def _comment_start(line: str) -> int:
    """Where the comment of a targets file's line starts (its length when it has none)."""
    hashes = [at for at, char in enumerate(line) if char == "#"]
    if not hashes:
        return len(line)
    spans: list[tuple[int, int]] = []
    if "=" in line or "@" in line:
        from .conninfo_text import secret_spans

        spans = secret_spans(line, following=False)
    return next(
        (at for at in hashes if not any(start <= at < end for start, end in spans)), len(line)
    )


def looks_like_conninfo(spec: str) -> bool:
    """A libpq URI, or ``keyword=value`` text (a target spec never holds ``=``).

    As libpq's recognized_connection_string: the URI prefix must open the text.
    """
    return spec.startswith(("postgresql://", "postgres://")) or "=" in spec


def shown_spec(spec: str) -> str:
    """A spec or connection string as messages quote it: secrets masked, escaped, capped."""
    # A spec never holds '@': ``user:password@host`` is a URI without its
    # scheme, and its password goes too (see conninfo_text.secret_spans).
    if "=" in spec or "@" in spec or "://" in spec:
        from .conninfo_text import mask

        spec = mask(spec)
    return safe(spec, 100)


def parse_conninfo_targets(
    spec: str, default_port: int, family: int = 0, sslmode: str = "verify-full"
) -> list[Target]:
    """Every host of a libpq connection string (URI or ``key=value``), as targets.

    ``hostaddr`` is connected to while ``host`` is the name checked, as in
    libpq; the TLS keywords ride along in :attr:`Target.settings`.
    ``sslmode`` applies when the string names none.

    Raises:
        ValueError: with a message fit for the user, secrets masked.
    """
    from .conninfo import parse_conninfo

    try:
        specs = parse_conninfo(spec, sslmode)
    except ValueError as exc:
        raise ValueError(f"invalid connection string '{shown_spec(spec)}': {exc}") from None
    targets = []
    for conn in specs:
        # A host name is looked up only without hostaddr; with it, it is only
        # the name to verify, as in libpq.
        problem = name_problem(conn.host) if conn.hostaddr is None else None
        if problem:
            raise ValueError(f"invalid connection string host '{safe(conn.host, 100)}': {problem}")
        targets.append(
            Target(
                host=conn.hostaddr or conn.host,
                port=conn.port or default_port,
                servername=conn.host if conn.hostaddr and conn.host != conn.hostaddr else None,
                family=family,
                sni=conn.get("sslsni") != "0",
                settings=conn.settings,
            )
        )
    return targets


def distinct(
    entries: Sequence[tuple[Target, str | None]],
) -> list[tuple[Target, str | None]]:
    """Each check once, in the order given; checks told apart when their spec forms are not.

    A target listed twice, or a host a multi-host string names twice, is the
    same check: it is checked and reported once. Two checks of one server
    that differ in their connection string's settings (another sslmode or
    root file) are both kept, and each is shown with its settings, so that
    every output (and every metric's ``target`` label) names it uniquely.
    """
    unique = list(dict.fromkeys(entries))
    forms = Counter(str(target) for target, _ in unique)
    return [
        (target._replace(display=_with_settings(target)), problem)
        if forms[str(target)] > 1 and target.settings
        else (target, problem)
        for target, problem in unique
    ]


def _with_settings(target: Target) -> str:
    """``host:port (key=value ...)``, values quoted as in a libpq connection string."""
    shown = " ".join(f"{key}={_quoted(value)}" for key, value in target.settings)
    return f"{target} ({shown})"


def _quoted(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_targets(
    specs: Sequence[str],
    targets_file: str | None,
    defaults: TargetDefaults,
    keywords: Mapping[str, str | None],
) -> list[tuple[Target, str | None]]:
    """Each target of ``specs`` and the targets file, in order, once, with None.

    A line of the targets file that names no server gives a stand-in and
    why, and the other lines are still read. ``keywords`` are the libpq
    keywords the options already set (sslmode, sslrootcert, ...): a
    connection string that only repeats them is the same check as a spec.

    Raises:
        UsageError: a spec on the command line is bad, the file cannot be
            read, or there is nothing to check.
    """
    sslmode = keywords.get("sslmode") or "verify-full"

    def parse(spec: str) -> list[Target]:
        if looks_like_conninfo(spec):
            found = parse_conninfo_targets(spec, defaults.port, defaults.family, sslmode)
            return [_without_repeats(target, keywords) for target in found]
        return [parse_target(spec, defaults.port, defaults.servername, defaults.family)]

    lines: list[Line] = []
    if targets_file:
        try:
            lines = read_targets_file(targets_file)
        except OSError as exc:
            raise UsageError(f"cannot read targets file {targets_file}: {exc.strerror}") from None
    if not (specs or lines):
        raise UsageError("no server to check: give -H HOST, TARGET or --targets-file FILE")
    servername = defaults.servername
    problem = servername is not None and name_problem(servername)
    if problem:
        raise UsageError(f"invalid --servername '{safe(servername or '', 100)}': {problem}")
    targets: list[tuple[Target, str | None]] = []
    try:
        for spec in specs:
            targets.extend((target, None) for target in parse(spec))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # One bad line of a list is that line's own UNKNOWN; the others are checked.
    for line in lines:
        try:
            if line.problem:
                raise ValueError(f"invalid target '{shown_spec(line.text)}': {line.problem}")
            targets.extend((target, None) for target in parse(line.text))
        except ValueError as exc:
            targets.append((Unparsed(f"line {line.number}"), str(exc)))
    return distinct(targets)


def _without_repeats(target: Target, keywords: Mapping[str, str | None]) -> Target:
    """The target without the settings that only repeat the options: the same check
    as a target spec with those options, and named as one."""
    kept = tuple(
        (key, value)
        for key, value in target.settings
        if key not in keywords or keywords[key] != value
    )
    return target._replace(settings=kept)
