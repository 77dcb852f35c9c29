"""SCRAM channel binding and the server certificate's signature, with psql as the oracle.

libpq's SCRAM-SHA-256-PLUS hashes the server certificate with the digest of
the certificate's own signature algorithm. A certificate signed with Ed25519
or Ed448 has none: every password login with channel_binding=prefer (the
default) or require fails, while the chain is trusted and far from expiry.
One PostgreSQL server per version, password logins only (scram-sha-256 over
hostssl); each case swaps the certificate by reload, asks psql with the right
password, and the plugin must agree: a warning where psql fails, CRITICAL
when the server offers SCRAM-SHA-256-PLUS to the user, nothing where psql
connects.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from testbed import crafted
from testbed.crafted import Cert, Sig
from testbed.pg18 import pg18_bindir
from testbed.pgcluster import Workspace, find_bindir, weak_openssl_conf
from testbed.pki import Issued

from .conftest import Run, run_plugin

PASSWORD = "check-pg-tls-oracle"
SCRAM_ONLY = "hostssl all all 127.0.0.1/32 scram-sha-256\n"


@dataclass(frozen=True)
class Case:
    #: The root clients trust, and what the server sends (leaf first).
    root: Cert
    chain: tuple[Cert, ...]
    #: The digest libpq binds with, or None where it cannot.
    digest: str | None
    #: The sslmode psql and the plugin use (SHA-1 fails verification today).
    sslmode: str = "verify-full"
    #: More plugin options (to accept what this case is not about).
    options: tuple[str, ...] = ()


def _ca(name: str, key: crafted.PrivateKey | None = None, issuer: Cert | None = None) -> Cert:
    return crafted.issue(name, issuer, key=key, extensions=crafted.CA_EXTENSIONS)


def _leaf(issuer: Cert, key: crafted.PrivateKey | None = None, sig: Sig | None = None) -> Cert:
    extensions = crafted.leaf_extensions("db.test")
    return crafted.issue("db.test", issuer, key=key, extensions=extensions, sig=sig or Sig())


def _cases() -> dict[str, Callable[[], Case]]:
    def ed25519_key() -> crafted.PrivateKey:
        return ed25519.Ed25519PrivateKey.generate()

    def under_intermediate(root: Cert, intermediate: Cert, digest: str | None) -> Case:
        return Case(root, (_leaf(intermediate), intermediate), digest)

    def ecdsa_root() -> Cert:
        return _ca("ECDSA Root")

    def rsa_root() -> Cert:
        return _ca("RSA Root", crafted.rsa_key(2048, 7))

    def ed25519_root() -> Cert:
        return _ca("Ed25519 Root", ed25519_key())

    def rsa_leaf(sig: Sig, digest: str, *options: str) -> Case:
        root = rsa_root()
        leaf = _leaf(root, crafted.rsa_key(2048, 8), sig)
        if options:
            return Case(root, (leaf,), digest, "require", options)
        return Case(root, (leaf,), digest)

    def intermediate_ed25519() -> Case:
        root = ecdsa_root()
        return under_intermediate(root, _ca("Ed25519 CA", ed25519_key(), root), None)

    def ecdsa_intermediate_under_ed25519() -> Case:
        root = ed25519_root()
        return under_intermediate(root, _ca("ECDSA CA", None, root), "SHA256")

    def leaf_of(root: Cert, digest: str | None, **kw: object) -> Case:
        return Case(root, (_leaf(root, **kw),), digest)  # type: ignore[arg-type]

    return {
        "ecdsa-leaf-signed-by-ed25519-root": lambda: leaf_of(ed25519_root(), None),
        "ecdsa-leaf-signed-by-ed448-root": lambda: leaf_of(
            _ca("Ed448 Root", ed448.Ed448PrivateKey.generate()), None
        ),
        "ecdsa-leaf-signed-by-ed25519-intermediate": intermediate_ed25519,
        "ed25519-leaf-key-signed-by-ecdsa-root": lambda: leaf_of(
            ecdsa_root(), "SHA256", key=ed25519_key()
        ),
        "ecdsa-intermediate-under-ed25519-root": ecdsa_intermediate_under_ed25519,
        "ecdsa-sha256": lambda: leaf_of(ecdsa_root(), "SHA256"),
        "ecdsa-sha384": lambda: leaf_of(ecdsa_root(), "SHA384", sig=Sig("sha384")),
        "rsa-sha256": lambda: rsa_leaf(Sig(), "SHA256"),
        "rsa-pss-sha256": lambda: rsa_leaf(Sig(pss=True), "SHA256"),
        "rsa-pss-sha512": lambda: rsa_leaf(Sig("sha512", pss=True), "SHA512"),
        # RFC 5929: MD5 and SHA-1 signatures are bound with SHA-256. Clients
        # no longer verify SHA-1, so psql and the plugin use require.
        "rsa-sha1-bound-with-sha256": lambda: rsa_leaf(
            Sig("sha1"), "SHA256", "--weak-signature-state", "ok"
        ),
    }


CASES = _cases()
# The cases PostgreSQL 18 and its libpq run too: each way to fail, and the
# algorithms the issue names as working.
PG18_CASES = (
    "ecdsa-leaf-signed-by-ed25519-root",
    "ecdsa-leaf-signed-by-ed448-root",
    "ed25519-leaf-key-signed-by-ecdsa-root",
    "rsa-pss-sha256",
    "ecdsa-sha256",
)


class PasswordServer:
    """One PostgreSQL server that takes password logins only, whose certificate tests swap."""

    def __init__(self, workspace: Workspace, psql: Path) -> None:
        self.workspace = workspace
        self.psql = psql
        self.home = workspace.new_dir("home")
        self.files = workspace.new_dir("roots")
        first = CASES["ecdsa-sha256"]()
        # Started with a lax OpenSSL configuration, so that it also loads the
        # SHA-1 case's certificate (today's default refuses it).
        self.cluster = workspace.cluster([], cast(Issued, first.chain[0]), name="scram")
        self.cluster.install_pem(_pem(first.chain), first.chain[0].key_pem)
        self.cluster.start(env=weak_openssl_conf(workspace))
        self._run_psql(
            f"host=127.0.0.1 sslmode=require port={self.cluster.port}",
            ("-c", f"alter role postgres password '{PASSWORD}'"),
        )
        self.cluster.set_hba(SCRAM_ONLY)
        self.count = 0

    def serve(self, case: Case) -> Path:
        """Serve the case's chain; return the file with its root."""
        self.count += 1
        root_file = self.files / f"root-{self.count}.crt"
        root_file.write_bytes(case.root.pem)
        os.chmod(root_file, 0o644)
        self.cluster.install_pem(_pem(case.chain), case.chain[0].key_pem)
        self.cluster.reload()
        self.cluster.wait_served(lambda leaf: leaf == case.chain[0].der)
        return root_file

    def _run_psql(
        self, conninfo: str, args: tuple[str, ...], env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.psql), "-X", "-At", *args, f"{conninfo} user=postgres dbname=postgres"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.home), **(env or {})},
            stdin=subprocess.DEVNULL,
        )

    def psql_login(self, root_file: Path, sslmode: str, channel_binding: str) -> str:
        """psql with the right password: "connected", or libpq's last line of complaint."""
        root = root_file if sslmode != "require" else self.home / "no-such-root.crt"
        done = self._run_psql(
            f"host=db.test hostaddr=127.0.0.1 port={self.cluster.port} sslmode={sslmode} "
            f"sslrootcert={root} channel_binding={channel_binding} connect_timeout=10",
            ("-c", "select 1"),
            {"PGPASSWORD": PASSWORD},
        )
        if done.returncode == 0 and done.stdout.strip() == "1":
            return "connected"
        return done.stderr.strip().splitlines()[-1]

    def check(self, root_file: Path, sslmode: str, *args: str) -> Run:
        return run_plugin(
            "-H",
            "127.0.0.1",
            "-p",
            str(self.cluster.port),
            "--servername",
            "db.test",
            "--sslmode",
            sslmode,
            *(["--sslrootcert", str(root_file)] if sslmode != "require" else []),
            *args,
        )


