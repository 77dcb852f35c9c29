"""The exporter's configuration file: modules of check settings, and allowed targets.

::

    modules:
      default:
        sslrootcert: /etc/ssl/pg-root.crt
        warning: 20
      pgbouncer:
        port: 6432
        sslmode: verify-ca
    allowed_targets:
      - "*.db.example.com"
      - 10.1.0.0/16

A module's settings are the check's long options with underscores
(``check_revocation: true`` is ``--check-revocation``); they are parsed
by the check's own option parser and loaded once per (re)load. Anything
unknown is an error with its line, never ignored.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .allowlist import AllowList, parse_entry
from .probing import Module, ModuleError, load_module
from .yamlfile import FileError, compose, entries, line, value

__all__ = ["DEFAULT_MODULE", "Config", "FileError", "load"]

DEFAULT_MODULE = "default"

_MODULE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_KEYS = ("modules", "allowed_targets")
# A module named "default" is optional: it answers the requests that name
# none, which are refused (400) without it.
_NO_MODULES = (
    f"no modules: define at least one (the module {DEFAULT_MODULE!r} answers probes that name none)"
)


@dataclass(frozen=True)
class Config:
    """A loaded configuration: immutable, swapped whole on reload."""

    path: str
    modules: dict[str, Module]
    allowed: AllowList
    loaded_at: float = field(default_factory=time.time)


def load(path: str | Path) -> Config:
    """Read and load the file: every module's files too.

    Raises:
        FileError: ``FILE:LINE: reason`` for the first problem found.
    """
    root = compose(path)
    top = entries(path, root, "the configuration")
    for key, (_, at) in top.items():
        if key not in _KEYS:
            raise FileError(path, at, f"unknown key {key!r} (expected {' or '.join(_KEYS)})")
    if "modules" not in top:
        raise FileError(path, None, _NO_MODULES)
    if "allowed_targets" not in top:
        raise FileError(
            path,
            None,
            "no allowed_targets: list the host-name patterns and networks this exporter "
            "may probe ('*' alone allows everything)",
        )
    modules_node, modules_line = top["modules"]
    modules: dict[str, Module] = {}
    for name, (node, at) in entries(path, modules_node, "modules").items():
        if not _MODULE_NAME.match(name):
            raise FileError(
                path, at, f"invalid module name {name!r}: letters, digits, '_', '.', '-' only"
            )
        settings = entries(path, node, f"module {name!r}")
        values = {key: value(path, item) for key, (item, _) in settings.items()}
        try:
            modules[name] = load_module(values)
        except ModuleError as exc:
            where = settings[exc.key][1] if exc.key in settings else at
            raise FileError(path, where, f"module {name!r}: {exc}") from None
    if not modules:
        raise FileError(path, modules_line, _NO_MODULES)
    return Config(str(path), modules, _allowed(path, top["allowed_targets"][0]))


def _allowed(path: str | Path, node: object) -> AllowList:
    import yaml

    assert isinstance(node, yaml.Node)
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return AllowList(())
    if not isinstance(node, yaml.SequenceNode):
        raise FileError(path, line(node), "allowed_targets must be a list")
    found = []
    for item in node.value:
        text = value(path, item)
        if not isinstance(text, str):
            text = str(text) if isinstance(text, int | float) else None
        if text is None:
            raise FileError(path, line(item), "allowed_targets: each entry is a string")
        try:
            found.append(parse_entry(text))
        except ValueError as exc:
            raise FileError(path, line(item), f"allowed_targets: {exc}") from None
    return AllowList(found)
