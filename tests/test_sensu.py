"""Our Sensu Go check definitions: valid resources, and a command that works.

No Sensu agent can be installed here, so this tests what can be tested
without one: the YAML is what ``sensuctl create`` accepts (the checks of
Sensu Go's own CheckConfig.Validate), every token has a default, and the
command the agent would run, with the tokens substituted as Sensu does,
runs the plugin against real servers and prints perfdata that Sensu's
``nagios_perfdata`` transformer (agent/transformers/nagios.go) extracts
without an error.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import yaml

from testbed.monitoring import CONF, PluginOutput
from testbed.pgcluster import Cluster

from .conftest import Pki, plugin_argv

CHECKS_FILE = CONF / "sensu" / "check-pg-tls.yaml"
PLUGIN_PATH = "/usr/lib/nagios/plugins/check_pg_tls"

# Sensu Go's validators (api/core/v2/validators.go).
NAME = re.compile(r"[\w.\-]+")
SUBSCRIPTION = re.compile(r"[\w.\-]+:?[\w.\-]+")
# The attributes of a CheckConfig spec (api/core/v2/check.proto): anything
# else is a typo that sensuctl would silently drop.
SPEC_FIELDS = {
    "command",
    "handlers",
    "high_flap_threshold",
    "interval",
    "low_flap_threshold",
    "publish",
    "runtime_assets",
    "subscriptions",
    "proxy_entity_name",
    "check_hooks",
    "stdin",
    "subdue",
    "cron",
    "ttl",
    "timeout",
    "proxy_requests",
    "round_robin",
    "output_metric_format",
    "output_metric_handlers",
    "output_metric_tags",
    "output_metric_thresholds",
    "env_vars",
    "discard_output",
    "max_output_size",
    "scheduler",
    "secrets",
    "pipelines",
}
# A token we accept: an entity label or annotation with a literal default.
TOKEN = re.compile(r'\{\{\s*\.(labels|annotations)\.(\w+)\s*\|\s*default\s+"([^"{}]*)"\s*\}\}')
# What /bin/sh would treat differently from shlex.split.
SHELL_SPECIAL = re.compile(r"[$`|&;<>(){}\[\]\\'\"*?~#!\n]")


def _checks() -> list[dict[str, Any]]:
    with CHECKS_FILE.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def _render(command: str, labels: Mapping[str, str]) -> str:
    """Sensu's token substitution for the tokens we use: the entity's label
    if it has one (even an empty one), else the default."""

    def value(match: re.Match[str]) -> str:
        kind, key, default = match.groups()
        return labels.get(key, default) if kind == "labels" else default

    rendered = TOKEN.sub(value, command)
    assert "{{" not in rendered and "}}" not in rendered, f"unsupported token in {command!r}"
    return rendered


def sensu_nagios_perfdata(output: str) -> tuple[list[tuple[str, float]], list[str]]:
    """Sensu Go's ParseNagios, with the errors it logs returned instead."""
    parts = output.split("|")
    if len(parts) != 2:
        return [], ["nagios perfdata format requires at least one performance data metric"]
    metrics: list[tuple[str, float]] = []
    errors: list[str] = []
    for metric in parts[1].strip().split(" "):
        metric = metric.strip()
        if not metric:
            continue
        label_value = metric.split(";")[0].split("=")
        if len(label_value) != 2:
            errors.append(f"invalid nagios perfdata metric: {metric!r}")
            continue
        label = label_value[0].replace(" ", "_")
        try:
            value = float(re.sub(r"[^-0-9.]", "", label_value[1]))
        except ValueError:
            errors.append(f"invalid nagios perfdata metric value: {label_value[1]!r}")
            continue
        metrics.append((label, value))
    return metrics, errors


def test_checks_are_valid_sensu_go_resources() -> None:
    checks = _checks()
    assert [c["metadata"]["name"] for c in checks] == ["check-pg-tls", "check-pg-tls-proxy"]
    for check in checks:
        name = check["metadata"]["name"]
        spec = check["spec"]
        assert check["type"] == "CheckConfig", name
        assert check["api_version"] == "core/v2", name
        assert NAME.fullmatch(name)
        assert check["metadata"]["namespace"], name
        assert set(spec) <= SPEC_FIELDS, set(spec) - SPEC_FIELDS
        assert isinstance(spec["command"], str) and spec["command"], name
        # An interval or a cron schedule, not both.
        assert isinstance(spec["interval"], int) and spec["interval"] > 0, name
        assert "cron" not in spec, name
        assert spec["publish"] is True, name
        assert spec["subscriptions"], name
        assert all(SUBSCRIPTION.fullmatch(s) for s in spec["subscriptions"]), name
        assert spec["output_metric_format"] == "nagios_perfdata", name
        assert isinstance(spec.get("handlers", []), list), name
        assert isinstance(spec.get("output_metric_handlers", []), list), name
        if spec.get("ttl"):
            assert spec["ttl"] > spec["interval"], name
        # The plugin gives up first and reports why, before Sensu kills it.
        plugin_timeout = float(re.search(r"(?:^| )-t (\S+)", spec["command"]).group(1))  # type: ignore[union-attr]
        assert spec["timeout"] >= plugin_timeout + 10, name
    proxy = checks[1]["spec"]
    assert proxy["round_robin"] is True
    requests = proxy["proxy_requests"]
    assert requests["entity_attributes"] and all(
        isinstance(a, str) for a in requests["entity_attributes"]
    )
    assert 0 < requests.get("splay_coverage", 90) <= 100
    # Both run the same command; only the scheduling differs.
    assert checks[0]["spec"]["command"] == checks[1]["spec"]["command"]