def _pem(chain: tuple[Cert, ...]) -> bytes:
    return b"".join(cert.pem for cert in chain)


@pytest.fixture(scope="module")
def pg15(workspace: Workspace) -> Iterator[PasswordServer]:
    server = PasswordServer(workspace, find_bindir(15) / "psql")
    yield server
    server.cluster.stop()


@pytest.fixture(scope="module")
def pg18(pg18_workspace: Workspace) -> Iterator[PasswordServer]:
    server = PasswordServer(pg18_workspace, pg18_bindir() / "psql")
    yield server
    server.cluster.stop()


UNDEF = "could not find digest for NID UNDEF"


def _assert_agrees(server: PasswordServer, case: Case) -> None:
    root_file = server.serve(case)
    # The oracle: libpq with the right password, as each client would.
    answers = {cb: server.psql_login(root_file, case.sslmode, cb) for cb in ("prefer", "require")}
    # The positive control: without channel binding the login works, so a
    # failure above is the binding's, not the password's or the chain's.
    assert server.psql_login(root_file, case.sslmode, "disable") == "connected"
    if case.digest is None:
        assert all(answer.endswith(UNDEF) for answer in answers.values()), answers
    else:
        assert answers == {"prefer": "connected", "require": "connected"}

    plain = server.check(root_file, case.sslmode, *case.options, "-v")
    if case.digest is None:
        assert plain.returncode == 1, plain.stdout
        assert plain.status_line.startswith("PG_TLS WARNING - 127.0.0.1(db.test):"), plain.stdout
        assert (
            "SCRAM password logins with channel_binding=prefer (libpq's default) or require "
            f'fail with "{UNDEF}"' in plain.status_line
        )
        assert "use a certificate signed by an ECDSA or RSA key" in plain.status_line
    else:
        assert plain.returncode == 0, plain.stdout
        assert "channel_binding" not in plain.status_line
        assert (
            f"channel_binding: SCRAM channel binding hashes the certificate with {case.digest}"
            in plain.stdout
        )

    login = server.check(root_file, case.sslmode, *case.options, "--check-auth", "postgres", "-v")
    assert (
        "auth: server asks user postgres for a password by SCRAM (offers "
        "SCRAM-SHA-256-PLUS, SCRAM-SHA-256)" in login.stdout
    )
    if case.digest is None:
        # The server offers SCRAM-SHA-256-PLUS: the failure is certain.
        assert login.returncode == 2, login.stdout
        assert (
            "server offers user postgres SCRAM-SHA-256-PLUS, which libpq cannot bind to this "
            "certificate" in login.status_line
        )
    else:
        assert login.returncode == 0, login.stdout


