"""YAML files read strictly, with the line of every key: for error messages.

PyYAML's safe loader builds plain values but forgets where they were; here
the file is composed into nodes (safe tags only), and each mapping becomes
a dict of ``(value node, line)`` so that a bad setting is reported as
``FILE:LINE: reason``. Duplicate keys are an error (PyYAML keeps the last
one silently); merge keys (``<<: *anchor``) work as in YAML 1.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["FileError", "Node", "compose", "entries", "line", "value"]

Node = yaml.Node

_MERGE = "tag:yaml.org,2002:merge"


class FileError(Exception):
    """A file that cannot be used, with where and why: ``FILE:LINE: reason``."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


def compose(path: str | Path) -> Node | None:
    """The file's node tree (None for an empty file).

    Raises:
        FileError: it cannot be read or is not YAML.
    """
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise FileError(path, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(filter(None, [exc.context, exc.problem]))
        raise FileError(path, mark.line + 1 if mark else None, reason) from None
    except yaml.YAMLError as exc:
        raise FileError(path, None, str(exc)) from None


def line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def entries(path: str | Path, node: Node | None, what: str) -> dict[str, tuple[Node, int]]:
    """A mapping's entries: key to (value node, line of the key).

    Raises:
        FileError: it is not a mapping, a key is not a string, or repeats.
    """
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise FileError(path, line(node), f"{what} must be a mapping")
    found: dict[str, tuple[Node, int]] = {}
    merged: dict[str, tuple[Node, int]] = {}
    for key, item in node.value:
        if key.tag == _MERGE:
            sources = item.value if isinstance(item, yaml.SequenceNode) else [item]
            for source in sources:
                for name, entry in entries(path, source, "a merged value").items():
                    merged.setdefault(name, entry)
            continue
        if not isinstance(key, yaml.ScalarNode) or not key.tag.endswith(":str"):
            raise FileError(path, line(key), f"keys of {what} must be strings")
        if key.value in found:
            raise FileError(path, line(key), f"duplicate key {key.value!r} in {what}")
        found[key.value] = (item, line(key))
    return {**merged, **found}


def value(path: str | Path, node: Node) -> Any:
    """The plain value of a node (string, number, bool, None, list, mapping)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise FileError(path, line(node), str(exc)) from None
    finally:
        loader.dispose()
