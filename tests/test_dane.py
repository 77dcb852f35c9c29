"""--dane against a real DNSSEC-validating unbound and real PostgreSQL 15 servers.

unbound serves our own zones on 127.0.0.1 and validates them against our own
trust anchors: a signed example.test with a TLSA record set for each case, a
tampered copy of a signed zone (bogus), and an unsigned zone (insecure). The
plugin connects to 127.0.0.1 and checks the name given with --servername,
whose TLSA records live at _PORT._tcp.NAME. Expected association data is
computed here, with hashlib, from the certificates the servers were given.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from testbed import dnslab, pki
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, Run, run_plugin

README = Path(__file__).resolve().parent.parent / "README.rst"


def spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def spki_sha512(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha512(spki).hexdigest()


def cert_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@dataclass
class Lab:
    ca: Pki
    served: pki.Issued
    server: Cluster
    renewing: Cluster
    renewing_leaf: pki.Issued
    resolver: dnslab.Unbound
    zones: dict[str, dnslab.ZoneFile]
    #: The record a stale zone still has: a key the server no longer uses.
    old_key: pki.Issued

    def check(self, host: str, *args: str, port: int | None = None) -> Run:
        return run_plugin(
            "-H",
            "127.0.0.1",
            "-p",
            str(port or self.server.port),
            "--servername",
            host,
            "--sslrootcert",
            str(self.ca.root_file),
            "--dane",
            "--dns-server",
            self.resolver.server,
            *args,
        )

    def checks(self, host: str, *args: str, port: int | None = None) -> dict[str, dict[str, str]]:
        result = self.check(host, "--json", *args, port=port)
        (target,) = json.loads(result.stdout)["targets"]
        checks: dict[str, dict[str, str]] = target["checks"]
        return checks


@pytest.fixture(scope="module")
def lab(workspace: Workspace, ca: Pki) -> Iterator[Lab]:
    names = ("db.example.test", "*.example.test", "db.tampered.test", "db.unsigned.test")
    served = pki.make_leaf(ca.intermediate, dns=names)
    renewing_leaf = pki.make_leaf(ca.intermediate, dns=("renew.example.test",))
    old_key = pki.make_leaf(ca.intermediate, dns=names)
    server = workspace.cluster([served, ca.intermediate], served, name="dane").start()
    renewing = workspace.cluster(
        [renewing_leaf, ca.intermediate], renewing_leaf, name="dane-renew"
    ).start()
    port = server.port
    leaf, inter, root = served.cert, ca.intermediate.cert, ca.root.cert
    example = dnslab.make_zone(
        "example.test",
        [
            "db IN A 127.0.0.1",
            "none IN A 127.0.0.1",
            f"_{port}._tcp.db IN TLSA 3 1 1 {spki_sha256(leaf)}",
            f"_{port}._tcp.full IN TLSA 3 0 1 {cert_sha256(leaf)}",
            f"_{port}._tcp.ta IN TLSA 2 1 1 {spki_sha256(inter)}",
            f"_{port}._tcp.sha512 IN TLSA 3 1 2 {spki_sha512(leaf)}",
            f"_{port}._tcp.stale IN TLSA 3 1 1 {spki_sha256(old_key.cert)}",
            f"_{port}._tcp.rootta IN TLSA 2 1 1 {spki_sha256(root)}",
            f"_{port}._tcp.pkix IN TLSA 1 1 1 {spki_sha256(leaf)}",
            f"_{port}._tcp.pkixta IN TLSA 0 1 1 {spki_sha256(root)}",
            f"_{port}._tcp.unusable IN TLSA 4 1 1 {spki_sha256(leaf)}",
            f"_{renewing.port}._tcp.renew IN TLSA 3 1 1 {spki_sha256(renewing_leaf.cert)}",
        ],
    )
    # Signed with a stale record, then changed to the one that would match:
    # what a forger on the path would serve. Only validation can tell.
    signed = dnslab.make_zone(
        "tampered.test", [f"_{port}._tcp.db IN TLSA 3 1 1 {spki_sha256(old_key.cert)}"]
    )
    tampered = dnslab.tamper_tlsa(signed, f"_{port}._tcp.db", f"3 1 1 {spki_sha256(leaf)}")
    unsigned = dnslab.make_zone(
        "unsigned.test", [f"_{port}._tcp.db IN TLSA 3 1 1 {spki_sha256(leaf)}"], signed=False
    )
    zones = {"example": example, "tampered": tampered, "unsigned": unsigned}
    resolver = dnslab.Unbound(workspace.new_dir("dns"), list(zones.values())).start()
    yield Lab(ca, served, server, renewing, renewing_leaf, resolver, zones, old_key)
    resolver.stop()
    server.stop()
    renewing.stop()


# --- the resolver itself, as a client sees it -------------------------------------------


def test_the_lab_resolver_validates_as_a_dane_client_needs(lab: Lab) -> None:
    port = lab.server.port
    secure = lab.resolver.query(f"_{port}._tcp.db.example.test")
    assert secure.rcode() == 0 and secure.flags & 0x20  # AD
    bogus = lab.resolver.query(f"_{port}._tcp.db.tampered.test")
    assert bogus.rcode() == 2  # SERVFAIL
    # With CD set, the resolver hands over the forged record, which matches
    # the served key: a plugin that set CD would call this zone OK.
    forged = lab.resolver.query(f"_{port}._tcp.db.tampered.test", cd=True)
    assert spki_sha256(lab.served.cert) in forged.to_text()
    insecure = lab.resolver.query(f"_{port}._tcp.db.unsigned.test")
    assert insecure.rcode() == 0 and not insecure.flags & 0x20
    assert insecure.answer


# --- matching records -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "matched"),
    [
        ("db.example.test", "TLSA 3 1 1 matches the leaf (DNSSEC-secure)"),
        ("full.example.test", "TLSA 3 0 1 matches the leaf (DNSSEC-secure)"),
        ("sha512.example.test", "TLSA 3 1 2 matches the leaf (DNSSEC-secure)"),
        (
            "ta.example.test",
            "TLSA 2 1 1 matches CN=check_pg_tls Test Intermediate,O=check_pg_tls tests, and "
            "the leaf verifies under it (DNSSEC-secure)",
        ),
        ("pkix.example.test", "TLSA 1 1 1 matches the leaf (DNSSEC-secure)"),
        (
            "pkixta.example.test",
            "TLSA 0 1 1 matches CN=check_pg_tls Test Root,O=check_pg_tls tests (DNSSEC-secure)",
        ),
    ],
)
def test_a_matching_secure_record_is_ok(lab: Lab, host: str, matched: str) -> None:
    result = lab.check(host)
    assert result.returncode == 0, result.stdout
    assert result.status_line.startswith(f"PG_TLS OK - 127.0.0.1({host}):{lab.server.port}: ")
    assert matched in result.status_line
    checks = lab.checks(host)
    assert checks["dane"] == {"ok": True, "severity": "ok", "message": matched}
    assert checks["dane_resolver"]["message"] == (
        f"resolver {lab.resolver.server} (--dns-server) answered NOERROR with AD set: it "
        "vouches for DNSSEC validation"
    )


def test_verbose_output_names_the_resolver_that_vouched(lab: Lab) -> None:
    result = lab.check("db.example.test", "-v")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert "dane: TLSA 3 1 1 matches the leaf (DNSSEC-secure)" in lines
    assert (
        f"dane_resolver: resolver {lab.resolver.server} (--dns-server) answered NOERROR with "
        "AD set: it vouches for DNSSEC validation"
    ) in lines
    # On loopback: no warning about the path to the resolver.
    assert "not on loopback" not in result.stdout


# --- records that do not match ------------------------------------------------------------


def test_a_stale_record_after_a_key_change_is_critical(lab: Lab) -> None:
    result = lab.check("stale.example.test")
    assert result.returncode == 2, result.stdout
    owner = f"_{lab.server.port}._tcp.stale.example.test"
    assert result.status_line.startswith(
        f"PG_TLS CRITICAL - 127.0.0.1(stale.example.test):{lab.server.port}: no TLSA record "
        "matches the served certificate (key changed without publishing a new record?); "
        f"the served key's record: {owner}. IN TLSA 3 1 1 {spki_sha256(lab.served.cert)}; "
        "certificate expires in 89 days"
    ), result.status_line
    assert lab.checks("stale.example.test")["dane"]["severity"] == "critical"


def test_a_dane_ta_record_for_a_root_the_server_does_not_send_cannot_match(lab: Lab) -> None:
    result = lab.check("rootta.example.test")
    assert result.returncode == 2, result.stdout
    assert "no TLSA record matches the served certificate" in result.status_line
    assert (
        "DANE-TA 2 1 1 matches CN=check_pg_tls Test Root,O=check_pg_tls tests, which the "
        "server does not send (PostgreSQL sends ssl_cert_file: the leaf and intermediates)"
    ) in result.status_line


def test_pkix_ee_needs_the_chain_to_pass_pkix_validation(lab: Lab) -> None:
    # The same 1 1 1 record, but the client trusts another root.
    other_root = lab.ca.dir / "other-root.crt"
    pki.write_pem(other_root, lab.ca.other_root)
    result = lab.check("pkix.example.test", "--sslrootcert", str(other_root))
    assert result.returncode == 2, result.stdout
    assert "no TLSA record matches the served certificate" in result.status_line
    assert (
        "PKIX-EE 1 1 1 matches the leaf, but the chain does not pass PKIX validation"
    ) in result.status_line
    # DANE-EE does not care about PKIX: the 3 1 1 record still matches.
    ee = lab.checks("db.example.test", "--sslrootcert", str(other_root))
    assert ee["dane"]["message"] == "TLSA 3 1 1 matches the leaf (DNSSEC-secure)"
    assert ee["dane"]["ok"] and not ee["trust"]["ok"]


def test_records_with_an_unknown_usage_are_unusable(lab: Lab) -> None:
    result = lab.check("unusable.example.test")
    assert result.returncode == 1, result.stdout
    assert "none of the 1 TLSA records at" in result.status_line
    assert "is usable" in result.status_line


# --- what DNSSEC says ---------------------------------------------------------------------


def test_a_bogus_zone_is_critical_with_the_resolvers_reason(lab: Lab) -> None:
    result = lab.check("db.tampered.test")
    assert result.returncode == 2, result.stdout
    owner = f"_{lab.server.port}._tcp.db.tampered.test"
    assert (
        f"TLSA records for {owner} are bogus: resolver {lab.resolver.server} answered SERVFAIL "
        f"(EDE 6 DNSSEC BOGUS: validation failure <{owner}. TLSA IN>: signature crypto failed); "
        "DANE clients cannot connect"
    ) in result.status_line
    check = lab.checks("db.tampered.test")["dane"]
    assert check["severity"] == "critical" and not check["ok"]


def test_an_unsigned_zone_is_insecure_and_never_ok(lab: Lab) -> None:
    # The record would match: without DNSSEC it is still worthless.
    result = lab.check("db.unsigned.test")
    assert result.returncode == 1, result.stdout
    owner = f"_{lab.server.port}._tcp.db.unsigned.test"
    assert (
        f"1 TLSA record(s) at {owner} are not DNSSEC-secure (resolver {lab.resolver.server} "
        "did not set AD): DANE clients ignore them; sign the zone (and publish its DS)"
    ) in result.status_line
    assert "matches" not in result.status_line
    strict = lab.check("db.unsigned.test", "--dane-insecure-state", "critical")
    assert strict.returncode == 2, strict.stdout
    resolver = lab.checks("db.unsigned.test")["dane_resolver"]["message"]
    assert resolver.endswith("answered NOERROR without AD: not DNSSEC-validated")


def test_no_records_has_the_configured_state(lab: Lab) -> None:
    owner = f"_{lab.server.port}._tcp.none.example.test"
    record = f"{owner}. IN TLSA 3 1 1 {spki_sha256(lab.served.cert)}"
    result = lab.check("none.example.test")
    assert result.returncode == 1, result.stdout
    assert (
        f"no TLSA records at {owner} (DNSSEC-validated); publish {record}"
    ) in result.status_line
    assert lab.check("none.example.test", "--dane-missing-state", "critical").returncode == 2
    relaxed = lab.check("none.example.test", "--dane-missing-state", "ok")
    assert relaxed.returncode == 0, relaxed.stdout


# --- the renewal that would break DANE ------------------------------------------------------


def _wait_until_served(lab: Lab, cert: x509.Certificate) -> None:
    # A reload takes effect within milliseconds; poll the server rather than sleep.
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if fingerprint in lab.check("renew.example.test", "--json", port=lab.renewing.port).stdout:
            return
    raise AssertionError("the server never served the new certificate")


def test_a_renewal_with_a_new_key_is_caught_before_the_reload(lab: Lab) -> None:
    cluster, ca = lab.renewing, lab.ca
    fullchain = str(cluster.data / "server.crt")

    def check(*args: str) -> Run:
        return lab.check("renew.example.test", "--cert-file", fullchain, *args, port=cluster.port)

    # Renewed with the same key: the published record stays valid.
    same_key = pki.make_leaf(
        ca.intermediate, dns=("renew.example.test",), key=lab.renewing_leaf.key
    )
    cluster.install_certificate([same_key, ca.intermediate], same_key)
    result = check()
    assert result.returncode == 1, result.stdout  # reload pending, nothing else
    assert "reload PostgreSQL" in result.status_line
    assert "TLSA" not in result.status_line
    assert check("--json").stdout.count("the renewed certificate in") == 1

    # Renewed with a new key: warn now, with the record to publish.
    new_key = pki.make_leaf(ca.intermediate, dns=("renew.example.test",))
    cluster.install_certificate([new_key, ca.intermediate], new_key)
    owner = f"_{cluster.port}._tcp.renew.example.test"
    record = f"{owner}. IN TLSA 3 1 1 {spki_sha256(new_key.cert)}"
    result = check()
    assert result.returncode == 1, result.stdout
    assert (
        f"the renewed certificate on disk has a key no TLSA record matches: publish `{record}` "
        "before reloading PostgreSQL"
    ) in result.status_line
    assert_as_in_readme(readme_row("renew.example.test", "3 1 1"), result, cluster.port)
    # The served certificate still matches: only the future is in danger.
    assert "no TLSA record matches the served certificate" not in result.status_line
    renewal = json.loads(check("--json").stdout)["targets"][0]["checks"]["dane_renewal"]
    assert renewal["severity"] == "warning" and not renewal["ok"]

    # Reloaded anyway: now every DANE client refuses the server.
    cluster.reload()
    _wait_until_served(lab, new_key.cert)
    after = check()
    assert after.returncode == 2, after.stdout
    assert_as_in_readme(readme_row("renew.example.test", "the same"), after, cluster.port)
    assert (
        "no TLSA record matches the served certificate (key changed without publishing a new "
        "record?)"
    ) in after.status_line


# --- the resolver, and the plugin around it --------------------------------------------------


@pytest.mark.serial
def test_a_silent_resolver_gives_a_clear_answer_within_the_timeout(lab: Lab) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = lab.check("db.example.test", "-t", "2", "--dns-server", address)
        elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stdout
    owner = f"_{lab.server.port}._tcp.db.example.test"
    assert (
        f"cannot check DANE: the TLSA lookup for {owner} failed: resolver {address} did not "
        "answer within 2 seconds"
    ) in result.status_line
    # The certificate was judged all the same.
    assert "certificate expires in 89 days" in result.status_line
    # Within -t, with the interpreter's start-up on top.
    assert elapsed < 2.5, elapsed
    port = int(address.rsplit(":", 1)[1])
    assert_as_in_readme(readme_row("db.example.test", "any"), result, lab.server.port, port)


def test_the_system_resolver_is_used_without_dns_server(lab: Lab, workspace: Workspace) -> None:
    # A resolv.conf of our own, seen by the plugin alone (a private mount
    # namespace), pointing at a second unbound on a loopback address, port 53.
    system = dnslab.Unbound(
        workspace.new_dir("dns-system"), list(lab.zones.values()), "127.0.53.1", port=53
    ).start()
    try:
        conf = workspace.new_dir("etc") / "resolv.conf"
        conf.write_text("nameserver 127.0.53.1\n")
        conf.chmod(0o644)
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        argv = [
            "-H",
            "127.0.0.1",
            "-p",
            str(lab.server.port),
            "--servername",
            "db.example.test",
            "--sslrootcert",
            str(lab.ca.root_file),
            "--dane",
            "-v",
        ]
        result = run_plugin(*argv, prefix=("unshare", "-m", "sh", "-c", script, str(conf)))
    finally:
        system.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TLSA 3 1 1 matches the leaf (DNSSEC-secure)" in result.status_line
    assert (
        "dane_resolver: resolver 127.0.53.1:53 (/etc/resolv.conf) answered NOERROR with AD "
        "set: it vouches for DNSSEC validation"
    ) in result.stdout.splitlines()


def test_an_ip_address_has_no_tlsa_records(lab: Lab) -> None:
    result = run_plugin(
        "-H",
        "127.0.0.1",
        "-p",
        str(lab.server.port),
        "--sslmode",
        "require",
        "--dane",
        "--dns-server",
        lab.resolver.server,
    )
    assert result.returncode == 3, result.stdout
    assert (
        "cannot check DANE: 127.0.0.1 is an IP address, and TLSA records live under a host "
        "name (_PORT._tcp.HOST): give --servername"
    ) in result.status_line


def test_without_dnspython_dane_is_unknown_with_the_install_command(lab: Lab) -> None:
    # The plugin as installed, but dnspython cannot be imported.
    code = (
        "import sys; sys.modules['dns'] = None; sys.argv[0] = 'check_pg_tls'; "
        "from check_pg_tls.cli import run; run()"
    )
    args = ["-H", "127.0.0.1", "-p", str(lab.server.port), "--servername", "db.example.test"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args, "--dane", "--dns-server", lab.resolver.server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stdout
    assert done.stdout == (
        "PG_TLS UNKNOWN - --dane needs dnspython: pip install 'check_pg_tls[dane]' (or dnspython)\n"
    )
    # Without --dane, dnspython is never imported.
    plain = subprocess.run(
        [sys.executable, "-c", code, *args, "--sslmode", "require"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0, plain.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dane", "--dns-server", "dns.example.test"), "give an IP address[:port]"),
        (("--dane", "--dns-server", "127.0.0.1:0"), "bad port"),
        (("--dns-server", "127.0.0.1"), "--dns-server is for --dane"),
    ],
)
def test_bad_dane_options_are_unknown(args: tuple[str, ...], message: str) -> None:
    result = run_plugin("-H", "db.example.test", *args)
    assert result.returncode == 3, result.stdout
    assert message in result.status_line


# --- the README's table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    host: str
    published: str
    state: str
    excerpt: str


def readme_rows() -> list[Row]:
    """The rows of the README's table of what --dane answers."""
    text = README.read_text()
    table = text[text.index(".. dane-table-start") : text.index(".. dane-table-end")]
    rows: list[list[str]] = []
    for line in table.splitlines():
        if line.startswith("   * - "):
            rows.append([line[7:]])
        elif line.startswith("     - ") and rows:
            rows[-1].append(line[7:])
    return [
        Row(cells[0].strip("`"), cells[1], cells[3], cells[4].removeprefix("``").removesuffix("``"))
        for cells in rows[1:]
    ]


def readme_row(host: str, published: str) -> Row:
    (row,) = [r for r in readme_rows() if r.host == host and r.published.startswith(published)]
    return row


def assert_as_in_readme(row: Row, result: Run, *ports: int) -> None:
    """The status line has the row's state and says what the row says (PORT, hashes aside)."""
    assert result.status_line.startswith(f"PG_TLS {row.state} - "), (row, result.stdout)
    line = result.status_line
    for port in ports:
        line = line.replace(f":{port}", ":PORT").replace(f"_{port}.", "_PORT.")
    line = re.sub(r"\b[0-9a-f]{64,}\b", "HASH", line)
    excerpt = re.sub(r"\b[0-9a-f]{4}\.\.\.", "HASH", row.excerpt)
    assert excerpt in line, (row, result.status_line)


# Rows measured by their own tests above, with their own set-up.
SPECIAL = ("--cert-file", "after the reload", "never answers")


def test_the_readme_table_is_what_the_plugin_answers(lab: Lab) -> None:
    rows = readme_rows()
    assert len(rows) >= 15
    for row in rows:
        if any(words in row.published for words in SPECIAL):
            continue
        result = lab.check(row.host)
        assert_as_in_readme(row, result, lab.server.port, lab.resolver.port)
