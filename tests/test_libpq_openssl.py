"""libpq's own OpenSSL has the last word, with psql 15 and 18 as the oracle.

The handshake runs on the OpenSSL inside cryptography's wheel; psql on the
system's OpenSSL 3.0. Wherever the wheel's accepts a chain that libpq's
refuses (a signature algorithm OpenSSL 3.0 cannot verify, a CRL in the root
certificate file, the exact set of files a hashed CRL directory yields), the
check asks the system's libcrypto, with a store built as libpq builds its
own, and libpq's refusal is the verdict. And the CRL audit reads the same
files OpenSSL reads, and judges only the CRLs OpenSSL would use.

Each case is served by one real PostgreSQL 15 server, then psql 15 and
psql 18 (both linked against the system's OpenSSL) decide, and the plugin
must agree: OK where they connect, CRITICAL where they fail, in words that
say which OpenSSL refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.hazmat.primitives.serialization import Encoding

from testbed import crafted, pki
from testbed.pg18 import pg18_bindir
from testbed.pgcluster import Cluster, Workspace, weak_openssl_conf

from .conftest import PsqlAttempt, Run, run_plugin

PSQL15 = shutil.which("psql") or "psql"


def psql(binary: str, conninfo: str, home: Path, env: dict[str, str] | None = None) -> PsqlAttempt:
    done = subprocess.run(
        [binary, "-X", "-At", "-c", "select 1", conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    connected = done.returncode == 0 and done.stdout.strip() == "1"
    return PsqlAttempt(connected, "" if connected else done.stderr.strip())


@dataclass(frozen=True)
class Answers:
    psql15: PsqlAttempt
    psql18: PsqlAttempt
    plugin: Run

    def __str__(self) -> str:
        said = [
            f"psql {v}: {a.error or 'connected'}"
            for v, a in (("15", self.psql15), ("18", self.psql18))
        ]
        return "\n".join([*said, f"plugin: {self.plugin.stdout}{self.plugin.stderr}"])


def ask(
    cluster: Cluster,
    home: Path,
    root: str,
    *extra: str,
    env: dict[str, str] | None = None,
    plugin_args: tuple[str, ...] = (),
    psql15: bool = True,
) -> Answers:
    """psql 15, psql 18 and the plugin, at once, with the same libpq keywords."""
    keywords = " ".join(extra)
    conninfo = (
        f"host=db.test hostaddr=127.0.0.1 port={cluster.port} sslmode=verify-full "
        f"sslrootcert={root} user=postgres dbname=postgres connect_timeout=10 {keywords}"
    )
    with ThreadPoolExecutor(3) as pool:
        older = pool.submit(psql, PSQL15, conninfo, home, env) if psql15 else None
        newer = pool.submit(psql, str(pg18_bindir() / "psql"), conninfo, home, env)
        plugin = pool.submit(run_plugin, conninfo, *plugin_args, env=env)
        skipped = PsqlAttempt(False, "not asked (sslrootcert=system needs libpq 16)")
        return Answers(older.result() if older else skipped, newer.result(), plugin.result())


# ------------------------------------------------------ signature algorithms


@dataclass(frozen=True)
class Chain:
    """A chain to serve (leaf first, without the root) and its root."""

    root: crafted.Cert
    served: tuple[crafted.Cert, ...]

    @property
    def leaf(self) -> crafted.Cert:
        return self.served[0]


def _ca(name: str, issuer: crafted.Cert | None = None, **kw: object) -> crafted.Cert:
    return crafted.issue(name, issuer, extensions=crafted.CA_EXTENSIONS, **kw)  # type: ignore[arg-type]


def _leaf(issuer: crafted.Cert, sig: crafted.Sig | None = None) -> crafted.Cert:
    extensions = crafted.leaf_extensions("db.test")
    return crafted.issue("db.test", issuer, extensions=extensions, sig=sig or crafted.Sig())


def _signed_intermediate(label: str, root: crafted.Cert, sig: crafted.Sig) -> Chain:
    inter = _ca(f"{label} Intermediate", root, sig=sig)
    return Chain(root, (_leaf(inter), inter))


SIGNATURES: dict[str, Callable[[], Chain]] = {
    # OpenSSL 3.0 knows no ECDSA with SHA-3 and no ML-DSA; the newer one does.
    "ecdsa-sha3-256-signs-the-intermediate": lambda: _signed_intermediate(
        "SHA3", _ca("SHA3 Root"), crafted.Sig("sha3-256")
    ),
    "mldsa44-signs-the-intermediate": lambda: _signed_intermediate(
        "ML-DSA-44", _ca("ML-DSA-44 Root", key=mldsa.MLDSA44PrivateKey.generate()), crafted.Sig()
    ),
    "mldsa65-signs-the-intermediate": lambda: _signed_intermediate(
        "ML-DSA-65", _ca("ML-DSA-65 Root", key=mldsa.MLDSA65PrivateKey.generate()), crafted.Sig()
    ),
    # Both know RSA with SHA-3: no difference, no refusal.
    "rsa-sha3-256-signs-the-intermediate": lambda: _signed_intermediate(
        "RSA SHA3", _ca("RSA SHA3 Root", key=crafted.rsa_key(2048, 3)), crafted.Sig("sha3-256")
    ),
    "ecdsa-sha256-control": lambda: _signed_intermediate(
        "Control", _ca("Control Root"), crafted.Sig()
    ),
}
SIGNATURES["ecdsa-sha3-384-signs-the-leaf"] = lambda: (
    lambda root: Chain(root, (_leaf(root, crafted.Sig("sha3-384")),))
)(_ca("SHA3 Leaf Root"))

#: Whether libpq (OpenSSL 3.0) verifies the chain.
CONNECTS = {
    "ecdsa-sha3-256-signs-the-intermediate": False,
    "mldsa44-signs-the-intermediate": False,
    "mldsa65-signs-the-intermediate": False,
    "rsa-sha3-256-signs-the-intermediate": True,
    "ecdsa-sha256-control": True,
    "ecdsa-sha3-384-signs-the-leaf": False,
}


class Served:
    """One PostgreSQL 15 server, serving one chain after another."""

    def __init__(self, workspace: Workspace) -> None:
        self.dir = workspace.new_dir("libpq-openssl")
        first = SIGNATURES["ecdsa-sha256-control"]()
        self.cluster = workspace.cluster([], pki.make_leaf(None), name="libpq-openssl")
        self._install(first)
        # The server's own OpenSSL 3.0 must load chains it cannot judge.
        self.cluster.start(env=weak_openssl_conf(workspace))
        self.current = first

    def _install(self, chain: Chain) -> None:
        self.cluster.install_pem(b"".join(cert.pem for cert in chain.served), chain.leaf.key_pem)

    def serve(self, chain: Chain, name: str) -> Path:
        """Serve ``chain``; its root certificate file."""
        self._install(chain)
        self.cluster.reload()
        self.cluster.wait_served(lambda seen: seen == chain.leaf.der)
        self.current = chain
        root = self.dir / f"{name}.crt"
        root.write_bytes(chain.root.pem)
        return root


@pytest.fixture(scope="module")
def served(workspace: Workspace) -> Iterator[Served]:
    made = Served(workspace)
    yield made
    made.cluster.stop()


@pytest.mark.parametrize("case", SIGNATURES)
def test_signature_algorithms_libpq_cannot_verify(
    served: Served, psql_home: Path, case: str
) -> None:
    chain = SIGNATURES[case]()
    root = served.serve(chain, case)
    seen = ask(served.cluster, psql_home, str(root))
    assert seen.psql15.connected == CONNECTS[case], seen
    assert seen.psql18.connected == CONNECTS[case], seen
    if CONNECTS[case]:
        assert seen.plugin.returncode == 0, seen
        assert "chain trusted" in seen.plugin.status_line, seen
        return
    assert seen.plugin.returncode == 2, seen
    line = seen.plugin.status_line
    # The trust finding, first, says which OpenSSL refused and which did not.
    assert ": libpq's OpenSSL 3." in line, seen
    assert "; the check's OpenSSL " in line, seen
    who = "certificate" if len(chain.served) == 1 else "intermediate CN="
    assert f"finds no issuer it can use for {who}" in line, seen
    assert "chain trusted" not in line, seen


def test_a_leaf_libpq_cannot_verify_is_more_than_a_channel_binding_problem(
    served: Served, psql_home: Path
) -> None:
    # libpq fails this handshake whatever channel_binding says: the trust
    # verdict comes first, the channel binding finding (libpq could not hash
    # the certificate either) after it.
    chain = SIGNATURES["ecdsa-sha3-384-signs-the-leaf"]()
    root = served.serve(chain, "sha3-leaf-json")
    seen = ask(served.cluster, psql_home, str(root), "channel_binding=disable")
    assert not seen.psql15.connected, seen
    assert not seen.psql18.connected, seen
    document = run_plugin(
        "-H", "127.0.0.1", "-p", str(served.cluster.port), "--servername", "db.test",
        "--sslrootcert", str(root), "--json",
    )  # fmt: skip
    (target,) = json.loads(document.stdout)["targets"]
    checks = target["checks"]
    assert checks["trust"]["severity"] == "critical", checks
    assert "libpq's OpenSSL 3." in checks["trust"]["message"], checks
    assert target["problems"][0] == checks["trust"]["message"], target["problems"]
    assert checks["channel_binding"]["ok"] is False, checks
    assert target["state"] == "CRITICAL"


@pytest.fixture(scope="module")
def system_roots(workspace: Workspace) -> Path:
    """A stand-in for the system's trust store: Debian's roots and the test roots."""
    return workspace.new_dir("system-roots")


@pytest.mark.parametrize("case", ["ecdsa-sha3-256-signs-the-intermediate", "ecdsa-sha256-control"])
def test_system_roots_get_the_second_opinion_too(
    served: Served, psql_home: Path, system_roots: Path, case: str
) -> None:
    # sslrootcert=system: SSL_CERT_FILE names the default file for both
    # OpenSSLs; it holds the distribution's roots and this chain's root, so
    # the certificate a verification needs is one of many.
    chain = SIGNATURES[case]()
    served.serve(chain, case + "-system")
    bundle = system_roots / f"{case}.pem"
    public = Path("/etc/ssl/certs/ca-certificates.crt")
    bundle.write_bytes((public.read_bytes() if public.exists() else b"") + chain.root.pem)
    env = {"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(system_roots / "none")}
    # psql 15 does not know sslrootcert=system: psql 18 alone decides.
    seen = ask(served.cluster, psql_home, "system", env=env, psql15=False)
    assert seen.psql18.connected == CONNECTS[case], seen
    if CONNECTS[case]:
        assert seen.plugin.returncode == 0, seen
        return
    assert seen.plugin.returncode == 2, seen
    assert "finds no issuer it can use for intermediate CN=SHA3 Intermediate" in (
        seen.plugin.status_line
    ), seen


# ----------------------------------------------------------------- CRLs


@dataclass
class CrlLab:
    root: pki.Issued
    inter: pki.Issued
    #: The intermediate's previous key: same name, its own key identifier.
    retired: pki.Issued
    leaf: pki.Issued
    cluster: Cluster
    dir: Path

    def pem(self, name: str, *crls: x509.CertificateRevocationList) -> Path:
        return pki.write_crls(self.dir / f"{name}.pem", *crls)

    def root_file(self, name: str, *crls: x509.CertificateRevocationList) -> Path:
        path = self.dir / f"{name}.crt"
        path.write_bytes(self.root.cert_pem + b"".join(c.public_bytes(Encoding.PEM) for c in crls))
        return path

    def hashed(self, name: str, files: dict[str, x509.CertificateRevocationList]) -> Path:
        """A CRL directory whose files are named by ``files`` (``{root}``, ``{inter}``: hashes)."""
        folder = self.dir / name
        folder.mkdir()
        for pattern, crl in files.items():
            target = pattern.format(root=_hash(self.root), inter=_hash(self.inter))
            (folder / target).write_bytes(crl.public_bytes(Encoding.PEM))
        return folder


def _hash(issued: pki.Issued) -> str:
    done = subprocess.run(
        ["openssl", "x509", "-noout", "-subject_hash"],
        input=issued.cert_pem,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


@pytest.fixture(scope="module")
def crl_lab(workspace: Workspace) -> Iterator[CrlLab]:
    root = pki.make_root("Store Root")
    retired = pki.make_intermediate(root, "Store Intermediate")
    inter = pki.make_intermediate(root, "Store Intermediate")
    leaf = pki.make_leaf(inter, dns=("db.test",))
    cluster = workspace.cluster([leaf, inter], leaf, name="libpq-store").start()
    yield CrlLab(root, inter, retired, leaf, cluster, workspace.new_dir("libpq-store"))
    cluster.stop()


def _without_akid(
    issuer: pki.Issued, signer: pki.Issued, days_before: float
) -> x509.CertificateRevocationList:
    now = pki._now()
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now - pki.DAY * days_before)
        .next_update(now + pki.DAY * 7)
        .add_extension(x509.CRLNumber(9), critical=False)
        .sign(signer.key, hashes.SHA256())
    )


@dataclass(frozen=True)
class CrlCase:
    #: The root certificate file, and the keywords after it.
    files: Callable[[CrlLab, str], tuple[Path, tuple[str, ...]]]
    connects: bool
    #: Words the plugin's status line (or, when it is OK, -v) must hold.
    words: str = ""


def _crl_file(
    *make: Callable[[CrlLab], x509.CertificateRevocationList],
) -> Callable[[CrlLab, str], tuple[Path, tuple[str, ...]]]:
    def files(lab: CrlLab, name: str) -> tuple[Path, tuple[str, ...]]:
        path = lab.pem(name, *(m(lab) for m in make))
        return lab.root_file(name), (f"sslcrl={path}",)

    return files


def _root_crl(lab: CrlLab) -> x509.CertificateRevocationList:
    return pki.make_crl(lab.root)


def _inter_crl(lab: CrlLab) -> x509.CertificateRevocationList:
    return pki.make_crl(lab.inter, days_before=2)


def _in_root_file(lab: CrlLab, name: str) -> tuple[Path, tuple[str, ...]]:
    # The root's CRL only in the root file; the intermediate's in sslcrl.
    return lab.root_file(name, _root_crl(lab)), (f"sslcrl={lab.pem(name, _inter_crl(lab))}",)


def _root_revoked_in_root_file(lab: CrlLab, name: str) -> tuple[Path, tuple[str, ...]]:
    # The root's newest CRL, in the root file, lists the root itself;
    # sslcrl holds an older one that does not.
    newest = pki.make_crl(lab.root, [(lab.root, None)], number=2, days_before=1)
    older = pki.make_crl(lab.root, number=1, days_before=3)
    return lab.root_file(name, newest), (f"sslcrl={lab.pem(name, older, _inter_crl(lab))}",)


def _directory(
    files: dict[str, Callable[[CrlLab], x509.CertificateRevocationList]],
) -> Callable[[CrlLab, str], tuple[Path, tuple[str, ...]]]:
    def made(lab: CrlLab, name: str) -> tuple[Path, tuple[str, ...]]:
        folder = lab.hashed(name, {pattern: make(lab) for pattern, make in files.items()})
        return lab.root_file(name), (f"sslcrldir={folder}",)

    return made


def _revoking(lab: CrlLab) -> x509.CertificateRevocationList:
    return pki.make_crl(lab.inter, [(lab.leaf, x509.ReasonFlags.key_compromise)], number=5)


CRL_CASES = {
    "root-crl-only-in-the-root-file": CrlCase(_in_root_file, True),
    "root-revoked-by-its-newest-crl-in-the-root-file": CrlCase(
        _root_revoked_in_root_file, False, "trusted root CN=Store Root,O=check_pg_tls tests revoked"
    ),
    # OpenSSL's by-hash lookup reads HASH.r0, HASH.r1, ... until one is missing.
    "hashed-r0-clean-r2-revoking-no-r1": CrlCase(
        _directory({"{root}.r0": _root_crl, "{inter}.r0": _inter_crl, "{inter}.r2": _revoking}),
        True,
        "is never read by OpenSSL: OpenSSL stops at the missing",
    ),
    "hashed-r0-clean-r1-revoking": CrlCase(
        _directory({"{root}.r0": _root_crl, "{inter}.r0": _inter_crl, "{inter}.r1": _revoking}),
        False,
        "certificate revoked on ",
    ),
    "hashed-revoking-crl-under-a-name-of-no-issuer": CrlCase(
        _directory({"{root}.r0": _root_crl, "{inter}.r0": _inter_crl, "deadbeef.r0": _revoking}),
        True,
    ),
    # A key rollover: the retired key's CRL (its own key identifier, well
    # signed, newer) beside the current key's. OpenSSL never selects it.
    "crl-of-the-retired-key-beside-the-current-one": CrlCase(
        _crl_file(_root_crl, _inter_crl, lambda lab: pki.make_crl(lab.retired, days_before=0.5)),
        True,
        "is not used: it is signed by another key of CN=Store Intermediate",
    ),
    # The current key's identifier, another key's signature: a forgery that
    # OpenSSL selects when it is the newest, and refuses.
    "newest-crl-forged-with-the-current-key-identifier": CrlCase(
        _crl_file(
            _root_crl,
            _inter_crl,
            lambda lab: pki.make_crl(lab.inter, signer=lab.retired, days_before=0.5),
        ),
        False,
        "is not signed by CN=Store Intermediate",
    ),
    "older-crl-forged-with-the-current-key-identifier": CrlCase(
        _crl_file(
            _root_crl,
            _inter_crl,
            lambda lab: pki.make_crl(lab.inter, signer=lab.retired, days_before=4),
        ),
        True,
        "is not used: OpenSSL uses the one issued",
    ),
    # Without a key identifier, OpenSSL takes a CRL for any key of its issuer.
    "newest-crl-of-the-retired-key-without-key-identifier": CrlCase(
        _crl_file(_root_crl, _inter_crl, lambda lab: _without_akid(lab.inter, lab.retired, 0.5)),
        False,
        "is not signed by CN=Store Intermediate",
    ),
    "older-crl-of-the-retired-key-without-key-identifier": CrlCase(
        _crl_file(_root_crl, _inter_crl, lambda lab: _without_akid(lab.inter, lab.retired, 4)),
        True,
        "is not used: OpenSSL uses the one issued",
    ),
}


@pytest.mark.parametrize("case", CRL_CASES)
def test_crls_as_libpq_loads_them(crl_lab: CrlLab, psql_home: Path, case: str) -> None:
    known = CRL_CASES[case]
    root, keywords = known.files(crl_lab, case)
    seen = ask(crl_lab.cluster, psql_home, str(root), *keywords, plugin_args=("-v",))
    assert seen.psql15.connected == known.connects, seen
    assert seen.psql18.connected == known.connects, seen
    if known.connects:
        assert seen.plugin.returncode == 0, seen
        assert "chain trusted" in seen.plugin.status_line, seen
        assert known.words in seen.plugin.stdout, seen
    else:
        assert seen.plugin.returncode == 2, seen
        assert known.words in seen.plugin.status_line, seen


def test_the_audit_lists_what_the_hashed_directory_holds_and_openssl_never_reads(
    crl_lab: CrlLab, psql_home: Path
) -> None:
    root, keywords = CRL_CASES["hashed-r0-clean-r2-revoking-no-r1"].files(crl_lab, "json-gap")
    folder = keywords[0].partition("=")[2]
    document = run_plugin(
        "-H", "127.0.0.1", "-p", str(crl_lab.cluster.port), "--servername", "db.test",
        "--sslrootcert", str(root), "--sslcrldir", folder, "--json",
    )  # fmt: skip
    (target,) = json.loads(document.stdout)["targets"]
    by_file = {Path(crl["source"]).name: crl for crl in target["crls"]}
    gap = by_file[f"{_hash(crl_lab.inter)}.r2"]
    assert gap["in_use"] is False, by_file
    assert gap["problem"] is None, by_file
    assert f"OpenSSL stops at the missing {_hash(crl_lab.inter)}.r1" in gap["note"], by_file
    assert by_file[f"{_hash(crl_lab.inter)}.r0"]["in_use"] is True, by_file
    assert target["state"] == "OK"


def test_root_file_crls_are_judged_for_freshness(crl_lab: CrlLab) -> None:
    # The root file's CRL is one libpq uses: its nextUpdate counts.
    soon = pki.make_crl(crl_lab.root, days_after=0.5)
    root = crl_lab.root_file("fresh-root", soon)
    sslcrl = crl_lab.pem("fresh-root", _inter_crl(crl_lab))
    result = run_plugin(
        "-H", "127.0.0.1", "-p", str(crl_lab.cluster.port), "--servername", "db.test",
        "--sslrootcert", str(root), "--sslcrl", str(sslcrl),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert "CRL of CN=Store Root,O=check_pg_tls tests expires in " in result.status_line
    assert result.perfdata["crl_days_left"].startswith("0.4"), result.perfdata
