"""Icinga 2 validates and runs our CheckCommand and apply rules.

The real ``icinga2`` from Debian, in a throwaway tree, with the whole
Template Library loaded as the stock icinga2.conf does: the configuration
must compile without a single warning, and the daemon must run the installed
plugin against real PostgreSQL servers and record the state, output and
perfdata the plugin printed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.monitoring import (
    CONF,
    IcingaTree,
    PluginOutput,
    icinga_cluster_pki,
    installed_plugin,
    perfdata_fields,
    shared_dir,
)
from testbed.pgcluster import Cluster, free_port

from .conftest import Pki

COMMAND_FILE = CONF / "command-pg_tls.conf"
SERVICES_FILE = CONF / "services.conf"

# The user's own templates (the stock conf.d/templates.conf has these names),
# with intervals short enough for a test: the first check runs about a second
# after start. Host checks stay off; only the services matter here.
TEMPLATES = """
template Host "generic-host" {
  check_command = "dummy"
  enable_active_checks = false
  max_check_attempts = 1
}
template Service "generic-service" {
  max_check_attempts = 1
  check_interval = 1s
  retry_interval = 1s
}
"""

STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")

# Plugin options the CheckCommand leaves out on purpose; command-pg_tls.conf
# says why, in its header comment.
NOT_MAPPED = {
    "--help",
    "--version",
    "--targets-file",
    "--workers",
    "--json",
    "--tap",
    "--quiet",
    "--min-days",
    "--openmetrics",
    "--metrics-format",
    "--output",
}


@pytest.fixture(scope="module")
def plugin_dir() -> Iterator[Path]:
    """PluginContribDir: the plugin installed as the README says."""
    path = shared_dir("check_pg_tls-icinga-plugins-")
    (path / "check_pg_tls").symlink_to(installed_plugin())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tree(tmp_path: Path, plugin_dir: Path) -> IcingaTree:
    return IcingaTree(tmp_path / "icinga2", plugin_dir)


def _problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(r"\b(warning|critical)/", line)]


def _documented_examples() -> tuple[list[str], list[str]]:
    """The objects in services.conf's header comment: (zone and endpoint
    objects for zones.conf, host objects for zones.d/master/)."""
    text = SERVICES_FILE.read_text()
    comment = text[: text.index("*/")]
    code = [line[5:] for line in comment.splitlines() if line.startswith(" *   ")]
    zones: list[str] = []
    hosts: list[str] = []
    current: list[str] = []
    depth = 0
    for line in code:
        current.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0:
            block = "\n".join(current)
            (hosts if block.startswith("object Host") else zones).append(block)
            current = []
    assert depth == 0 and not current, "unbalanced braces in services.conf's examples"
    return zones, hosts


def _object(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["type"] == kind and obj["name"] == name:
            properties: dict[str, Any] = obj["properties"]
            return properties
    raise AssertionError(f"no {kind} {name!r} among the validated objects")


def test_config_and_its_examples_validate_without_a_warning(tree: IcingaTree) -> None:
    # The hosts shown in services.conf's comment, verbatim: the examples a
    # user copies are part of what must validate. An apply rule that matches
    # nothing is only a warning, so warnings count as failures.
    zones, hosts = _documented_examples()
    assert len(hosts) == 3 and len(zones) == 2
    (tree.path / "zones.d" / "master").mkdir(parents=True)
    (tree.path / "zones.d" / "master" / "hosts.conf").write_text("\n".join(hosts) + "\n")
    tree.write(TEMPLATES + "\n".join(zones), [COMMAND_FILE, SERVICES_FILE])

    done = tree.validate()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert _problems(output) == [], output

    objects = tree.objects()
    services = {
        obj["properties"]["__name"]: obj["properties"]
        for obj in objects
        if obj["type"] == "Service"
    }
    assert set(services) == {
        "db1.example.com!pg_tls",
        "db2.example.com!pg_tls main",
        "db2.example.com!pg_tls reporting",
        "db2.example.com!pg_tls pgbouncer",
        "db3.example.com!pg_tls main",
        "db3.example.com!pg_tls local",
    }
    assert all(s["check_command"] == "pg_tls" for s in services.values())
    # Instance variables land on their own service only.
    assert services["db2.example.com!pg_tls reporting"]["vars"] == {
        "pg_tls_port": 5433,
        "pg_tls_warning": 30,
    }
    assert services["db2.example.com!pg_tls main"]["vars"] == {"pg_tls_port": 5432}
    # Only the host behind an agent has its checks run there.
    endpoints = {name: s["command_endpoint"] for name, s in services.items()}
    assert endpoints == {
        name: "db3.example.com" if name.startswith("db3.") else "" for name in services
    }


def test_checkcommand_follows_the_template_library_conventions(tree: IcingaTree) -> None:
    tree.write(TEMPLATES, [COMMAND_FILE])
    done = tree.validate()
    assert done.returncode == 0 and _problems(done.stdout) == [], done.stdout
    command = _object(tree.objects(), "CheckCommand", "pg_tls")

    assert "ipv4-or-ipv6" in command["templates"]
    assert command["command"] == [f"{tree.plugin_dir}/check_pg_tls"]
    arguments: dict[str, dict[str, Any]] = command["arguments"]
    variables: dict[str, Any] = command["vars"]
    for key, spec in arguments.items():
        assert spec.get("description"), f"argument {key} has no description"
        macro = spec.get("value", spec.get("set_if"))
        assert isinstance(macro, str) and re.fullmatch(r"\$pg_tls_\w+\$", macro), (key, spec)
        if "set_if" in spec:
            # Flags: an explicit default, so the flag is off unless asked for.
            assert "value" not in spec
            assert variables[macro.strip("$")] is False, key
    assert arguments["-H"]["required"] is True
    assert variables["pg_tls_address"] == "$check_address$"
    # The template library's address choice follows our -4/-6 variables.
    assert variables["check_ipv4"] == "$pg_tls_ipv4$"
    assert variables["check_ipv6"] == "$pg_tls_ipv6$"
    assert {arguments["-4"]["set_if"], arguments["-6"]["set_if"]} == {
        "$pg_tls_ipv4$",
        "$pg_tls_ipv6$",
    }
    # The plugin must be able to report its own timeout before Icinga kills it.
    assert command["timeout"] >= _plugin_default_timeout() + 10


def _plugin_help() -> str:
    done = subprocess.run(
        [str(installed_plugin()), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _plugin_default_timeout() -> float:
    found = re.search(
        r"-t SECONDS, --timeout SECONDS\s.*?\(default:\s*([\d.]+)\)", _plugin_help(), re.S
    )
    assert found, "cannot find -t's default in --help"
    return float(found.group(1))


def _plugin_options() -> list[tuple[str, ...]]:
    """Each option of ``--help``, as the tuple of its spellings."""
    options = []
    for line in _plugin_help().splitlines():
        synopsis = re.match(r"  (-[^ ].*?)(?:  |$)", line)
        if synopsis:
            spellings = re.findall(r"(?:^|, )(--?[\w-]+)", synopsis.group(1))
            options.append(tuple(spellings))
    return options


# Variables are named after the long option (pg_tls_min_tls_version for
# --min-tls-version), but for these, named as in the template library.
VARIABLE_NAMES = {"-H": "pg_tls_address", "-4": "pg_tls_ipv4", "-6": "pg_tls_ipv6"}


def test_every_plugin_option_has_a_variable_or_a_reason() -> None:
    # When the plugin grows an option, this fails until command-pg_tls.conf
    # gains its argument block, or says why Icinga should not have it.
    text = COMMAND_FILE.read_text()
    blocks = dict(
        re.findall(r'^\t\t"(-[^"]+)" = \{\n\t\t\t(?:value|set_if) = "\$(\w+)\$"', text, re.M)
    )
    assert blocks, "no argument blocks found"
    options = _plugin_options()
    assert len(options) > 10
    missing = [
        spellings
        for spellings in options
        if not set(blocks) & set(spellings) and not NOT_MAPPED & set(spellings)
    ]
    assert missing == [], (
        f"plugin options without a pg_tls_ variable: {missing}; add an argument block "
        "to icinga-conf/command-pg_tls.conf, or explain in its header why not and "
        "list the option in NOT_MAPPED"
    )
    # And no block for an option the plugin no longer has: setting its
    # variable would make every check UNKNOWN.
    known = {spelling: spellings for spellings in options for spelling in spellings}
    assert set(blocks) <= set(known), set(blocks) - set(known)
    for key, variable in blocks.items():
        long = [s for s in known[key] if s.startswith("--")]
        expected = VARIABLE_NAMES.get(key) or "pg_tls_" + long[0][2:].replace("-", "_")
        assert variable == expected, f"{key}: call its variable {expected}"
    header = text[: text.index("object CheckCommand")]
    for option in NOT_MAPPED - {"--help", "--version"}:
        assert option in header, f"{option} is left out without a reason in the header"


def _argv_options(command: list[str]) -> dict[str, str | None]:
    """The options Icinga passed: flags map to None."""
    found: dict[str, str | None] = {}
    args = command[1:]
    while args:
        key = args.pop(0)
        if key in ("-4", "-6", "-v"):
            found[key] = None
        else:
            found[key] = args.pop(0)
    return found


def test_icinga_runs_the_plugin_and_records_its_verdict(
    tree: IcingaTree, server: Callable[[str], Cluster], ca: Pki
) -> None:
    good, warn, crit = server("valid"), server("expiring_warn"), server("expiring_crit")
    root = ca.root_file
    hosts = f"""
