"""DANE-TA for any legal host name, as OpenSSL's DANE decides it.

DANE owner names such as ``_5432._tcp.my_host.example`` are legal DNS, and
libpq connects to such hosts; a DANE-TA record for one used to end the whole
check in "internal error" (UNKNOWN), the certificate's verdict lost. Each
server here (a real PostgreSQL 15) presents a leaf under the test
intermediate, whose key a DANE-TA ``2 1 1`` record publishes in a zone a
validating unbound serves. The system's ``openssl s_client -dane_tlsa_rrdata``
decides whether the leaf verifies under that anchor (dates, name, purpose);
the plugin's ``dane`` finding must agree, and the verdict must stand beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from testbed import dnslab, pki
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, Run, run_plugin
from .dane_oracle import openssl_dane, sha256, spki_of


@dataclass(frozen=True)
class Case:
    #: The host name checked, and under which the record is published.
    host: str
    #: Does OpenSSL's DANE accept the server with the DANE-TA record? Pinned first.
    accepted: bool
    #: The plugin's exit code (the verdict's state, DANE included).
    state: int
    #: What the status line says, the DANE part or the verdict's.
    says: tuple[str, ...]


INTERMEDIATE = "CN=check_pg_tls Test Intermediate,O=check_pg_tls tests"
CASES = {
    "valid": Case(
        "my_host.under.test",
        True,
        0,
        (f"TLSA 2 1 1 matches {INTERMEDIATE}, and the leaf verifies under it (DNSSEC-secure)",),
    ),
    "expired": Case(
        "expired_host.under.test",
        False,
        2,
        (
            "certificate expired 2 days ago",
            f"DANE-TA 2 1 1 matches {INTERMEDIATE}, but the leaf does not verify under it: "
            "certificate has expired",
        ),
    ),
    "wrong-name": Case(
        "wrong_host.under.test",
        False,
        2,
        ("but the leaf does not verify under it: it is not valid for wrong_host.under.test",),
    ),
    "client-only": Case(
        "client_host.under.test",
        False,
        2,
        ("but the leaf does not verify under it: unsuitable certificate purpose",),
    ),
}


def _leaf(name: str, ca: Pki) -> pki.Issued:
    inter = ca.intermediate
    if name == "expired":
        return pki.make_leaf(inter, dns=(CASES[name].host,), days_before=100, days_after=-2)
    if name == "wrong-name":
        return pki.make_leaf(inter, dns=("other_host.under.test",))
    if name == "client-only":
        return pki.make_leaf(inter, dns=(CASES[name].host,), server_auth=False)
    return pki.make_leaf(inter, dns=(CASES[name].host,))


@dataclass
class Lab:
    clusters: dict[str, Cluster]
    resolver: dnslab.Unbound
    root: str
    record: str

    def check(self, name: str, *args: str) -> Run:
        return run_plugin(
            "-H", "127.0.0.1", "-p", str(self.clusters[name].port),
            "--servername", CASES[name].host, "--sslmode", "require",
            "--dane", "--dns-server", self.resolver.server, *args,
        )  # fmt: skip


@pytest.fixture(scope="module")
def lab(workspace: Workspace, ca: Pki) -> Iterator[Lab]:
    clusters = {}
    for name in CASES:
        leaf = _leaf(name, ca)
        clusters[name] = workspace.cluster([leaf, ca.intermediate], leaf, name=f"ta-{name}").start()
    anchor = ca.intermediate.cert.public_bytes(Encoding.DER)
    record = f"2 1 1 {sha256(spki_of(anchor))}"
    lines = [
        f"_{clusters[name].port}._tcp.{case.host.removesuffix('.under.test')} IN TLSA {record}"
        for name, case in CASES.items()
    ]
    resolver = dnslab.Unbound(workspace.new_dir("dns-ta"), [dnslab.make_zone("under.test", lines)])
    resolver.start()
    yield Lab(clusters, resolver, str(ca.root_file), record)
    resolver.stop()
    for cluster in clusters.values():
        cluster.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_dane_ta_agrees_with_openssl_for_host_names_with_underscores(lab: Lab, name: str) -> None:
    case = CASES[name]
    accepted = openssl_dane(lab.clusters[name].port, case.host, lab.record)
    assert accepted == case.accepted, "OpenSSL's DANE changed its mind"
    result = lab.check(name)
    assert "internal error" not in result.stdout
    assert result.returncode == case.state, result.stdout
    for words in case.says:
        assert words in result.status_line, result.status_line
    (target,) = json.loads(lab.check(name, "--json").stdout)["targets"]
    dane = target["checks"]["dane"]
    assert dane["ok"] == accepted, dane
    if not accepted:
        assert dane["severity"] == "critical", dane
        assert dane["message"].startswith("no TLSA record matches the served certificate"), dane


def test_the_verdict_is_intact_beside_the_dane_ta_finding(lab: Lab) -> None:
    # verify-full with the test root: trust, name and dates are the verdict's.
    result = lab.check("wrong-name", "--sslmode", "verify-full", "--sslrootcert", lab.root, "-v")
    assert result.returncode == 2, result.stdout
    lines = result.stdout.splitlines()
    assert "trust: chain reaches a trusted root" in lines
    assert (
        "name: certificate is not valid for wrong_host.under.test (valid for other_host.under.test)"
    ) in lines
