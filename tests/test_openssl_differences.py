"""Where the verdict's OpenSSL and libpq's disagree on CRLs: each known case, side by side.

The handshake runs on the OpenSSL inside cryptography's wheel; psql uses the
libpq of the system, linked against the system's OpenSSL 3.0. They agree on
every crafted chain (tests/test_crafted_matrix.py) and on ordinary CRLs
(tests/test_revocation.py), but not on the cases below. Each test states
both answers, psql's and the plugin's, so that it fails when a difference
disappears or changes (a new OpenSSL on either side): then the README's
list ("What the verdict means") must change with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from testbed import crafted, pki
from testbed.crl_server import CrlServer, Route
from testbed.pgcluster import Cluster, Workspace

from .conftest import PsqlAttempt, check_local, psql_attempt


@dataclass
class Lab:
    root: pki.Issued
    inter: pki.Issued
    leaf: pki.Issued
    chain: Cluster
    #: A self-signed server certificate, trusted as its own root.
    snakeoil: pki.Issued
    self_signed: Cluster
    http: CrlServer
    dir: Path

    def pem(self, name: str, *crls: x509.CertificateRevocationList | bytes) -> Path:
        """An sslcrl file; bytes are PEM blocks cryptography cannot make."""
        path = self.dir / f"{name}.crl"
        path.write_bytes(
            b"".join(c if isinstance(c, bytes) else c.public_bytes(Encoding.PEM) for c in crls)
        )
        return path


@pytest.fixture(scope="module")
def lab(workspace: Workspace) -> Iterator[Lab]:
    with CrlServer() as http:
        root = pki.make_root("Difference Root")
        inter = pki.make_intermediate(root, "Difference Intermediate", crl_url=http.url("/r.crl"))
        http.routes["/r.crl"] = Route(pki.make_crl(root).public_bytes(Encoding.DER))
        leaf = pki.make_leaf(inter, crl_url=http.url("/leaf.crl"))
        snakeoil = pki.make_leaf(None, common_name="db.test")
        chain = workspace.cluster([leaf, inter], leaf, name="difference").start()
        self_signed = workspace.cluster([snakeoil], snakeoil, name="difference-ss").start()
        folder = workspace.new_dir("differences")
        pki.write_pem(folder / "root.crt", root)
        pki.write_pem(folder / "snakeoil.crt", snakeoil)
        yield Lab(root, inter, leaf, chain, snakeoil, self_signed, http, folder)
        chain.stop()
        self_signed.stop()


def _delta(issuer: pki.Issued, *revoked: pki.Issued, **kw: float) -> x509.CertificateRevocationList:
    return pki.make_crl(
        issuer,
        [(r, x509.ReasonFlags.key_compromise) for r in revoked],
        number=2,
        extensions=[(x509.DeltaCRLIndicator(1), True)],
        **kw,  # type: ignore[arg-type]
    )


def _edited(
    crl: x509.CertificateRevocationList, key: pki.PrivateKey, edit: Callable[[list[bytes]], None]
) -> bytes:
    """The CRL with its TBSCertList edited and signed again, as a PEM block."""
    _, content, _ = crafted.read(crl.tbs_certlist_bytes)
    fields = crafted.elements(content)
    edit(fields)
    return crafted.pem(crafted.sign_tbs(crafted.seq(*fields), key), label="X509 CRL")


def _duplicate_extension(fields: list[bytes]) -> None:
    # crlExtensions [0] EXPLICIT SEQUENCE OF Extension: the first one twice.
    _, inner, _ = crafted.read(fields[-1])
    _, listed, _ = crafted.read(inner)
    extensions = crafted.elements(listed)
    fields[-1] = crafted.tlv(0xA0, crafted.seq(*extensions, extensions[0]))


def _short_last_update(fields: list[bytes]) -> None:
    # thisUpdate as a UTCTime without seconds (YYMMDDHHMMZ), which DER forbids.
    _, value, _ = crafted.read(fields[3])
    fields[3] = crafted.tlv(0x17, value[:10] + b"Z")


@dataclass(frozen=True)
class Difference:
    #: The sslcrl file's CRLs.
    crls: Callable[[Lab], list[x509.CertificateRevocationList | bytes]]
    #: Whether psql (libpq on the system's OpenSSL 3.0) connects.
    psql: bool
    #: The plugin's exit code and words (on the OpenSSL of cryptography's wheel).
    code: int
    words: str
    self_signed: bool = False


DIFFERENCES = {
    # OpenSSL 3.0 takes a delta CRL for a complete one when it is the only
    # (or the newest) CRL of its issuer; the newer OpenSSL never uses a delta
    # CRL unless asked to, and libpq does not ask. libpq's OpenSSL decides:
    # psql connects, so the chain is trusted, with a warning that clients on
    # the newer OpenSSL refuse it (and why).
    "delta-crl-alone": Difference(
        lambda lab: [pki.make_crl(lab.root), _delta(lab.inter)],
        psql=True,
        code=1,
        words="refuses it: no CRL of CN=Difference Intermediate,O=check_pg_tls tests is "
        "loaded, needed to check certificate (the one loaded is a delta CRL, which OpenSSL "
        "does not use)",
    ),
    # Both refuse a delta CRL alone that revokes the certificate, for
    # different reasons: libpq's (revoked) is what its clients meet.
    "delta-crl-alone-revoking": Difference(
        lambda lab: [pki.make_crl(lab.root), _delta(lab.inter, lab.leaf)],
        psql=False,
        code=2,
        words="certificate revoked on ",
    ),
    "delta-crl-newer-than-its-base": Difference(
        lambda lab: [
            pki.make_crl(lab.root),
            pki.make_crl(lab.inter, [(lab.leaf, x509.ReasonFlags.key_compromise)], days_before=3),
            _delta(lab.inter, days_before=1),
        ],
        psql=True,
        code=1,
        words="refuses it: certificate revoked on ",
    ),
    # OpenSSL 3.0 checks a self-signed certificate against a CRL too (with
    # libpq's CRL_CHECK_ALL); the newer OpenSSL skips self-signed ones. The
    # check asks the system's OpenSSL, libpq's, about every path its own
    # accepted with CRLs, and reports libpq's refusal.
    "self-signed-server-certificate": Difference(
        lambda lab: [pki.make_crl(lab.root)],
        psql=False,
        code=2,
        words="(libpq's OpenSSL 3.",
        self_signed=True,
    ),
    # A server certificate is no CRL issuer (its key usage lacks cRLSign).
    "self-signed-server-certificate-with-its-own-crl": Difference(
        lambda lab: [pki.make_crl(lab.root), pki.make_crl(lab.snakeoil)],
        psql=False,
        code=2,
        words="key usage does not include CRL signing (libpq's OpenSSL 3.",
        self_signed=True,
    ),
    "root-revoked-by-its-own-crl": Difference(
        lambda lab: [
            pki.make_crl(lab.root, [(lab.root, x509.ReasonFlags.ca_compromise)]),
            pki.make_crl(lab.inter),
        ],
        psql=False,
        code=2,
        words="(libpq's OpenSSL 3.",
    ),
    "root-listed-in-its-own-crl-to-remove-a-hold": Difference(
        lambda lab: [
            pki.make_crl(lab.root, [(lab.root, x509.ReasonFlags.remove_from_crl)]),
            pki.make_crl(lab.inter),
        ],
        psql=True,
        code=0,
        words="PG_TLS OK",
    ),
    # CRLs the newer OpenSSL refuses to read at all, so the whole file cannot
    # be loaded (UNKNOWN: libpq would silently check no revocation at all);
    # OpenSSL 3.0 reads them.
    "duplicate-extension": Difference(
        lambda lab: [
            pki.make_crl(lab.root),
            _edited(pki.make_crl(lab.inter), lab.inter.key, _duplicate_extension),
        ],
        psql=True,
        code=3,
        words="OpenSSL cannot load CRL file",
    ),
    "utctime-without-seconds": Difference(
        lambda lab: [
            pki.make_crl(lab.root),
            _edited(pki.make_crl(lab.inter), lab.inter.key, _short_last_update),
        ],
        psql=False,
        code=3,
        words="OpenSSL cannot load CRL file",
    ),
}


@pytest.mark.parametrize("case", DIFFERENCES)
def test_known_difference_on_the_sslcrl_path(lab: Lab, psql_home: Path, case: str) -> None:
    known = DIFFERENCES[case]
    path = lab.pem(case, *known.crls(lab))
    cluster = lab.self_signed if known.self_signed else lab.chain
    root_file = lab.dir / ("snakeoil.crt" if known.self_signed else "root.crt")
    libpq = psql_attempt(
        cluster, psql_home, "db.test", "verify-full", str(root_file), (f"sslcrl={path}",)
    )
    result = check_local(cluster.port, root_file, "--sslcrl", str(path), servername="db.test")
    side_by_side = f"psql: {_said(libpq)}\nplugin: {result.stdout}"
    assert libpq.connected == known.psql, side_by_side
    assert result.returncode == known.code, side_by_side
    assert known.words in result.status_line, side_by_side


def test_known_difference_on_a_fetched_delta_crl(lab: Lab, psql_home: Path) -> None:
    delta = _delta(lab.inter)
    lab.http.routes["/leaf.crl"] = Route(delta.public_bytes(Encoding.DER))
    fetched = lab.pem(
        "fetched-delta", delta, x509.load_der_x509_crl(lab.http.routes["/r.crl"].body)
    )
    root_file = lab.dir / "root.crt"
    libpq = psql_attempt(
        lab.chain, psql_home, "db.test", "verify-full", str(root_file), (f"sslcrl={fetched}",)
    )
    result = check_local(lab.chain.port, root_file, "--check-revocation", servername="db.test")
    side_by_side = f"psql: {_said(libpq)}\nplugin: {result.stdout}"
    assert libpq.connected, side_by_side
    assert result.returncode == 1, side_by_side
    assert (
        f"revocation unknown: the CRL at {lab.http.url('/leaf.crl')} cannot be used for "
        "certificate: it is a delta CRL (OpenSSL: unable to get certificate CRL)"
    ) in result.status_line, side_by_side


def test_the_verdicts_openssl_is_named(lab: Lab) -> None:
    version = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    assert version.startswith("OpenSSL ")
    root_file = lab.dir / "root.crt"
    verbose = check_local(lab.chain.port, root_file, "-v", servername="db.test")
    assert f"\nopenssl version: {version} (the verdict's; libpq may use another)\n" in (
        verbose.stdout
    )
    document = check_local(lab.chain.port, root_file, "--json", servername="db.test")
    (target,) = json.loads(document.stdout)["targets"]
    assert target["openssl_version"] == version


def _said(attempt: PsqlAttempt) -> str:
    return "connected" if attempt.connected else attempt.error
