"""What only a PostgreSQL-aware checker sees, against real PostgreSQL 15 servers.

Weak protocols, keys and signatures; a renewed certificate that was never
reloaded; private key files; unencrypted logins; direct TLS negotiation on a
server too old for it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from testbed import pki
from testbed.faults import FaultServer, tls_only
from testbed.pgcluster import Cluster, Workspace, weak_openssl_conf

from .conftest import Pki, Run, check_local, psql_connects, run_plugin

WEAK_SERVER = {"ssl_ciphers": "'ALL:@SECLEVEL=0'"}


@pytest.fixture
def start(workspace: Workspace) -> Iterator[Callable[..., Cluster]]:
    """Start a throwaway cluster for one test."""
    started: list[Cluster] = []

    def make(chain: list[pki.Issued], key: pki.Issued, weak: bool = False, **kw: object) -> Cluster:
        env = weak_openssl_conf(workspace) if weak else None
        cluster = workspace.cluster(chain, key, **kw).start(env=env)  # type: ignore[arg-type]
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()


def check(cluster: Cluster, ca: Pki, *args: str) -> Run:
    return check_local(cluster.port, ca.root_file, *args, servername="db.test")


# --- weak crypto ---------------------------------------------------------------


def test_old_protocol_is_critical_and_libpq_agrees(
    start: Callable[..., Cluster], ca: Pki, psql_home: Path, workspace: Workspace
) -> None:
    leaf = pki.make_leaf(ca.intermediate)
    cluster = start(
        [leaf, ca.intermediate],
        leaf,
        settings={
            **WEAK_SERVER,
            "ssl_min_protocol_version": "'TLSv1'",
            "ssl_max_protocol_version": "'TLSv1.1'",
        },
    )
    result = check(cluster, ca)
    assert result.returncode == 2, result.stdout
    assert "server negotiated TLSv1.1, below the minimum TLSv1.2" in result.status_line
    # The certificate itself was still seen and judged.
    assert "certificate expires in 89 days" in result.status_line
    assert not psql_connects(cluster, psql_home, "db.test", "verify-full", str(ca.root_file))
    assert "libpq clients cannot connect" in result.status_line
    document = json.loads(check(cluster, ca, "--json").stdout)
    (target,) = document["targets"]
    assert target["tls"]["version"] == "TLSv1.1"
    assert "protocol version" in target["tls"]["legacy_handshake"]
    assert target["checks"]["handshake"]["severity"] == "critical"
    # Positive control: the same psql, allowed TLS 1.1, connects; so the
    # refusal above was the protocol's, not a broken oracle's.
    assert psql_connects(
        cluster,
        psql_home,
        "db.test",
        "verify-full",
        str(ca.root_file),
        extra=("ssl_min_protocol_version=TLSv1",),
        env=weak_openssl_conf(workspace),
    )
    relaxed = check(cluster, ca, "--min-tls-version", "TLSv1")
    assert relaxed.returncode == 0, relaxed.stdout


def test_small_rsa_key_is_refused_like_libpq_does(
    start: Callable[..., Cluster], ca: Pki, psql_home: Path
) -> None:
    leaf = pki.make_leaf(ca.intermediate, rsa_bits=1024)
    cluster = start([leaf, ca.intermediate], leaf, weak=True, settings=WEAK_SERVER)
    result = check(cluster, ca)
    # OpenSSL's default security level refuses the key while verifying, so
    # libpq cannot connect with verify-full: CRITICAL, as psql shows.
    assert not psql_connects(cluster, psql_home, "db.test", "verify-full", str(ca.root_file))
    assert result.returncode == 2, result.stdout
    assert "certificate's key is too weak (1024 bits)" in result.status_line
    assert "certificate has a weak RSA key of 1024 bits (minimum 2048)" in result.status_line


def test_small_rsa_key_without_verification_is_a_warning(
    start: Callable[..., Cluster], ca: Pki, psql_home: Path
) -> None:
    leaf = pki.make_leaf(ca.intermediate, rsa_bits=1024)
    cluster = start([leaf, ca.intermediate], leaf, weak=True, settings=WEAK_SERVER)
    # Without verification libpq does not look at the key: psql connects,
    # and only our stricter posture limit speaks.
    assert psql_connects(cluster, psql_home, "db.test", "require", None)
    result = run_plugin("-H", "127.0.0.1", "-p", str(cluster.port), "--sslmode", "require")
    assert result.returncode == 1, result.stdout
    assert "certificate has a weak RSA key of 1024 bits (minimum 2048)" in result.status_line
    relaxed = run_plugin(
        "-H", "127.0.0.1", "-p", str(cluster.port), "--sslmode", "require", "--min-rsa-bits", "1024"
    )
    assert relaxed.returncode == 0, relaxed.stdout


def test_strong_rsa_key_is_fine(start: Callable[..., Cluster], ca: Pki) -> None:
    leaf = pki.make_leaf(ca.intermediate, rsa_bits=2048)
    result = check(start([leaf, ca.intermediate], leaf), ca, "-v")
    assert result.returncode == 0, result.stdout
    assert "key_strength: RSA key of 2048 bits" in result.stdout


def test_sha1_signature_is_critical(start: Callable[..., Cluster], ca: Pki) -> None:
    leaf = pki.make_leaf_openssl(ca.intermediate, digest="sha1")
    cluster = start([leaf, ca.intermediate], leaf, weak=True, settings=WEAK_SERVER)
    result = check(cluster, ca)
    assert result.returncode == 2, result.stdout
    assert "certificate is signed with SHA1, which can be forged" in result.status_line
    # Clients refuse to verify it too, so the chain is not trusted either.
    assert (
        "certificate is signed with a digest too weak for clients at OpenSSL's default "
        "security level" in result.status_line
    )
    # Without chain verification (require, the root file overridden by an
    # empty one: no roots), the weak signature alone decides.
    downgraded = check(
        cluster,
        ca,
        "--sslmode",
        "require",
        "--sslrootcert=",
        "--weak-signature-state",
        "warning",
    )
    assert downgraded.returncode == 1, downgraded.stdout


# --- incomplete chain ------------------------------------------------------------


def test_missing_intermediate_filled_by_trust_store_is_a_warning(
    server: Callable[[str], Cluster], ca: Pki, psql_home: Path
) -> None:
    store = ca.dir / "root-plus-intermediate.crt"
    pki.write_pem(store, ca.root, ca.intermediate)
    cluster = server("missing_intermediate")
    result = check(cluster, ca, "--sslrootcert", str(store))
    assert result.returncode == 1, result.stdout
    assert "server sends no intermediate certificate" in result.status_line
    assert "add it to ssl_cert_file" in result.status_line
    # libpq with that store connects: not CRITICAL. With only the root it does not.
    assert psql_connects(cluster, psql_home, "db.test", "verify-full", str(store))
    assert not psql_connects(cluster, psql_home, "db.test", "verify-full", str(ca.root_file))
    assert check(cluster, ca).returncode == 2


def test_an_expired_intermediate_sent_beside_a_valid_copy_in_the_store_is_named(
    workspace: Workspace, psql_home: Path
) -> None:
    root = pki.make_root("Copy Root")
    valid = pki.make_intermediate(root, "Copy Intermediate")
    key = cast(ec.EllipticCurvePrivateKey, valid.key)
    expired = pki.make_intermediate(
        root, "Copy Intermediate", days_before=400, days_after=-10, key=key
    )
    leaf = pki.make_leaf(valid)
    folder = workspace.new_dir("copy")
    store = pki.write_pem(folder / "root-plus-intermediate.crt", root, valid)
    cluster = workspace.cluster([leaf, expired], leaf, name="copy").start()
    try:
        # OpenSSL takes the valid copy from the store: libpq connects.
        assert psql_connects(cluster, psql_home, "db.test", "verify-full", str(store))
        result = check_local(cluster.port, store, servername="db.test")
    finally:
        cluster.stop()
    assert result.returncode == 1, result.stdout
    assert (
        "server sends intermediate CN=Copy Intermediate,O=check_pg_tls tests valid until "
        f"{expired.cert.not_valid_after_utc:%Y-%m-%d}, not the one the chain was verified "
        "with (from the trusted roots); replace it in ssl_cert_file"
    ) in result.status_line, result.stdout
    assert "sends no intermediate" not in result.status_line


# --- forgotten reload -------------------------------------------------------------


def _wait_until_served(cluster: Cluster, ca: Pki, fingerprint: str) -> None:
    # A reload takes effect within milliseconds; poll the server rather than sleep.
    end = time.monotonic() + 20
    while time.monotonic() < end:
        result = check(cluster, ca, "--json")
        if fingerprint in result.stdout:
            return
    raise AssertionError("the server never served the new certificate")


def test_renewed_certificate_not_reloaded(start: Callable[..., Cluster], ca: Pki) -> None:
    old = pki.make_leaf(ca.intermediate, days_after=30)
    new = pki.make_leaf(ca.intermediate, days_after=90)
    cluster = start([old, ca.intermediate], old)
    # certbot renews: the file on disk changes, PostgreSQL is not reloaded.
    fullchain = cluster.data / "server.crt"
    cluster.install_certificate([new, ca.intermediate], new)
    result = check(cluster, ca, "--cert-file", str(fullchain))
    assert result.returncode == 1, result.stdout
    assert "server still serves the old certificate (expires " in result.status_line
    assert "the file on disk expires " in result.status_line
    assert "reload PostgreSQL" in result.status_line
    cluster.reload()
    _wait_until_served(cluster, ca, new.cert.fingerprint(hashes.SHA256()).hex())
    after = check(cluster, ca, "--cert-file", str(fullchain))
    assert after.returncode == 0, after.stdout


def test_not_reloaded_and_served_one_nearly_expired_is_critical(
    start: Callable[..., Cluster], ca: Pki
) -> None:
    old = pki.make_leaf(ca.intermediate, days_after=5)
    new = pki.make_leaf(ca.intermediate, days_after=90)
    cluster = start([old, ca.intermediate], old)
    cluster.install_certificate([new, ca.intermediate], new)
    result = check(cluster, ca, "--cert-file", str(cluster.data / "server.crt"))
    assert result.returncode == 2, result.stdout
    assert "server still serves the old certificate" in result.status_line
    assert "certificate expires in 4 days" in result.status_line


# --- key file audit ----------------------------------------------------------------


def _key_file(tmp_path: Path, issued: pki.Issued, mode: int, name: str = "server.key") -> Path:
    path = tmp_path / name
    path.write_bytes(issued.key_pem)
    os.chmod(path, mode)
    return path


def test_key_file_in_order(server: Callable[[str], Cluster], ca: Pki) -> None:
    cluster = server("valid")
    result = check(cluster, ca, "--key-file", str(cluster.data / "server.key"), "-v")
    assert result.returncode == 0, result.stdout
    assert "key_permissions: private key file mode 0600" in result.stdout
    assert "key_match: private key matches the certificate" in result.stdout
    assert "PRIVATE KEY" not in result.stdout


def test_world_readable_key_is_a_warning(
    server: Callable[[str], Cluster], ca: Pki, tmp_path: Path
) -> None:
    cluster = server("valid")
    key = pki.Issued(
        ca.root.cert,
        serialization.load_pem_private_key((cluster.data / "server.key").read_bytes(), None),
    )  # type: ignore[arg-type]
    path = _key_file(tmp_path, key, 0o644)
    result = check(cluster, ca, "--key-file", str(path))
    assert result.returncode == 1, result.stdout
    assert f"private key file {path} is world-readable (mode 0644)" in result.status_line
    writable = _key_file(tmp_path, key, 0o662, "writable.key")
    result = check(cluster, ca, "--key-file", str(writable))
    assert result.returncode == 1, result.stdout
    assert "is world-writable and group-writable (mode 0662)" in result.status_line


def test_key_of_another_certificate_is_critical(
    server: Callable[[str], Cluster], ca: Pki, tmp_path: Path
) -> None:
    other = pki.make_leaf(ca.intermediate)
    path = _key_file(tmp_path, other, 0o600)
    result = check(server("valid"), ca, "--key-file", str(path))
    assert result.returncode == 2, result.stdout
    assert (
        f"private key file {path} does not belong to the served certificate" in result.status_line
    )
    assert other.key_pem.decode().splitlines()[1] not in result.stdout


def test_unreadable_key_is_unknown_not_a_crash(
    server: Callable[[str], Cluster], ca: Pki, tmp_path: Path
) -> None:
    cluster = server("valid")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        pki.make_leaf(None).key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    os.chmod(encrypted, 0o600)
    result = check(cluster, ca, "--key-file", str(encrypted))
    assert result.returncode == 3, result.stdout
    assert "cannot check private key file" in result.status_line
    assert "protected by a passphrase" in result.status_line
    directory = check(cluster, ca, "--key-file", str(tmp_path))
    assert directory.returncode == 3
    assert "is a directory" in directory.status_line
    missing = check(cluster, ca, "--key-file", str(tmp_path / "nope.key"))
    assert missing.returncode == 3
    assert missing.status_line == (
        f"PG_TLS UNKNOWN - cannot read private key file "
        f"{tmp_path / 'nope.key'}: No such file or directory"
    )


def test_cert_and_key_files_need_a_single_target(ca: Pki, tmp_path: Path) -> None:
    result = run_plugin("db1", "db2", "--cert-file", str(ca.root_file))
    assert result.returncode == 3
    assert "give one target" in result.status_line


# --- plaintext logins --------------------------------------------------------------


def test_plaintext_refused_by_hostssl_only(server: Callable[[str], Cluster], ca: Pki) -> None:
    result = check(server("valid"), ca, "--check-plaintext", "postgres", "-v")
    assert result.returncode == 0, result.stdout
    assert "plaintext: server refuses unencrypted logins for user postgres" in result.stdout


@pytest.mark.parametrize("method", ["trust", "scram-sha-256"])
def test_plaintext_accepted_by_host_line(
    start: Callable[..., Cluster], ca: Pki, method: str
) -> None:
    leaf = pki.make_leaf(ca.intermediate)
    cluster = start([leaf, ca.intermediate], leaf, hba=f"host all all 127.0.0.1/32 {method}\n")
    result = check(cluster, ca, "--check-plaintext", "postgres@postgres")
    assert result.returncode == 1, result.stdout
    assert "server accepts unencrypted logins for user postgres (pg_hba.conf has a host line" in (
        result.status_line
    )
    critical = check(cluster, ca, "--check-plaintext", "postgres", "--plaintext-state", "critical")
    assert critical.returncode == 2
    # No password was ever sent: the server never saw an authentication attempt fail.
    cluster.wait_for_backends()
    assert cluster.log().count("connection received") >= 2
    assert "password authentication failed" not in cluster.log()


def test_plaintext_check_with_a_bad_option_is_unknown() -> None:
    result = run_plugin("-H", "127.0.0.1", "--check-plaintext", "@db")
    assert result.returncode == 3
    assert "invalid --check-plaintext '@db'" in result.status_line


# --- direct TLS negotiation against servers that cannot do it -----------------------


def test_direct_negotiation_on_postgresql_15_is_critical(
    server: Callable[[str], Cluster], ca: Pki
) -> None:
    result = check(server("valid"), ca, "--negotiation", "direct", "-t", "5")
    assert result.returncode == 2, result.stdout
    assert "server does not support direct TLS negotiation" in result.status_line


def test_direct_negotiation_without_alpn_is_critical(ca: Pki, tmp_path: Path) -> None:
    leaf = pki.make_leaf(ca.intermediate)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    pki.write_pem(cert, leaf, ca.intermediate)
    key.write_bytes(leaf.key_pem)
    with FaultServer(tls_only(cert, key)) as plain_tls:
        result = run_plugin(
            "-H",
            "127.0.0.1",
            "-p",
            str(plain_tls.port),
            "--negotiation",
            "direct",
            "--servername",
            "db.test",
            "--sslrootcert",
            str(ca.root_file),
        )
    assert result.returncode == 2, result.stdout
    assert "did not select ALPN postgresql" in result.status_line
