"""The exporter's only door into the check: load a module, read a target, probe it.

Every other module of the exporter (HTTP, configuration, allowlist, pool,
its own metrics) stays away from the check's machinery; this one goes
through the command line's own steps, so that a probe judges as
``check_pg_tls`` does:

- a module's settings are the CLI's own options, parsed by the CLI's own
  parser (:func:`check_pg_tls.options.parser`), and made one typed
  :class:`~check_pg_tls.model.Settings` record by the CLI's own builder
  (:func:`check_pg_tls.settings.settings_from_args`), which loads the
  trust store, CRLs and client certificate once;
- a target is read as the CLI reads a target spec;
- a probe is one :func:`check_pg_tls.check.check` with those settings (a
  connection string's own keywords over them, the server's certificate and
  key files read again), and the metric families of that one outcome,
  without the ``target`` label.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..options import UsageError, parser
from ..text import printable

if TYPE_CHECKING:
    from ..model import Settings, Target

__all__ = [
    "REFUSED",
    "Answer",
    "BadTarget",
    "Module",
    "ModuleError",
    "ParsedTarget",
    "failure",
    "load_check",
    "load_module",
    "module_options",
    "parse_target",
    "run",
    "shown_spec",
]

#: Options of the CLI that a module cannot set, and why.
REFUSED = {
    "host": "targets come from the probe request's target parameter",
    "targets_file": "targets come from the probe request's target parameter",
    "workers": "--probe.concurrency sets how many probes run at once",
    "verbose": "add debug=true to a probe request for the -v text",
    "tap": "an output format; /probe always answers with metrics",
    "json": "an output format; /probe always answers with metrics",
    "quiet": "an output format; /probe always answers with metrics",
    "openmetrics": "an output format; /probe always answers with metrics",
    "metrics_format": "an output format; /probe answers in the format Prometheus asks for",
    "output": "an output format; /probe always answers with metrics",
    "help": "not a setting",
    "version": "not a setting",
}

#: Connection-string keywords that name files on the exporter's host: a
#: probe request may not make the exporter read them (a module may).
_FILE_KEYWORDS = ("sslrootcert", "sslcrl", "sslcrldir", "sslcert", "sslkey")


class ModuleError(Exception):
    """A module's settings cannot be used; ``key`` is the setting at fault, if one is."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class BadTarget(Exception):
    """A probe's target names no server, or not one server: HTTP 400."""


def module_options() -> dict[str, str]:
    """Each setting a module may have (a long option with underscores) and its kind.

    Kinds: ``flag`` (true or false), ``list`` (repeatable), ``value``.
    """
    kinds: dict[str, str] = {}
    for action in parser()._actions:
        for option in action.option_strings:
            if not option.startswith("--"):
                continue
            key = option[2:].replace("-", "_")
            if key in REFUSED:
                continue
            if isinstance(action, argparse._StoreTrueAction):
                kinds[key] = "flag"
            elif isinstance(action, argparse._AppendAction):
                kinds[key] = "list"
            else:
                kinds[key] = "value"
    return kinds


@dataclass(frozen=True)
class Module:
    """One module: its settings, with what they loaded, shared by its probes."""

    settings: Settings

    @property
    def timeout(self) -> float:
        """The module's ``timeout``: the longest a probe may take."""
        return self.settings.timeout


def _argv(key: str, kind: str, value: object) -> list[str]:
    option = "--" + key.replace("_", "-")
    if kind == "flag":
        if not isinstance(value, bool):
            raise ModuleError(f"{key}: expected true or false, not {value!r}", key)
        return [option] if value else []
    values = value if kind == "list" and isinstance(value, list) else [value]
    out = []
    for item in values:
        if isinstance(item, bool) or item is None or isinstance(item, dict | list):
            raise ModuleError(f"{key}: expected a value, not {item!r}", key)
        out.append(f"{option}={item}")
    return out