def test_every_token_has_a_default_and_renders_shell_safe() -> None:
    for check in _checks():
        command = check["spec"]["command"]
        tokens = re.findall(r"\{\{.*?\}\}", command)
        assert tokens, "no token substitution at all"
        for token in tokens:
            assert TOKEN.fullmatch(token), f"token without a literal default: {token}"
        # The defaults alone make a command the plugin accepts, and one that
        # sh -c and shlex.split read the same way.
        rendered = _render(command, {})
        assert not SHELL_SPECIAL.search(rendered), rendered
        argv = shlex.split(rendered)
        assert argv[0] == PLUGIN_PATH
        assert "-H" in argv and "-p" in argv and "-w" in argv and "-c" in argv
        assert not any(arg in ("-v", "--verbose") or arg.startswith("-vv") for arg in argv), (
            "long output would put lines after the perfdata"
        )


def _run(rendered: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    # Run as a shell would (the agent uses sh -c); shlex.split is that
    # shell's word splitting, and the rendered command holds nothing else.
    assert not SHELL_SPECIAL.search(rendered), rendered
    argv = shlex.split(rendered)
    assert argv[0] == PLUGIN_PATH
    return subprocess.run(
        [*prefix, *plugin_argv(), *argv[1:]], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("scenario", "labels", "state", "thresholds"),
    [
        ("valid", {}, 0, ["20:", "15:"]),
        ("expiring_warn", {"pg_tls_sslmode": "verify-ca"}, 1, ["20:", "15:"]),
        ("valid", {"pg_tls_warning": "95", "pg_tls_critical": "30"}, 1, ["95:", "30:"]),
        # No root file (the label's default renders empty): require watches expiry only.
        ("self_signed", {"pg_tls_sslmode": "require", "pg_tls_sslrootcert": ""}, 0, ["20:", "15:"]),
    ],
)
def test_command_output_is_accepted_by_sensus_perfdata_parser(
    server: Callable[[str], Cluster],
    ca: Pki,
    scenario: str,
    labels: dict[str, str],
    state: int,
    thresholds: list[str],
) -> None:
    cluster = server(scenario)
    entity_labels = {
        "pg_tls_host": "127.0.0.1",
        "pg_tls_port": str(cluster.port),
        "pg_tls_sslrootcert": str(ca.root_file),
        **labels,
    }
    done = _run(_render(_checks()[0]["spec"]["command"], entity_labels))
    assert done.returncode == state, done.stdout
    assert done.stderr == ""
    # One line, with the one '|' on it: Sensu splits the whole output at '|'.
    assert done.stdout.endswith("\n") and done.stdout.count("\n") == 1, done.stdout
    assert done.stdout.count("|") == 1, done.stdout
    metrics, errors = sensu_nagios_perfdata(done.stdout)
    assert errors == []
    assert [label for label, _ in metrics] == ["days_left", "time"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+", label) for label, _ in metrics)
    parsed = PluginOutput.parse(done.stdout)
    assert dict(metrics)["days_left"] == parsed.value("days_left")
    assert parsed.perfdata["days_left"][1:] == thresholds


def test_command_with_only_defaults_prints_one_status_line() -> None:
    # No labels at all: localhost:5432. In a network namespace of its own
    # nothing answers there, whatever runs on this machine: CRITICAL, and
    # still one Nagios status line with perfdata.
    done = _run(_render(_checks()[0]["spec"]["command"], {}), prefix=("unshare", "-n"))
    assert done.returncode == 2, done
    assert done.stderr == ""
    assert done.stdout.startswith("PG_TLS CRITICAL - localhost:5432: "), done.stdout
    assert done.stdout.count("\n") == 1, done.stdout
    assert done.stdout.count("|") == 1
    metrics, errors = sensu_nagios_perfdata(done.stdout)
    assert errors == []
    assert [label for label, _ in metrics] == ["time"]
