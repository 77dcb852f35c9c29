"""An auxiliary check that fails costs its own finding, never the verdict.

Revocation, DANE, the unencrypted-login check, the CRL audit, the files on
disk and the client certificate each read odd input through libraries that
may raise. Whatever one raises becomes that check's own UNKNOWN line
(``dane: check failed: RuntimeError: ...``), escaped and bounded, beside an
intact verdict: an expired or misnamed certificate stays CRITICAL, in every
output format.

First with real odd input (CRL distribution points no HTTP client takes,
in an expired and in a misnamed certificate), then with each auxiliary check
made to raise in the installed plugin's own process, against the real
PostgreSQL 15 servers of the test bed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import pki
from testbed.dnslab import RefusingResolver
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, Run, check_local, run_plugin

# --- real odd input -------------------------------------------------------------------------


@dataclass(frozen=True)
class OddUrl:
    url: str
    #: The leaf is expired, or valid for another name.
    expired: bool
    #: What the status line says first: the verdict.
    verdict: str


ODD_URLS = {
    "expired-broken-ipv6": OddUrl("http://[::1/crl", True, "certificate expired 2 days ago"),
    "misnamed-port-abc": OddUrl(
        "http://127.0.0.1:abc/x.crl",
        False,
        "certificate is not valid for db.test (valid for ip-10-1-2-3.internal)",
    ),
    "expired-cr-lf": OddUrl("http://127.0.0.1/a\r\nb.crl", True, "certificate expired 2 days ago"),
}


@pytest.fixture(scope="module")
def odd_url_servers(workspace: Workspace, ca: Pki) -> Iterator[dict[str, Cluster]]:
    started = {}
    for name, odd in ODD_URLS.items():
        if odd.expired:
            leaf = pki.make_leaf(ca.intermediate, days_before=100, days_after=-2, crl_url=odd.url)
        else:
            leaf = pki.make_leaf(ca.intermediate, dns=("ip-10-1-2-3.internal",), crl_url=odd.url)
        started[name] = workspace.cluster([leaf, ca.intermediate], leaf, name="odd-url").start()
    yield started
    for cluster in started.values():
        cluster.stop()


@pytest.mark.parametrize("name", list(ODD_URLS))
def test_an_odd_crl_url_leaves_the_verdict_critical(
    odd_url_servers: dict[str, Cluster], ca: Pki, name: str
) -> None:
    port = odd_url_servers[name].port
    result = check_local(port, ca.root_file, "--check-revocation", servername="db.test")
    assert "internal error" not in result.stdout
    assert result.returncode == 2, result.stdout
    assert result.status_line.startswith(
        f"PG_TLS CRITICAL - 127.0.0.1(db.test):{port}: {ODD_URLS[name].verdict}"
    ), result.status_line
    document = json.loads(
        check_local(port, ca.root_file, "--check-revocation", "--json", servername="db.test").stdout
    )
    assert document["state"] == "CRITICAL" and document["exit_code"] == 2
    (target,) = document["targets"]
    checks = target["checks"]
    if ODD_URLS[name].expired:
        assert target["days_left"] < -1.9
    else:
        assert checks["name"]["severity"] == "critical" and not checks["name"]["ok"]
    assert checks["trust"]["ok"]
    revocation = checks["revocation"]
    assert not revocation["ok"]
    if revocation["message"].startswith("revocation: check failed: "):
        # The fetcher raised: its own UNKNOWN line, escaped (no CR-LF).
        assert revocation["severity"] == "unknown"
        assert "\r" not in revocation["message"] and "\n" not in revocation["message"]


# --- each auxiliary check made to raise ---------------------------------------------------

# Runs the plugin as installed, with one function replaced by one that
# raises: text with a line break, a '|' and more than the status line may
# take, as an exception from a library might carry.
_INJECT = """\
import importlib, sys
module, name = sys.argv[1].rsplit(".", 1)
def fail(*args, **kwargs):
    raise RuntimeError("injected\\nPG_TLS OK - all good | x=1 " + "y" * 300)