def load_module(values: Mapping[str, object]) -> Module:
    """Parse and load one module's settings, as the CLI would its options.

    Raises:
        ModuleError: a setting is unknown, refused or bad, or a file it names
            cannot be used; ``key`` names the setting when it is one.
    """
    kinds = module_options()
    argv: list[str] = []
    for key, value in values.items():
        if key in REFUSED:
            raise ModuleError(f"{key} cannot be set in a module: {REFUSED[key]}", key)
        if key not in kinds:
            import difflib

            close = difflib.get_close_matches(key, kinds, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ModuleError(f"unknown setting {key!r}{hint}", key)
        own = _argv(key, kinds[key], value)
        try:
            parser().parse_args(own)
        except UsageError as exc:
            raise ModuleError(str(exc), key) from None
        argv += own
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        raise ModuleError(str(exc)) from None
    try:
        return _load(args)
    except (UsageError, ValueError, OSError) as exc:
        raise ModuleError(str(exc), _key_named(str(exc), values)) from None


def _key_named(message: str, values: Mapping[str, object]) -> str | None:
    # A file that cannot be read is named in the message: its setting's line.
    for key, value in values.items():
        if isinstance(value, str) and len(value) > 1 and value in message:
            return key
    return None


def _load(args: argparse.Namespace) -> Module:
    from ..errors import LocalFileError
    from ..settings import settings_from_args

    try:
        settings = settings_from_args(args)
    except LocalFileError as exc:
        raise ValueError(str(exc)) from None
    # The module's own checks of names, as a run would make them.
    _read(settings, "localhost")
    return Module(settings)


def _read(settings: Settings, spec: str) -> list[tuple[Target, str | None]]:
    from ..targets import read_targets

    return read_targets([spec], None, settings.targets, settings.keywords)


@dataclass(frozen=True)
class ParsedTarget:
    """A probe request's target, read as the CLI reads a target spec."""

    #: Every host name and address it names (connected to, or checked).
    names: tuple[str, ...]
    #: Connection-string keywords in it that name local files.
    local_files: tuple[str, ...]
    #: The check's own target record.
    target: Target


def parse_target(spec: str, module: Module) -> ParsedTarget:
    """Read ``spec`` (host[:port], host(name):port, [v6]:port, a libpq URI or key=value).

    Raises:
        BadTarget: it names no server, or more than one.
    """
    try:
        found = _read(module.settings, spec)
    except UsageError as exc:
        raise BadTarget(str(exc)) from None
    if len(found) != 1:
        raise BadTarget(
            f"the connection string names {len(found)} servers: probe one server per target"
        )
    target, _ = found[0]
    names = (target.host, *([target.servername] if target.servername else []))
    files = tuple(
        key
        for key, value in target.settings
        if key in _FILE_KEYWORDS and not (key == "sslrootcert" and value == "system")
    )
    return ParsedTarget(names, files, target)


@dataclass(frozen=True)
class Answer:
    """A finished probe: whether clients could connect, the metrics, the -v text."""

    success: bool
    #: The metric families in the format asked for.
    body: bytes
    #: What ``check_pg_tls -v`` would print for this target.
    debug: str


def run(
    parsed: ParsedTarget, module: Module, budget: float, shown: float, openmetrics: bool
) -> Answer:
    """Check one target within ``budget`` seconds, as the CLI would: one outcome's metrics.

    Messages name ``shown`` as the timeout: the probe's time as configured
    (the module's, or Prometheus' scrape timeout less the offset), never
    what was left of it, so that a failure's reason label stays the same
    from one scrape to the next.
    """
    from ..check import Budget, check, unchecked
    from ..errors import LocalFileError
    from ..formats import details
    from ..openmetrics import families, render
    from ..settings import reread_server_files, settings_for

    try:
        # The server's own files say what is on disk now (--cert-file, --key-file).
        settings = reread_server_files(module.settings)
    except (UsageError, LocalFileError, OSError) as exc:
        return failure(3, str(exc), openmetrics)
    target = parsed.target
    own = settings_for(target, settings, {})
    if isinstance(own, str):
        outcome = unchecked(target, own)
    else:
        outcome = check(target, own, Budget(max(0.01, budget), shown))
    # Without the target label: Prometheus adds the instance.
    found = families([outcome], labelled=False)
    success = any(
        value == 1
        for family in found
        if family.name == "probe_success"
        for _, value in family.samples
    )
    status = f"PG_TLS {outcome.state.label} - {target}: {outcome.summary}"
    perfdata = " ".join(
        sorted(r.perfdata.text() for r in outcome.results if r.perfdata is not None)
    )
    lines = [status + (f" | {perfdata}" if perfdata else ""), *details(outcome)]
    return Answer(success, render(found, openmetrics), _text(lines))


def load_check() -> None:
    """Import what every probe runs, now rather than in the first probe."""
    from .. import check, formats, openmetrics, settings  # noqa: F401


def shown_spec(spec: str) -> str:
    """A target as the log may show it: the check's own masking (every secret
    keyword's value, a URI's password), escaped and capped."""
    from ..targets import shown_spec as shown

    return shown(spec)


def failure(state: int, reason: str, openmetrics: bool) -> Answer:
    """What a probe that could not run says: ``probe_success 0`` and the reason."""
    from ..openmetrics import failure_families, render

    label = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[state]
    return Answer(
        False,
        render(failure_families(state, reason), openmetrics),
        _text([f"PG_TLS {label} - {reason}"]),
    )


def _text(lines: Sequence[str]) -> str:
    return "".join(printable(line) + "\n" for line in lines)