object Host "db-single" {{
  import "generic-host"
  address = "127.0.0.1"
  vars.postgres_tls = true
  vars.pg_tls_port = {good.port}
  vars.pg_tls_servername = "db.test"
  vars.pg_tls_sslrootcert = "{root}"
}}
object Host "db-multi" {{
  import "generic-host"
  address = "127.0.0.1"
  address6 = "::1"
  vars.pg_tls_servername = "db.test"
  vars.pg_tls_sslrootcert = "{root}"
  vars.postgres_tls_instances["good"] = {{ pg_tls_port = {good.port} }}
  vars.postgres_tls_instances["expiring"] = {{ pg_tls_port = {warn.port} }}
  vars.postgres_tls_instances["nearly-expired"] = {{ pg_tls_port = {crit.port} }}
  vars.postgres_tls_instances["over-ipv6"] = {{ pg_tls_port = {good.port}, pg_tls_ipv6 = true }}
  vars.postgres_tls_instances["verbose"] = {{ pg_tls_port = {good.port}, pg_tls_verbose = true }}
}}
object CheckerComponent "checker" {{ }}
"""
    tree.write(TEMPLATES + hosts, [COMMAND_FILE, SERVICES_FILE])
    expected = {
        # service: (state, port, address)
        "db-single!pg_tls": (0, good.port, "127.0.0.1"),
        "db-multi!pg_tls good": (0, good.port, "127.0.0.1"),
        "db-multi!pg_tls expiring": (1, warn.port, "127.0.0.1"),
        "db-multi!pg_tls nearly-expired": (2, crit.port, "127.0.0.1"),
        "db-multi!pg_tls over-ipv6": (0, good.port, "::1"),
        "db-multi!pg_tls verbose": (0, good.port, "127.0.0.1"),
    }

    daemon = tree.start()
    try:
        daemon.wait_for_states({name: STATES[e[0]] for name, e in expected.items()})
    finally:
        results = daemon.stop()
    assert _problems(daemon.log()) == [], daemon.log()
    assert set(results) == set(expected), daemon.log()

    for name, (state, port, address) in expected.items():
        verbose = name.endswith(" verbose")
        _assert_recorded(results[name], state, port, address, ca.root_file, verbose)
    assert results["db-multi!pg_tls verbose"]["output"].count("\n") > 3


def _assert_recorded(
    result: dict[str, Any], state: int, port: int, address: str, root: Path, verbose: bool = False
) -> None:
    """What Icinga recorded is what the plugin says, for the command line
    our variables should have made."""
    label = str(result)
    options = _argv_options(result["command"])
    assert options == {
        "-H": address,
        "-p": str(port),
        "--servername": "db.test",
        "--sslrootcert": str(root),
        **({"-6": None} if address == "::1" else {}),
        **({"-v": None} if verbose else {}),
    }, label
    # The plugin's exit code as the state, its status text as output, its
    # perfdata items unchanged.
    assert result["exit_status"] == state and result["state"] == state, label
    prefix = ("PG_TLS OK - ", "PG_TLS WARNING - ", "PG_TLS CRITICAL - ")[state]
    assert result["output"].startswith(prefix), label
    perf = perfdata_fields(result["performance_data"])
    assert set(perf) == {"days_left", "time"}, label
    assert perf["days_left"][1:] == ["20:", "15:"], label
    # The same command run directly says the same (days_left moves on by a
    # hundredth of a day at most meanwhile).
    direct = subprocess.run(result["command"], capture_output=True, text=True, timeout=60)
    again = PluginOutput.parse(direct.stdout)
    assert direct.returncode == state, direct.stdout
    first, *long_output = result["output"].split("\n")
    assert again.text == first.strip(), label
    # With -v, Icinga keeps the long output lines (their timings differ).
    assert [line.split(":")[0] for line in long_output] == [
        line.split(":")[0] for line in again.long_output
    ], label
    assert again.perfdata["days_left"][1:] == perf["days_left"][1:]
    recorded = float(perf["days_left"][0])
    assert abs(again.value("days_left") - recorded) <= 0.011, label


def test_an_agent_runs_the_check_for_its_host(
    tmp_path: Path, plugin_dir: Path, server: Callable[[str], Cluster], ca: Pki
) -> None:
    # The distributed case of services.conf, for real: a master and an
    # agent, each an icinga2 daemon, connected over TLS on loopback. The
    # host sets vars.agent_endpoint; the master schedules, the agent runs
    # the plugin (command_endpoint) and sends the result back. The agent
    # gets the CheckCommand as the README says: from the master's
    # zones.d/global-templates/, by Icinga's config sync.
    good, warn = server("valid"), server("expiring_warn")
    master = IcingaTree(tmp_path / "master", plugin_dir, node="master.test")
    agent = IcingaTree(
        tmp_path / "agent", plugin_dir, node="db.test", zone="db.test", parent="master"
    )
    icinga_cluster_pki([master, agent])
    master_port = free_port()

    (master.path / "zones.d" / "global-templates").mkdir(parents=True)
    shutil.copy(COMMAND_FILE, master.path / "zones.d" / "global-templates")
    (master.path / "zones.d" / "master").mkdir(parents=True)
    (master.path / "zones.d" / "master" / "hosts.conf").write_text(f"""
