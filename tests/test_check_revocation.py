"""--check-revocation: CRLs fetched from each certificate's distribution point.

A local HTTP server on 127.0.0.1 serves the CRLs (good, revoked, stale,
forged, missing, oversized, too slow); real PostgreSQL 15 servers serve
leaves whose CRL Distribution Point names it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from testbed import pki
from testbed.crl_server import CrlServer, Route
from testbed.pgcluster import Workspace

from .conftest import Run, check_local


@dataclass
class Lab:
    http: CrlServer
    workspace: Workspace
    root: pki.Issued
    inter: pki.Issued
    root_file: Path

    def check(self, route: Route | None, *args: str, cdp: bool = True) -> Run:
        """Serve a fresh leaf whose CRL URL answers ``route`` (an empty body: a good CRL)."""
        path = f"/leaf-{len(self.http.routes)}.crl"
        leaf = pki.make_leaf(self.inter, crl_url=self.http.url(path) if cdp else None)
        if route is not None:
            self.http.routes[path] = route if route.body else route._replace(body=self.crl())
        cluster = self.workspace.cluster([leaf, self.inter], leaf, name="revocation").start()
        try:
            return check_local(
                cluster.port, self.root_file, "--check-revocation", *args, servername="db.test"
            )
        finally:
            cluster.stop()

    def crl(self, *revoked: pki.Issued, **kw: object) -> bytes:
        crl = pki.make_crl(
            self.inter,
            [(r, x509.ReasonFlags.key_compromise) for r in revoked],
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
        yield Lab(http, workspace, root, inter, pki.write_pem(folder / "root.crt", root))


def test_good_chain_is_not_revoked(lab: Lab) -> None:
    result = lab.check(Route(b""), "-v")
    assert result.returncode == 0, result.stdout
    assert (
        "revocation: not revoked (certificate, intermediate CN=Published Intermediate,"
        in result.stdout
    )


def test_revoked_leaf_is_critical_with_date_and_reason(lab: Lab) -> None:
    # The leaf is made inside check(); revoke it by serving a CRL built for it.
    path = f"/leaf-{len(lab.http.routes)}.crl"
    leaf = pki.make_leaf(lab.inter, crl_url=lab.http.url(path))
    lab.http.routes[path] = Route(lab.crl(leaf))
    cluster = lab.workspace.cluster([leaf, lab.inter], leaf, name="revoked").start()
    try:
        result = check_local(
            cluster.port, lab.root_file, "--check-revocation", servername="db.test"
        )
    finally:
        cluster.stop()
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


def test_slow_crl_server_is_cut_off_within_the_timeout(lab: Lab) -> None:
    started = time.monotonic()
    result = lab.check(Route(b"", delay=5.0), "-t", "2")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout
    assert "timed out" in result.status_line
    # The cluster's start and stop are part of the elapsed time: well under
    # the slow server's 5 s, and the check itself within its 2 s.
    assert elapsed < 4.0


def test_leaf_without_distribution_point_is_reported(lab: Lab) -> None:
    result = lab.check(None, cdp=False)
    assert result.returncode == 1, result.stdout
    assert "certificate names no CRL distribution point" in result.status_line
