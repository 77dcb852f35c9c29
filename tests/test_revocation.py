"""CRLs as libpq uses them (sslcrl, sslcrldir), with psql as the oracle.

One PKI: a root, an intermediate and a revoked intermediate, each with a
leaf. Real PostgreSQL 15 servers serve the chains; for every CRL set-up,
psql with ``sslcrl``/``sslcrldir`` decides first, then the plugin must
agree and say why in an admin's words.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from testbed import pki
from testbed.pgcluster import Cluster, Workspace

from .conftest import Run, check_local, psql_connects, run_plugin


@dataclass
class Lab:
    root: pki.Issued
    inter: pki.Issued
    bad_inter: pki.Issued
    revoked_leaf_cert: pki.Issued
    good: Cluster
    revoked_leaf: Cluster
    revoked_inter: Cluster
    dir: Path
    root_file: Path

    def crls(self, name: str, *crls: x509.CertificateRevocationList) -> Path:
        return pki.write_crls(self.dir / f"{name}.crl", *crls)


@pytest.fixture(scope="module")
def lab(workspace: Workspace) -> Iterator[Lab]:
    root = pki.make_root("Revocation Root")
    inter = pki.make_intermediate(root, "Revocation Intermediate")
    bad_inter = pki.make_intermediate(root, "Revoked Intermediate")
    good = pki.make_leaf(inter)
    revoked = pki.make_leaf(inter)
    under_bad = pki.make_leaf(bad_inter)
    folder = workspace.new_dir("revocation")
    clusters = [
        workspace.cluster(chain, chain[0], name=name).start()
        for name, chain in (
            ("crl-good", [good, inter]),
            ("crl-revoked-leaf", [revoked, inter]),
            ("crl-revoked-inter", [under_bad, bad_inter]),
        )
    ]
    made = Lab(
        root,
        inter,
        bad_inter,
        revoked,
        *clusters,
        dir=folder,
        root_file=pki.write_pem(folder / "root.crt", root),
    )
    yield made
    for cluster in clusters:
        cluster.stop()


def fresh_crls(lab: Lab) -> list[x509.CertificateRevocationList]:
    """A current CRL from every CA: the root revokes one intermediate, the intermediate a leaf."""
    revoked_leaf = lab.revoked_leaf_cert
    return [
        pki.make_crl(lab.root, [(lab.bad_inter, x509.ReasonFlags.ca_compromise)]),
        pki.make_crl(lab.inter, [(revoked_leaf, x509.ReasonFlags.key_compromise)]),
        pki.make_crl(lab.bad_inter),
    ]


def plugin(lab: Lab, cluster: Cluster, *args: str) -> Run:
    return check_local(cluster.port, lab.root_file, *args, servername="db.test")


def agree(lab: Lab, home: Path, cluster: Cluster, keyword: str, path: Path) -> tuple[bool, Run]:
    libpq = psql_connects(
        cluster, home, "db.test", "verify-full", str(lab.root_file), (f"{keyword}={path}",)
    )
    result = plugin(lab, cluster, f"--{keyword}", str(path))
    assert result.returncode in (0, 2), result.stdout
    assert (result.returncode == 0) == libpq, (libpq, result.stdout)
    return libpq, result


def test_good_leaf_with_every_crl_connects(lab: Lab, psql_home: Path) -> None:
    libpq, result = agree(lab, psql_home, lab.good, "sslcrl", lab.crls("all", *fresh_crls(lab)))
    assert libpq
    assert "PG_TLS OK" in result.status_line
    assert "crl_days_left=" in result.status_line


def test_revoked_leaf_is_named_with_date_and_reason(lab: Lab, psql_home: Path) -> None:
    path = lab.crls("all-leaf", *fresh_crls(lab))
    libpq, result = agree(lab, psql_home, lab.revoked_leaf, "sslcrl", path)
    assert not libpq
    assert "certificate revoked on " in result.status_line
    assert "(key compromise) (by CN=Revocation Intermediate" in result.status_line


def test_revoked_intermediate_is_named(lab: Lab, psql_home: Path) -> None:
    path = lab.crls("all-inter", *fresh_crls(lab))
    libpq, result = agree(lab, psql_home, lab.revoked_inter, "sslcrl", path)
    assert not libpq
    assert "intermediate CN=Revoked Intermediate" in result.status_line
    assert "revoked on " in result.status_line
    assert "(ca compromise) (by CN=Revocation Root" in result.status_line


def test_missing_root_crl_fails_like_libpq(lab: Lab, psql_home: Path) -> None:
    # Only the intermediate's CRL: libpq also wants the root's (CRL_CHECK_ALL).
    path = lab.crls("inter-only", fresh_crls(lab)[1])
    libpq, result = agree(lab, psql_home, lab.good, "sslcrl", path)
    assert not libpq
    assert "no CRL of CN=Revocation Root" in result.status_line
    assert "needed to check intermediate CN=Revocation Intermediate" in result.status_line


def test_expired_crl_fails_like_libpq(lab: Lab, psql_home: Path) -> None:
    crls = fresh_crls(lab)
    stale = pki.make_crl(lab.inter, days_before=10, days_after=-1)
    path = lab.crls("stale", crls[0], stale)
    libpq, result = agree(lab, psql_home, lab.good, "sslcrl", path)
    assert not libpq
    assert "CRL of CN=Revocation Intermediate,O=check_pg_tls tests expired on " in (
        result.status_line
    )


@pytest.mark.parametrize("revoking", [False, True])
def test_a_crl_signed_with_sha1_is_judged_by_openssl(
    lab: Lab, psql_home: Path, revoking: bool
) -> None:
    # cryptography verifies no SHA-1 signature; OpenSSL (libpq's too) uses
    # such a CRL. Whether its signature holds is OpenSSL's to say.
    crls = fresh_crls(lab)
    listed = [(lab.revoked_leaf_cert, x509.ReasonFlags.key_compromise)] if revoking else []
    sha1 = pki.make_crl(lab.inter, listed, digest="sha1")
    path = lab.crls(f"sha1-{revoking}", crls[0], sha1)
    libpq, result = agree(lab, psql_home, lab.revoked_leaf, "sslcrl", path)
    assert libpq is not revoking
    assert ("certificate revoked on " in result.status_line) is revoking, result.status_line
    assert "is not signed by" not in result.stdout


def test_crl_directory_works_like_sslcrldir(lab: Lab, psql_home: Path) -> None:
    folder = lab.dir / "crldir"
    folder.mkdir()
    for number, crl in enumerate(fresh_crls(lab)):
        pki.write_crls(folder / f"ca{number}.pem", crl)
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)
    libpq, result = agree(lab, psql_home, lab.good, "sslcrldir", folder)
    assert libpq
    assert "PG_TLS OK" in result.status_line
    libpq, result = agree(lab, psql_home, lab.revoked_leaf, "sslcrldir", folder)
    assert not libpq
    assert "certificate revoked on " in result.status_line


def test_crl_about_to_expire_warns_before_clients_fail(lab: Lab) -> None:
    crls = fresh_crls(lab)
    soon = pki.make_crl(lab.inter, days_after=1.5)  # 35 whole hours left when checked
    result = plugin(lab, lab.good, "--sslcrl", str(lab.crls("soon", crls[0], soon)))
    assert result.returncode == 1, result.stdout
    assert "CRL of CN=Revocation Intermediate,O=check_pg_tls tests expires in 35 hours" in (
        result.status_line
    )
    assert float(result.perfdata["crl_days_left"].split(";")[0]) == pytest.approx(1.5, abs=0.02)


def test_audit_crl_with_a_forged_signature_is_critical(lab: Lab) -> None:
    forged = pki.make_crl(lab.inter, signer=pki.make_intermediate(lab.root, "Impostor"))
    path = lab.dir / "forged.der"
    from cryptography.hazmat.primitives.serialization import Encoding

    path.write_bytes(forged.public_bytes(Encoding.DER))
    result = plugin(lab, lab.good, "--audit-crl", str(path))
    assert result.returncode == 2, result.stdout
    assert (
        f"CRL of CN=Revocation Intermediate,O=check_pg_tls tests ({path}) is not signed by "
        "CN=Revocation Intermediate" in result.status_line
    )


def test_crls_with_the_system_store_are_ignored_as_libpq_does(lab: Lab) -> None:
    result = run_plugin(
        "-H",
        "127.0.0.1",
        "-p",
        str(lab.good.port),
        "--sslmode",
        "require",
        "--sslcrl",
        str(lab.crls("ignored", *fresh_crls(lab))),
    )
    assert result.returncode == 1, result.stdout
    assert "libpq ignores sslcrl and sslcrldir without a root certificate file" in (
        result.status_line
    )


def test_unloadable_crl_file_is_unknown(lab: Lab) -> None:
    path = lab.dir / "garbage.crl"
    path.write_text("not a CRL\n")
    result = plugin(lab, lab.good, "--sslcrl", str(path))
    assert result.returncode == 3, result.stdout
    assert "OpenSSL cannot load CRL file" in result.status_line


def test_missing_intermediate_crl_fails_like_libpq(lab: Lab, psql_home: Path) -> None:
    # Only the root's CRL: nothing says whether the leaf is revoked.
    path = lab.crls("root-only", fresh_crls(lab)[0])
    libpq, result = agree(lab, psql_home, lab.good, "sslcrl", path)
    assert not libpq
    assert "no CRL of CN=Revocation Intermediate,O=check_pg_tls tests is loaded, needed to " in (
        result.status_line
    )
    assert "check certificate" in result.status_line


# --- the audit judges the CRLs OpenSSL uses ---------------------------------


def _other_ca_crl() -> x509.CertificateRevocationList:
    other = pki.make_root("Some Other CA")
    return pki.make_crl(other, days_before=20, days_after=-10)


# Each case: the CRLs given besides the current ones (built from the lab),
# and the note -v prints about the one OpenSSL does not use; psql decides.
SUPERSEDED = {
    "stale-older-one": (
        lambda lab: [pki.make_crl(lab.inter, days_before=20, days_after=-10)],
        "is not used: OpenSSL uses the one issued ",
    ),
    "older-one-without-next-update": (
        lambda lab: [pki.make_crl(lab.inter, days_before=3, next_update=False)],
        "is not used: OpenSSL uses the one issued ",
    ),
    "newer-one-already-stale": (
        lambda lab: [pki.make_crl(lab.inter, days_before=0.5, days_after=-0.1)],
        "is not used: OpenSSL uses the one issued ",
    ),
    "another-cas-stale-one": (
        lambda lab: [_other_ca_crl()],
        "concerns no certificate of this server's chain",
    ),
    "a-delta-crl": (
        lambda lab: [
            pki.make_crl(lab.inter, number=2, extensions=[(x509.DeltaCRLIndicator(1), True)])
        ],
        "is a delta CRL: libpq asks OpenSSL to use none (OpenSSL 3.0 still takes one alone "
        "for a complete CRL; the chain's verification says which)",
    ),
}


@pytest.mark.parametrize("case", SUPERSEDED)
def test_crl_openssl_does_not_use_is_information(lab: Lab, psql_home: Path, case: str) -> None:
    extra, note = SUPERSEDED[case]
    crls = fresh_crls(lab)
    # The current CRL of the intermediate is a little older than the others
    # (days_before=1): "newer" cases are issued after it.
    path = lab.crls(f"beside-{case}", *extra(lab), *crls)
    libpq, result = agree(lab, psql_home, lab.good, "sslcrl", path)
    assert libpq
    assert result.status_line.startswith("PG_TLS OK"), result.stdout
    verbose = plugin(lab, lab.good, "--sslcrl", str(path), "-v")
    assert f"({path}) {note}" in verbose.stdout
    # In use: the root's CRL and the intermediate's current one; not in use:
    # the extra one and the revoked intermediate's, which this chain does not use.
    assert "crl: 2 CRLs in use and current; 2 not in use" in verbose.stdout
    (target,) = json.loads(plugin(lab, lab.good, "--sslcrl", str(path), "--json").stdout)["targets"]
    unused = [c for c in target["crls"] if not c["in_use"]]
    assert len(unused) == 2 and all(c["problem"] is None for c in unused)
    assert any(note in c["note"] for c in unused)


def test_crl_without_next_update_in_use_is_information(lab: Lab, psql_home: Path) -> None:
    crls = fresh_crls(lab)
    crls[1] = pki.make_crl(lab.inter, next_update=False)
    path = lab.crls("no-next-update", *crls)
    libpq, result = agree(lab, psql_home, lab.good, "sslcrl", path)
    assert libpq
    assert result.status_line.startswith("PG_TLS OK"), result.stdout
    verbose = plugin(lab, lab.good, "--sslcrl", str(path), "-v")
    assert f"({path}) has no nextUpdate: OpenSSL takes it as current" in verbose.stdout


def test_superseded_crl_about_to_expire_does_not_warn(lab: Lab, psql_home: Path) -> None:
    crls = fresh_crls(lab)
    soon = pki.make_crl(lab.inter, days_before=5, days_after=1.5)
    path = lab.crls("superseded-soon", soon, *crls)
    libpq, result = agree(lab, psql_home, lab.good, "sslcrl", path)
    assert libpq
    assert result.returncode == 0, result.stdout
    # The soonest CRL in use: the current ones, a week each.
    assert float(result.perfdata["crl_days_left"].split(";")[0]) > 6


def test_superseded_crls_in_a_rehashed_directory_are_information(lab: Lab, psql_home: Path) -> None:
    folder = lab.dir / "crldir-superseded"
    folder.mkdir()
    old = pki.make_crl(lab.inter, days_before=20, days_after=-10)
    for number, crl in enumerate([old, *fresh_crls(lab)]):
        pki.write_crls(folder / f"ca{number}.pem", crl)
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)
    entries = sorted(p.name for p in folder.iterdir() if ".r" in p.name)
    assert any(name.endswith(".r1") for name in entries), entries
    libpq, result = agree(lab, psql_home, lab.good, "sslcrldir", folder)
    assert libpq
    assert result.status_line.startswith("PG_TLS OK"), result.stdout
    verbose = plugin(lab, lab.good, "--sslcrldir", str(folder), "-v")
    assert ".r0) is not used: OpenSSL uses the one issued " in verbose.stdout or (
        ".r1) is not used: OpenSSL uses the one issued " in verbose.stdout
    )


def test_audit_judges_the_newest_crl_of_each_issuer(lab: Lab) -> None:
    old = pki.make_crl(lab.inter, days_before=20, days_after=-10)
    path = lab.crls("audit-superseded", old, pki.make_crl(lab.inter))
    result = plugin(lab, lab.good, "--audit-crl", str(path))
    assert result.returncode == 0, result.stdout
    stale = lab.crls("audit-stale", old)
    result = plugin(lab, lab.good, "--audit-crl", str(stale))
    assert result.returncode == 2, result.stdout
    assert f"CRL of CN=Revocation Intermediate,O=check_pg_tls tests ({stale}) expired on " in (
        result.status_line
    )