object Host "db.test" {{
  import "generic-host"
  address = "127.0.0.1"
  vars.agent_endpoint = name
  vars.postgres_tls = true
  vars.pg_tls_port = {good.port}
  vars.pg_tls_servername = "db.test"
  vars.pg_tls_sslrootcert = "{ca.root_file}"
  vars.postgres_tls_instances["expiring"] = {{ pg_tls_port = {warn.port} }}
}}
""")
    master.write(
        TEMPLATES
        + f"""
object Endpoint "db.test" {{ }}
object Zone "db.test" {{
  endpoints = [ "db.test" ]
  parent = "master"
}}
object Zone "global-templates" {{ global = true }}
object ApiListener "api" {{
  bind_host = "127.0.0.1"
  bind_port = {master_port}
}}
object CheckerComponent "checker" {{ }}
""",
        [SERVICES_FILE],
    )
    # The agent connects to the master, so that it is back at once after
    # the reload that the synced configuration triggers.
    agent.write(f"""
object Endpoint "master.test" {{
  host = "127.0.0.1"
  port = {master_port}
}}
object Zone "master" {{ endpoints = [ "master.test" ] }}
object Zone "global-templates" {{ global = true }}
object ApiListener "api" {{
  bind_host = "127.0.0.1"
  bind_port = {free_port()}
  accept_commands = true
  accept_config = true
}}
""")
    for tree in (master, agent):
        done = tree.validate()
        assert done.returncode == 0 and _problems(done.stdout) == [], done.stdout

    expected = {"db.test!pg_tls": (0, good.port), "db.test!pg_tls expiring": (1, warn.port)}
    # A check the master sends while the agent reloads with the synced
    # configuration gets no answer; Icinga sends it again only once the
    # command's timeout has passed. On a busy machine the reload is slow
    # enough for that to happen: wait that long, and a margin on top.
    command_timeout = _object(master.objects(), "CheckCommand", "pg_tls")["timeout"]
    master_daemon = master.start()
    agent_daemon = None
    try:
        master_daemon.wait_for_log(r"Started new listener on '\[127\.0\.0\.1\]")
        agent_daemon = agent.start()
        master_daemon.wait_for_states(
            {n: STATES[state] for n, (state, _) in expected.items()},
            timeout=command_timeout + 30,
        )
    finally:
        results = master_daemon.stop()
        if agent_daemon is not None:
            agent_daemon.stop()
    assert agent_daemon is not None
    # Disconnect warnings are expected (the agent's reload, the shutdown).
    for log in (master_daemon.log(), agent_daemon.log()):
        assert "critical/" not in log, log
    assert re.search(r"Received configuration for zone 'global-templates'", agent_daemon.log())
    assert "command-pg_tls.conf" in agent_daemon.log()
    for name, (state, port) in expected.items():
        result = results[name]
        assert result["check_source"] == "db.test", result
        _assert_recorded(result, state, port, "127.0.0.1", ca.root_file)
