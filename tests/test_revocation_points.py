"""--check-revocation with several distribution points, and with none.

A certificate may name several CRL Distribution Points: mirrors, or a
primary and a fallback that are not always in step. Every ``http://`` one is
fetched (within the one deadline) and OpenSSL decides on all their CRLs at
once, as ``openssl verify -crl_check`` does with the same files: it uses the
best of them (a current one, then the one issued last), so an older CRL
still current at one URL cannot hide a revocation in a newer one at another.
The oracle is ``openssl verify`` with every CRL fetched; the plugin must say
what it says. An intermediate that names no distribution point is as unknown
as a leaf that names none: the OK line lists only what was checked.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from testbed import pki
from testbed.crl_server import CrlServer, Route
from testbed.pgcluster import Cluster, Workspace

from .conftest import Run, check_local

HOLD = x509.ReasonFlags.certificate_hold
KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@dataclass
class Lab:
    http: CrlServer
    root: pki.Issued
    #: An intermediate that names its CRL, and one that names none.
    inter: pki.Issued
    silent: pki.Issued
    cluster: Cluster
    dir: Path
    count: int = 0

    @property
    def root_file(self) -> Path:
        return self.dir / "root.crt"

    def leaf(self, issuer: pki.Issued, *paths: str) -> pki.Issued:
        """A leaf naming one distribution point per path, in this order."""
        base = pki.make_leaf(issuer, dns=("db.test",))
        builder = (
            x509.CertificateBuilder()
            .subject_name(base.cert.subject)
            .issuer_name(base.cert.issuer)
            .public_key(base.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(base.cert.not_valid_before_utc)
            .not_valid_after(base.cert.not_valid_after_utc)
        )
        for extension in base.cert.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        points = [
            x509.DistributionPoint(
                [x509.UniformResourceIdentifier(self.http.url(p))], None, None, None
            )
            for p in paths
        ]
        if points:
            builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
        return pki.Issued(builder.sign(issuer.key, hashes.SHA256()), base.key)

    def serve(self, leaf: pki.Issued, issuer: pki.Issued) -> None:
        self.cluster.install_certificate([leaf, issuer], leaf)
        self.cluster.reload()
        der = leaf.cert.public_bytes(Encoding.DER)
        self.cluster.wait_served(lambda seen: seen == der)

    def paths(self, *names: str) -> tuple[str, ...]:
        self.count += 1
        return tuple(f"/{name}-{self.count}.crl" for name in names)

    def publish(self, path: str, crl: x509.CertificateRevocationList) -> None:
        self.http.routes[path] = Route(crl.public_bytes(Encoding.DER))

    def plugin(self, *args: str) -> Run:
        return check_local(
            self.cluster.port, self.root_file, "--check-revocation", *args, servername="db.test"
        )

    def openssl_verify(self, leaf: pki.Issued, issuer: pki.Issued, *crls: str) -> str:
        """``openssl verify -crl_check`` with the CRLs at these paths: its last line."""
        files = []
        for index, path in enumerate(crls):
            crl = x509.load_der_x509_crl(self.http.routes[path].body)
            files += ["-CRLfile", str(pki.write_crls(self.dir / f"v{self.count}-{index}.pem", crl))]
        pki.write_pem(self.dir / "leaf.pem", leaf)
        pki.write_pem(self.dir / "issuer.pem", issuer)
        done = subprocess.run(
            [
                "openssl", "verify", "-crl_check", "-CAfile", str(self.root_file),
                "-untrusted", str(self.dir / "issuer.pem"), *files, str(self.dir / "leaf.pem"),
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return (done.stdout + done.stderr).strip()


@pytest.fixture(scope="module")
def lab(workspace: Workspace) -> Iterator[Lab]:
    with CrlServer() as http:
        root = pki.make_root("Mirrored Root")
        http.routes["/root.crl"] = Route(pki.make_crl(root).public_bytes(Encoding.DER))
        inter = pki.make_intermediate(root, "Mirrored Intermediate", crl_url=http.url("/root.crl"))
        silent = pki.make_intermediate(root, "Silent Intermediate")
        folder = workspace.new_dir("revocation-points")
        pki.write_pem(folder / "root.crt", root)
        first = pki.make_leaf(inter)
        cluster = workspace.cluster([first, inter], first, name="revocation-points").start()
        yield Lab(http, root, inter, silent, cluster, folder)
        cluster.stop()


@pytest.mark.parametrize("revoking_first", [False, True], ids=["newer-second", "newer-first"])
def test_a_newer_crl_at_any_point_revokes(lab: Lab, revoking_first: bool) -> None:
    older_path, newer_path = lab.paths("older", "newer")
    order = (newer_path, older_path) if revoking_first else (older_path, newer_path)
    leaf = lab.leaf(lab.inter, *order)
    # The older CRL is still current and does not list the leaf yet.
    lab.publish(older_path, pki.make_crl(lab.inter, number=1, days_before=3, days_after=7))
    lab.publish(
        newer_path, pki.make_crl(lab.inter, [(leaf, KEY_COMPROMISE)], number=2, days_before=1)
    )
    assert "certificate revoked" in lab.openssl_verify(leaf, lab.inter, *order)
    lab.serve(leaf, lab.inter)
    result = lab.plugin()
    assert result.returncode == 2, result.stdout
    assert (
        "certificate revoked on " in result.status_line
        and f"(key compromise), says the CRL at {lab.http.url(newer_path)}" in result.status_line
    ), result.stdout
    assert older_path in lab.http.requests and newer_path in lab.http.requests


def test_a_newer_crl_that_no_longer_holds_a_certificate_wins(lab: Lab) -> None:
    # OpenSSL takes the best CRL, not the worst: a hold the newer CRL has
    # released is no revocation.
    held_path, released_path = lab.paths("held", "released")
    leaf = lab.leaf(lab.inter, held_path, released_path)
    lab.publish(held_path, pki.make_crl(lab.inter, [(leaf, HOLD)], number=1, days_before=3))
    lab.publish(released_path, pki.make_crl(lab.inter, number=2, days_before=1))
    assert lab.openssl_verify(leaf, lab.inter, held_path, released_path).endswith(": OK")
    lab.serve(leaf, lab.inter)
    result = lab.plugin("-v")
    assert result.returncode == 0, result.stdout
    assert "revocation: not revoked (certificate, intermediate CN=Mirrored Intermediate" in (
        result.stdout
    )


def test_a_mirror_that_fails_is_named_beside_the_crl_that_answered(lab: Lab) -> None:
    good, gone = lab.paths("good", "gone")
    leaf = lab.leaf(lab.inter, gone, good)
    lab.publish(good, pki.make_crl(lab.inter))
    lab.serve(leaf, lab.inter)
    result = lab.plugin("-v")
    assert result.returncode == 0, result.stdout
    assert (
        f"revocation: not revoked (certificate (cannot fetch the CRL for certificate from "
        f"{lab.http.url(gone)}: HTTP 404" in result.stdout
    ), result.stdout


def test_an_intermediate_naming_no_distribution_point_is_unknown(lab: Lab) -> None:
    (path,) = lab.paths("leaf")
    leaf = lab.leaf(lab.silent, path)
    lab.publish(path, pki.make_crl(lab.silent))
    lab.serve(leaf, lab.silent)
    result = lab.plugin()
    assert result.returncode == 1, result.stdout
    assert (
        "revocation unknown: intermediate CN=Silent Intermediate,O=check_pg_tls tests names no "
        "CRL distribution point (http)" in result.status_line
    ), result.stdout
    # Asked to be quiet about it, the line still claims only what was checked.
    quiet = lab.plugin("--revocation-unknown-state", "ok", "-v")
    assert quiet.returncode == 0, quiet.stdout
    assert "not revoked (certificate" not in quiet.stdout, quiet.stdout
    assert "revocation: revocation unknown: intermediate CN=Silent Intermediate" in quiet.stdout


def test_a_revoked_leaf_under_a_silent_intermediate_is_still_revoked(lab: Lab) -> None:
    (path,) = lab.paths("leaf")
    leaf = lab.leaf(lab.silent, path)
    lab.publish(path, pki.make_crl(lab.silent, [(leaf, KEY_COMPROMISE)]))
    lab.serve(leaf, lab.silent)
    result = lab.plugin()
    assert result.returncode == 2, result.stdout
    assert "certificate revoked on " in result.status_line
