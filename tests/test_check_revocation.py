"""--check-revocation: CRLs fetched from each certificate's distribution point.

A local HTTP server on 127.0.0.1 serves the CRLs (good, revoked, stale,
forged, out of scope, missing, oversized, too slow, trickling); one real
PostgreSQL 15 server serves, one after the other, leaves whose CRL
Distribution Point names it. Where OpenSSL's CRL rules decide (scope,
delta and indirect CRLs, critical extensions, removeFromCRL), psql with the
same CRLs as ``sslcrl`` is the oracle: it connects exactly when the plugin
finds the chain not revoked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from testbed import crafted, pki
from testbed.crl_server import CrlServer, Route
from testbed.pgcluster import Cluster, Workspace

from .conftest import Run, check_local, psql_connects, run_plugin

#: What may pass between the plugin's -t and the test's own clock around the
#: process (fork, exec, reaping): the plugin counts -t from its start.
MARGIN = 0.1

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@dataclass
class Lab:
    http: CrlServer
    workspace: Workspace
    root: pki.Issued
    inter: pki.Issued
    root_file: Path
    cluster: Cluster
    dir: Path

    def new_path(self, name: str = "leaf") -> str:
        return f"/{name}-{len(self.http.routes)}-{len(self.http.requests)}.crl"

    def serve(self, chain_pem: bytes, key_pem: bytes, leaf_der: bytes) -> None:
        """Make the one server present this chain (a reload, as on a real server)."""
        self.cluster.install_pem(chain_pem, key_pem)
        self.cluster.reload()
        self.cluster.wait_served(lambda seen: seen == leaf_der)

    def serve_issued(self, leaf: pki.Issued, *chain: pki.Issued) -> None:
        pem = b"".join(c.cert_pem for c in (leaf, *chain))
        self.serve(pem, leaf.key_pem, leaf.cert.public_bytes(Encoding.DER))

    def leaf(self, route: Route | None, cdp: bool = True) -> pki.Issued:
        """A fresh leaf whose CRL URL answers ``route`` (an empty body: a good CRL)."""
        path = self.new_path()
        leaf = pki.make_leaf(self.inter, crl_url=self.http.url(path) if cdp else None)
        if route is not None:
            self.http.routes[path] = route if route.body else route._replace(body=self.crl())
        return leaf

    def check(self, route: Route | None, *args: str, cdp: bool = True) -> Run:
        self.serve_issued(self.leaf(route, cdp), self.inter)
        return self.plugin("--check-revocation", *args)

    def plugin(self, *args: str) -> Run:
        return check_local(self.cluster.port, self.root_file, *args, servername="db.test")

    def crl(self, *revoked: pki.Issued, **kw: object) -> bytes:
        crl = pki.make_crl(
            self.inter,
            [(r, KEY_COMPROMISE) for r in revoked],
            **kw,  # type: ignore[arg-type]
        )
        return crl.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def lab(workspace: Workspace) -> Iterator[Lab]:
    with CrlServer() as http:
        root = pki.make_root("Published Root")
        inter = pki.make_intermediate(root, "Published Intermediate", crl_url=http.url("/root.crl"))
        http.routes["/root.crl"] = Route(pki.make_crl(root).public_bytes(Encoding.DER))
        folder = workspace.new_dir("published")
        first = pki.make_leaf(inter)
        cluster = workspace.cluster([first, inter], first, name="revocation").start()
        yield Lab(
            http, workspace, root, inter, pki.write_pem(folder / "root.crt", root), cluster, folder
        )
        cluster.stop()


def test_good_chain_is_not_revoked(lab: Lab) -> None:
    result = lab.check(Route(b""), "-v")
    assert result.returncode == 0, result.stdout
    assert (
        "revocation: not revoked (certificate, intermediate CN=Published Intermediate,"
        in result.stdout
    )


def test_revoked_leaf_is_critical_with_date_and_reason(lab: Lab) -> None:
    path = lab.new_path()
    leaf = pki.make_leaf(lab.inter, crl_url=lab.http.url(path))
    lab.http.routes[path] = Route(lab.crl(leaf))
    lab.serve_issued(leaf, lab.inter)
    result = lab.plugin("--check-revocation")
    assert result.returncode == 2, result.stdout
    assert "certificate revoked on " in result.status_line
    assert f"(key compromise), says the CRL at {lab.http.url(path)}" in result.status_line


def test_pem_crl_is_accepted(lab: Lab) -> None:
    crl = pki.make_crl(lab.inter).public_bytes(Encoding.PEM)
    result = lab.check(Route(crl))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("route", "message"),
    [
        pytest.param(Route(b"", status=404), "HTTP 404", id="404"),
        pytest.param(Route(b"", status=302), "HTTP 302", id="redirect"),
        pytest.param(Route(b"not a crl"), "does not hold a CRL", id="garbage"),
        pytest.param(Route(b"x" * (10 * 1024 * 1024 + 10)), "larger than 10 MiB", id="oversized"),
    ],
)
def test_unusable_crl_is_revocation_unknown_not_revoked(
    lab: Lab, route: Route, message: str
) -> None:
    result = lab.check(route)
    assert result.returncode == 1, result.stdout
    assert "revocation unknown: " in result.status_line
    assert message in result.status_line
    assert "revoked on" not in result.status_line


def test_stale_crl_is_revocation_unknown(lab: Lab) -> None:
    result = lab.check(Route(lab.crl(days_before=10, days_after=-1)))
    assert result.returncode == 1, result.stdout
    assert "CRL of CN=Published Intermediate,O=check_pg_tls tests" in result.status_line
    assert "expired on" in result.status_line


def test_crl_signed_by_another_key_is_not_believed(lab: Lab) -> None:
    impostor = pki.make_intermediate(lab.root, "Published Intermediate")
    forged = pki.make_crl(lab.inter, signer=impostor).public_bytes(Encoding.DER)
    result = lab.check(Route(forged), "--revocation-unknown-state", "critical")
    assert result.returncode == 2, result.stdout
    assert "is not signed by CN=Published Intermediate" in result.status_line


@pytest.mark.serial
def test_slow_crl_server_is_cut_off_within_the_timeout(lab: Lab) -> None:
    lab.serve_issued(lab.leaf(Route(b"", delay=5.0)), lab.inter)
    started = time.monotonic()
    result = lab.plugin("--check-revocation", "-t", "2")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout
    assert "timed out" in result.status_line
    assert elapsed < 2 + MARGIN


def test_leaf_without_distribution_point_is_reported(lab: Lab) -> None:
    result = lab.check(None, cdp=False)
    assert result.returncode == 1, result.stdout
    assert "certificate names no CRL distribution point" in result.status_line


# --- OpenSSL decides which CRL covers a certificate ------------------------


def _idp(**kw: object) -> x509.IssuingDistributionPoint:
    fields: dict[str, object] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    fields.update(kw)
    return x509.IssuingDistributionPoint(**fields)  # type: ignore[arg-type]


def _unknown_extension() -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")


MakeCrl = Callable[[Lab, pki.Issued, str], x509.CertificateRevocationList]
NOT_REVOKED = "not revoked (certificate, intermediate CN=Published Intermediate"

# Each case: the CRL at the leaf's distribution point (made for that leaf and
# URL), then what the output says; whether it is OK is psql's to decide.
SCOPES: dict[str, tuple[MakeCrl, str]] = {
    "only-ca-certs": (
        lambda lab, leaf, url: pki.make_crl(
            lab.inter,
            [(leaf, KEY_COMPROMISE)],
            extensions=[(_idp(only_contains_ca_certs=True), True)],
        ),
        "does not cover certificate: it lists CA certificates only (OpenSSL: different CRL scope)",
    ),
    "only-some-reasons": (
        lambda lab, leaf, url: pki.make_crl(
            lab.inter,
            extensions=[(_idp(only_some_reasons=frozenset({x509.ReasonFlags.superseded})), True)],
        ),
        "covers only some revocation reasons (OpenSSL: unable to get certificate CRL)",
    ),
    "indirect": (
        lambda lab, leaf, url: pki.make_crl(
            lab.inter, extensions=[(_idp(indirect_crl=True), True)]
        ),
        "it is an indirect CRL (OpenSSL: unable to get certificate CRL)",
    ),
    "another-distribution-point": (
        lambda lab, leaf, url: pki.make_crl(
            lab.inter,
            [(leaf, KEY_COMPROMISE)],
            extensions=[(_idp(full_name=[x509.UniformResourceIdentifier(url + "-other")]), True)],
        ),
        "it is the CRL of another distribution point (OpenSSL: different CRL scope)",
    ),
    "its-own-distribution-point": (
        lambda lab, leaf, url: pki.make_crl(
            lab.inter, extensions=[(_idp(full_name=[x509.UniformResourceIdentifier(url)]), True)]
        ),
        NOT_REVOKED,
    ),
    "unknown-critical-extension": (
        lambda lab, leaf, url: pki.make_crl(lab.inter, extensions=[(_unknown_extension(), True)]),
        "has a critical extension OpenSSL does not handle, so it cannot vouch for certificate",
    ),
    "unknown-critical-entry-extension": (
        lambda lab, leaf, url: pki.make_crl(
            lab.inter, [(leaf, KEY_COMPROMISE)], entry_extensions=[(_unknown_extension(), True)]
        ),
        "has a critical extension OpenSSL does not handle",
    ),
    "remove-from-crl": (
        lambda lab, leaf, url: pki.make_crl(lab.inter, [(leaf, x509.ReasonFlags.remove_from_crl)]),
        NOT_REVOKED,
    ),
    "another-issuer": (
        lambda lab, leaf, url: pki.make_crl(lab.root, [(leaf, KEY_COMPROMISE)]),
        "it is not issued by CN=Published Intermediate,O=check_pg_tls tests (name and key",
    ),
    "no-next-update": (
        lambda lab, leaf, url: pki.make_crl(lab.inter, next_update=False),
        NOT_REVOKED,
    ),
}


@pytest.mark.parametrize("case", SCOPES)
def test_openssl_decides_whether_a_fetched_crl_covers_the_leaf(
    lab: Lab, psql_home: Path, case: str
) -> None:
    make, words = SCOPES[case]
    path = lab.new_path()
    url = lab.http.url(path)
    leaf = pki.make_leaf(lab.inter, crl_url=url)
    crl = make(lab, leaf, url)
    lab.http.routes[path] = Route(crl.public_bytes(Encoding.DER))
    lab.serve_issued(leaf, lab.inter)
    # What --check-revocation fetches, given to libpq as sslcrl.
    root_crl = x509.load_der_x509_crl(lab.http.routes["/root.crl"].body)
    fetched = pki.write_crls(lab.dir / f"{case}.crl", crl, root_crl)
    libpq = psql_connects(
        lab.cluster, psql_home, "db.test", "verify-full", str(lab.root_file), (f"sslcrl={fetched}",)
    )
    result = lab.plugin("--check-revocation", "-v")
    assert words in result.stdout, result.stdout
    if libpq:
        assert result.returncode == 0, result.stdout
    else:
        assert result.returncode == 1, result.stdout
        assert "revocation unknown: " in result.status_line
        assert "revoked on" not in result.status_line


def test_out_of_scope_crl_of_an_intermediate_is_its_own_unknown(lab: Lab, psql_home: Path) -> None:
    # The root's CRL for the intermediate lists end-entity certificates only.
    inter = pki.make_intermediate(
        lab.root, "Scoped Intermediate", crl_url=lab.http.url("/scoped.crl")
    )
    root_crl = pki.make_crl(lab.root, extensions=[(_idp(only_contains_user_certs=True), True)])
    lab.http.routes["/scoped.crl"] = Route(root_crl.public_bytes(Encoding.DER))
    path = lab.new_path()
    leaf = pki.make_leaf(inter, crl_url=lab.http.url(path))
    leaf_crl = pki.make_crl(inter)
    lab.http.routes[path] = Route(leaf_crl.public_bytes(Encoding.DER))
    lab.serve_issued(leaf, inter)
    fetched = pki.write_crls(lab.dir / "scoped.crl", leaf_crl, root_crl)
    libpq = psql_connects(
        lab.cluster, psql_home, "db.test", "verify-full", str(lab.root_file), (f"sslcrl={fetched}",)
    )
    result = lab.plugin("--check-revocation")
    assert not libpq
    assert result.returncode == 1, result.stdout
    assert (
        f"the CRL at {lab.http.url('/scoped.crl')} does not cover intermediate "
        "CN=Scoped Intermediate,O=check_pg_tls tests: it lists end-entity certificates only"
    ) in result.status_line


# --- only a verified chain's URLs are fetched -------------------------------


def _untrusted(kind: str, url: str) -> tuple[pki.Issued, list[pki.Issued]]:
    if kind == "self-signed":
        return pki.make_leaf(None, crl_url=url), []
    other = pki.make_root("Unknown Root")
    inter = pki.make_intermediate(other, "Unknown Intermediate", crl_url=url)
    return pki.make_leaf(inter, crl_url=url), [inter]


@pytest.mark.parametrize(
    ("kind", "sslmode", "why"),
    [
        ("self-signed", "verify-full", "the chain is not trusted"),
        ("unknown-ca", "verify-ca", "the chain is not trusted"),
        ("self-signed", "require", "sslmode=require verifies no certificate"),
    ],
)
def test_urls_of_an_unverified_chain_are_never_fetched(
    lab: Lab, kind: str, sslmode: str, why: str
) -> None:
    path = lab.new_path("untrusted")
    lab.http.routes[path] = Route(b"never to be asked for")
    leaf, chain = _untrusted(kind, lab.http.url(path))
    lab.serve_issued(leaf, *chain)
    asked = len(lab.http.requests)
    roots = ["--sslrootcert", str(lab.root_file)] if sslmode != "require" else []
    result = run_plugin(
        "-H", "127.0.0.1", "-p", str(lab.cluster.port), "--servername", "db.test",
        "--sslmode", sslmode, *roots, "--check-revocation", "--json",
    )  # fmt: skip
    assert lab.http.requests[asked:] == []
    (target,) = json.loads(result.stdout)["targets"]
    revocation = target["checks"]["revocation"]
    assert revocation["severity"] == "warning"
    assert revocation["message"] == (
        f"revocation not checked: {why}, and no URL an unverified certificate names is fetched"
    )
    assert path not in result.stdout


# --- a certificate's URL is checked before use ------------------------------


def _cdp(uri: bytes) -> crafted.Ext:
    # CRLDistributionPoints { DistributionPoint { [0] { fullName [0] { [6] uri } } } }
    point = crafted.tlv(0xA0, crafted.tlv(0xA0, crafted.tlv(0x86, uri)))
    return crafted.raw("2.5.29.31", crafted.seq(crafted.seq(point)))


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        # No host to look up in any of them: tests send nothing beyond loopback.
        pytest.param(b"http://127.0.0.1/x y.crl", "http://127.0.0.1/x y.crl", id="space"),
        pytest.param(
            b"http://127.0.0.1/x.crl\r\nX-A: b", "http://127.0.0.1/x.crl\\x0d\\x0aX-A: b", id="crlf"
        ),
        pytest.param(b"http://127.0.0.1:abc/x.crl", "http://127.0.0.1:abc/x.crl", id="port"),
        pytest.param(b"http://[::1/x.crl", "http://[::1/x.crl", id="ipv6-bracket"),
        pytest.param(
            "http://127.0.0.1/dé.crl".encode(), "http://127.0.0.1/d\\xc3\\xa9.crl", id="non-ascii"
        ),
        pytest.param(
            b"http://127.0.0.1/\xff\x00.crl", "http://127.0.0.1/\\xff\\x00.crl", id="not-utf8"
        ),
        pytest.param(
            b"HTTP://127.0.0.1/ " + b"a" * 300, "HTTP://127.0.0.1/ " + "a" * 79 + "...", id="long"
        ),
    ],
)
def test_malformed_distribution_point_is_revocation_unknown_beside_the_verdict(
    lab: Lab, uri: bytes, shown: str
) -> None:
    inter = crafted.Cert(
        lab.inter.cert.public_bytes(Encoding.DER), lab.inter.key, lab.inter.cert.subject
    )
    leaf = crafted.issue(
        "db.test", inter, extensions=[*crafted.leaf_extensions("db.test"), _cdp(uri)]
    )
    lab.serve(crafted.pem(leaf.der) + lab.inter.cert_pem, leaf.key_pem, leaf.der)
    # The wrong name keeps its CRITICAL: the revocation finding fails alone.
    result = run_plugin(
        "-H", "127.0.0.1", "-p", str(lab.cluster.port), "--servername", "other.test",
        "--sslrootcert", str(lab.root_file), "--check-revocation",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert "certificate is not valid for other.test (valid for db.test)" in result.status_line
    assert f"revocation unknown: cannot fetch the CRL for certificate from {shown}: " in (
        result.status_line
    )
    assert "not a valid URL" in result.status_line
    assert "internal error" not in result.stdout


# --- one deadline for the whole fetch ---------------------------------------


def _revocation_message(out: str) -> str:
    return str(json.loads(out)["targets"][0]["checks"]["revocation"]["message"])


@pytest.mark.serial
@pytest.mark.parametrize(
    ("form", "read"),
    [
        ("--json", _revocation_message),
        ("--tap", lambda out: out.split("\n")[2]),
        ("--quiet", lambda out: out),
        ("-v", lambda out: out),
    ],
)
def test_trickling_crl_server_is_cut_off_within_t_in_every_format(
    lab: Lab, form: str, read: Callable[[str], str]
) -> None:
    # 20 kB at 1 kB/s: every read gets data well before any per-read timeout.
    lab.serve_issued(lab.leaf(Route(lab.crl() + b"\x00" * 20_000, rate=1000)), lab.inter)
    started = time.monotonic()
    result = lab.plugin("--check-revocation", "-t", "1", form)
    elapsed = time.monotonic() - started
    assert elapsed < 1 + MARGIN
    assert result.returncode == 1, result.stdout
    assert "no result within" not in result.stdout
    assert "timed out after" in read(result.stdout)
    if form == "-v":
        assert "trust: chain reaches a trusted root" in result.stdout


@pytest.mark.serial
def test_trickling_headers_are_cut_off_within_t(lab: Lab) -> None:
    route = Route(lab.crl(), rate=20, trickle_headers=True)
    lab.serve_issued(lab.leaf(route), lab.inter)
    started = time.monotonic()
    result = lab.plugin("--check-revocation", "-t", "1")
    elapsed = time.monotonic() - started
    assert elapsed < 1 + MARGIN
    assert result.returncode == 1, result.stdout
    assert "revocation unknown: cannot fetch the CRL for certificate from " in result.status_line
    assert "timed out after" in result.status_line


@pytest.mark.serial
def test_two_targets_with_a_trickling_crl_end_within_t(lab: Lab) -> None:
    leaf = lab.leaf(Route(lab.crl() + b"\x00" * 20_000, rate=1000))
    lab.serve_issued(leaf, lab.inter)
    second = lab.workspace.cluster([leaf, lab.inter], leaf, name="revocation-2").start()
    try:
        started = time.monotonic()
        result = run_plugin(
            f"127.0.0.1(db.test):{lab.cluster.port}",
            f"127.0.0.1(db.test):{second.port}",
            "--sslrootcert", str(lab.root_file), "--check-revocation", "-t", "1",
        )  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        second.stop()
    assert elapsed < 1 + MARGIN
    assert result.returncode == 1, result.stdout
    assert result.status_line.startswith("PG_TLS WARNING - 2 of 2 servers need attention")
    assert result.stdout.count("timed out after") >= 2
