"""The README says what the code does: its option list, its JSON fields, its markup.

A README that drifts from the code sends admins down wrong paths; these
tests fail the moment an option, a JSON field or the document's own
structure no longer matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import docutils.core
import docutils.nodes
import docutils.utils

from check_pg_tls.options import parser
from testbed.pgcluster import Cluster

from .conftest import Pki, run_plugin

README = Path(__file__).resolve().parent.parent / "README.rst"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{title}\n{'-' * len(title)}\n")
    body = text[start + len(title) + 3 :]
    end = re.search(r"\n[^\n]+\n-{3,}\n", body)
    return text[start : start + len(title) + 3 + (end.start() if end else len(body))]


def _long_options() -> set[str]:
    return {
        option
        for action in parser()._actions
        for option in action.option_strings
        if option.startswith("--")
    }


def test_every_option_is_in_the_readme_option_list() -> None:
    literals = re.findall(r"``([^`]+)``", _section("Options"))
    listed = {option for text in literals for option in re.findall(r"--[a-z0-9-]+", text)}
    assert _long_options() - listed == set(), "options missing from README's Options"
    assert listed - _long_options() == set(), "README lists options the plugin lacks"


def test_json_field_table_matches_the_document(server: Callable[[str], Cluster], ca: Pki) -> None:
    result = run_plugin(
        "-H",
        "127.0.0.1",
        "-p",
        str(server("valid").port),
        "--servername",
        "db.test",
        "--sslrootcert",
        str(ca.root_file),
        "--json",
    )
    assert result.returncode == 0, result.stdout
    (target,) = json.loads(result.stdout)["targets"]
    section = _section("Many servers in one run")
    table = section[section.index("``--json``") :]
    rows = re.findall(r"^    (``[a-z_]+``(?:, ``[a-z_]+``)*)  ", table, flags=re.MULTILINE)
    documented = {name for row in rows for name in re.findall(r"``([a-z_]+)``", row)}
    assert documented == set(target), "README's JSON table and the document differ"
    checks = set(target["checks"])
    assert {"trust", "name", "validity", "intermediates", "tls_version"} <= checks
    for name in ("severity", "message", "ok"):
        assert f'"{name}"' in table


def test_readme_is_valid_restructuredtext() -> None:
    document = docutils.core.publish_doctree(
        README.read_text(), settings_overrides={"report_level": 5, "halt_level": 5}
    )
    problems = [
        node.astext()
        for node in document.findall(docutils.nodes.system_message)
        if node["level"] >= docutils.utils.Reporter.WARNING_LEVEL
    ]
    assert problems == []


def test_every_module_is_in_the_layout() -> None:
    package = README.parent / "check_pg_tls"
    modules = {p.name for p in package.glob("*.py")} - {"__init__.py", "__main__.py"}
    layout = _section("Development")
    listed = set(re.findall(r"^      ([a-z_]+\.py) ", layout, flags=re.MULTILINE))
    assert modules - listed == set(), "modules missing from README's layout"
    assert listed - modules == set(), "README lists modules that do not exist"


def test_debian_packages_listed_are_those_setup_env_installs() -> None:
    script = (README.parent / "scripts" / "setup-env").read_text()
    installed = set(re.findall(r"need_debs\+=\(([a-z0-9.-]+)\)", script))
    section = _section("Try it: two commands")
    listed = set(
        re.findall(r"``([a-z0-9][a-z0-9.-]+)``", section[section.index("Debian packages") :])
    )
    assert installed and installed <= listed, installed - listed