setattr(importlib.import_module(module), name, fail)
sys.argv = ["check_pg_tls", *sys.argv[2:]]
from check_pg_tls.cli import run
run()
"""

#: What the failure reads as, escaped (\\x0a, \\x7c) and cut at 150 characters.
FAILURE = (
    "check failed: RuntimeError: injected\\x0aPG_TLS OK - all good \\x7c x=1 "
    + "y" * (150 - 3 - len("injected\\x0aPG_TLS OK - all good \\x7c x=1 "))
    + "..."
)


@dataclass(frozen=True)
class Auxiliary:
    #: The function made to raise.
    function: str
    #: Options that turn the check on; {cert}, {key}, {crl} and {dns} are filled in.
    options: tuple[str, ...] = ()


AUXILIARIES = {
    "revocation": Auxiliary("check_pg_tls.revocation.revocation_finding", ("--check-revocation",)),
    "dane": Auxiliary("check_pg_tls.dane.judge_dane", ("--dane", "--dns-server", "{dns}")),
    "plaintext": Auxiliary(
        "check_pg_tls.check.plaintext_finding", ("--check-plaintext", "postgres")
    ),
    "crl": Auxiliary("check_pg_tls.verdict._judge_crls", ("--sslcrl", "{crl}")),
    "reload": Auxiliary("check_pg_tls.posture.reload_finding", ("--cert-file", "{cert}")),
    "key_match": Auxiliary("check_pg_tls.posture.key_file_findings", ("--key-file", "{key}")),
    "client_certificate": Auxiliary("check_pg_tls.posture.client_certificate_finding"),
    "client_key_permissions": Auxiliary(
        "check_pg_tls.posture.client_key_mode_finding",
        ("--sslcert", "{cert}", "--sslkey", "{key}"),
    ),
}


@dataclass
class Files:
    values: dict[str, str]

    def fill(self, options: tuple[str, ...]) -> list[str]:
        return [option.format(**self.values) for option in options]


@pytest.fixture(scope="module")
def files(workspace: Workspace, ca: Pki) -> Iterator[Files]:
    directory = workspace.new_dir("aux-files")
    leaf = pki.make_leaf(ca.intermediate)
    cert = pki.write_pem(directory / "fullchain.pem", leaf, ca.intermediate)
    key = directory / "server.key"
    key.write_bytes(leaf.key_pem)
    key.chmod(0o600)
    # Current CRLs of both CAs: OpenSSL's CRL check passes, the audit runs.
    crls = (pki.make_crl(ca.intermediate), pki.make_crl(ca.root))
    crl = pki.write_crls(directory / "crl.pem", *crls)
    # The TLSA lookup gets its answer at once, and DANE is judged.
    with RefusingResolver() as resolver:
        yield Files({"cert": str(cert), "key": str(key), "crl": str(crl), "dns": resolver.server})


def injected(function: str, *argv: str) -> Run:
    """The plugin with ``function`` made to raise, run with ``argv``."""
    done = subprocess.run(
        [sys.executable, "-c", _INJECT, function, *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def injected_local(function: str, cluster: Cluster, ca: Pki, *args: str) -> Run:
    """The same against a test server, checked as db.test with the test root."""
    return injected(
        function, "-H", "127.0.0.1", "-p", str(cluster.port), "--servername", "db.test",
        "--sslrootcert", str(ca.root_file), *args,
    )  # fmt: skip


@pytest.mark.parametrize("check", list(AUXILIARIES))
def test_a_failing_auxiliary_check_is_its_own_unknown_line(
    server: Callable[[str], Cluster], ca: Pki, files: Files, check: str
) -> None:
    auxiliary = AUXILIARIES[check]
    expired = server("expired")
    options = files.fill(auxiliary.options)
    result = injected_local(auxiliary.function, expired, ca, *options)
    assert result.stderr == ""
    assert result.returncode == 2, result.stdout
    prefix = f"PG_TLS CRITICAL - 127.0.0.1(db.test):{expired.port}: "
    assert result.status_line.startswith(prefix), result.status_line
    assert result.status_line.startswith(f"{prefix}certificate expired 2 days ago")
    assert f"{check}: {FAILURE}" in result.status_line, result.status_line
    assert "internal error" not in result.stdout
    # The status line holds one line, and its only '|' starts the perfdata.
    assert len(result.stdout.splitlines()) == 1
    assert result.status_line.count("|") == 1
    assert "days_left=-2" in result.status_line.split(" | ")[1]

    document = injected_local(auxiliary.function, expired, ca, *options, "--json").stdout
    (target,) = json.loads(document)["targets"]
    assert target["state"] == "CRITICAL"
    assert target["checks"][check] == {
        "ok": False,
        "severity": "unknown",
        "message": f"{check}: {FAILURE}",
    }
    assert target["checks"]["trust"]["ok"] and target["checks"]["name"]["ok"]
    assert target["days_left"] < -1.9


def test_every_output_format_keeps_the_verdict_beside_the_failure(
    server: Callable[[str], Cluster], ca: Pki, files: Files
) -> None:
    dane = AUXILIARIES["dane"]
    options = files.fill(dane.options)
    misnamed = server("wrong_name")

    def run(*args: str) -> Run:
        return injected_local(dane.function, misnamed, ca, *options, *args)

    failure = f"dane: {FAILURE}"
    verbose = run("-v")
    assert verbose.returncode == 2
    lines = verbose.stdout.splitlines()
    assert lines[0].startswith(
        f"PG_TLS CRITICAL - 127.0.0.1(db.test):{misnamed.port}: certificate is not valid for "
        "db.test (valid for ip-10-1-2-3.internal); "
    ), lines[0]
    assert failure in lines
    assert "trust: chain reaches a trusted root" in lines

    tap = run("--tap")
    assert tap.returncode == 2
    assert tap.stdout.startswith(
        f"TAP version 13\n1..1\nnot ok 1 - 127.0.0.1(db.test):{misnamed.port} certificate is "
        "not valid for db.test"
    ), tap.stdout
    assert "  severity: critical\n" in tap.stdout
    # YAML's double-quoted scalar doubles the backslashes of the escapes.
    assert f'    - "{failure.replace(chr(92), chr(92) * 2)}"\n' in tap.stdout

    quiet = run("--quiet")
    assert quiet.returncode == 2
    assert quiet.stdout.startswith(
        f"127.0.0.1(db.test):{misnamed.port}: certificate is not valid for db.test"
    )
    assert failure in quiet.stdout

    metrics = run("--openmetrics")
    assert metrics.returncode == 2
    target = f'target="127.0.0.1(db.test):{misnamed.port}"'

    def sample(name: str, *labels: str) -> str:
        (line,) = [
            line
            for line in metrics.stdout.splitlines()
            if line.startswith(f"{name}{{") and all(label in line for label in (target, *labels))
        ]
        return line.rsplit(" ", 1)[1]

    assert sample("pg_tls_state") == "2.0"
    assert sample("pg_tls_check_state", 'check="dane"') == "3.0"
    assert sample("pg_tls_check_state", 'check="name"') == "2.0"


def test_a_fleet_keeps_the_other_servers_and_the_verdict(
    server: Callable[[str], Cluster], ca: Pki, files: Files, tmp_path: Path
) -> None:
    targets = tmp_path / "targets"
    targets.write_text(
        f"127.0.0.1(db.test):{server('valid').port}\n127.0.0.1(db.test):{server('expired').port}\n"
    )
    failing = AUXILIARIES["client_certificate"].function
    result = injected(failing, "--targets-file", str(targets), "--sslrootcert", str(ca.root_file))
    assert result.returncode == 2, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("PG_TLS CRITICAL - 2 of 2 servers need attention "), lines[0]
    # The status line names the critical server first.
    assert f"attention (1 critical, 1 unknown): 127.0.0.1(db.test):{server('expired').port}: " \
        "certificate expired 2 days ago" in lines[0]  # fmt: skip
    assert lines[1].startswith("UNKNOWN 127.0.0.1(db.test):"), lines[1]
    assert f"client_certificate: {FAILURE}" in lines[1]
    assert lines[2].startswith("CRITICAL 127.0.0.1(db.test):"), lines[2]
    assert "certificate expired 2 days ago" in lines[2]
    assert f"client_certificate: {FAILURE}" in lines[2]


def test_an_unreadable_root_file_given_on_the_command_line_is_one_unknown_line(
    server: Callable[[str], Cluster], tmp_path: Path
) -> None:
    # A percent sign, a control character, bytes that are not UTF-8: a file
    # name like any other, and none exists.
    for name in ("root%00.crt", "root\x01.crt", "root\udcff.crt"):
        result = run_plugin(
            "-H", "127.0.0.1", "-p", str(server("valid").port),
            "--sslrootcert", str(tmp_path / name),
        )  # fmt: skip
        assert result.returncode == 3, result.stdout
        assert len(result.stdout.splitlines()) == 1 and result.stderr == ""
        assert result.status_line.startswith("PG_TLS UNKNOWN - cannot read root certificate file ")
        assert result.status_line.endswith(": No such file or directory")