@pytest.mark.parametrize("name", list(CASES))
def test_postgresql_15_psql_and_the_plugin_agree(pg15: PasswordServer, name: str) -> None:
    _assert_agrees(pg15, CASES[name]())


@pytest.mark.parametrize("name", PG18_CASES)
def test_postgresql_18_psql_and_the_plugin_agree(pg18: PasswordServer, name: str) -> None:
    _assert_agrees(pg18, CASES[name]())


def test_state_option_and_json(pg15: PasswordServer) -> None:
    root_file = pg15.serve(CASES["ecdsa-leaf-signed-by-ed25519-root"]())
    assert (
        pg15.check(root_file, "verify-full", "--channel-binding-state", "critical").returncode == 2
    )
    relaxed = pg15.check(root_file, "verify-full", "--channel-binding-state", "ok")
    assert relaxed.returncode == 0, relaxed.stdout
    # The server's own offer decides over the option.
    offered = pg15.check(
        root_file, "verify-full", "--channel-binding-state", "ok", "--check-auth", "postgres"
    )
    assert offered.returncode == 2, offered.stdout
    document = json.loads(pg15.check(root_file, "verify-full", "--json").stdout)
    (target,) = document["targets"]
    assert target["channel_binding"] == {
        "digest": None,
        "error": UNDEF,
        "signed_with": "ED25519",
        "decided_by": "openssl",
    }
    assert target["checks"]["channel_binding"]["severity"] == "warning"
    assert target["auth"] is None
