"""A connection string's channel_binding and require_auth, with psql 15 and 18 as judges.

libpq enforces both whatever the server: ``channel_binding=require`` fails
every login that is not bound to the certificate (one signed with Ed25519,
which libpq cannot hash; a server that asks for anything but
SCRAM-SHA-256-PLUS), ``disable`` binds nothing, so nothing fails;
``require_auth`` (libpq 16+) fails a login whose method it does not list.
Two PostgreSQL 15 servers take password logins, one with an ECDSA-signed
certificate and one signed by an Ed25519 root; each pg_hba.conf line is set
in turn, psql logs in with the right password, and the plugin, given the
same string, must agree: CRITICAL where psql always fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from testbed import crafted
from testbed.crafted import Cert
from testbed.pg18 import pg18_bindir
from testbed.pgcluster import Cluster, Workspace
from testbed.pki import Issued

from .conftest import run_plugin

PASSWORD = "check-pg-tls-login-rules"


class Server(NamedTuple):
    cluster: Cluster
    root_file: Path


def _server(workspace: Workspace, name: str, root: Cert) -> Server:
    leaf = crafted.issue("db.test", root, extensions=crafted.leaf_extensions("db.test"))
    cluster = workspace.cluster([], cast(Issued, leaf), name=name)
    cluster.install_pem(leaf.pem, leaf.key_pem)
    cluster.start()
    folder = workspace.new_dir(f"{name}-root")
    root_file = folder / "root.crt"
    root_file.write_bytes(root.pem)
    os.chmod(root_file, 0o644)
    subprocess.run(
        [
            shutil.which("psql") or "psql",
            "-X",
            "-c",
            f"alter role postgres password '{PASSWORD}'",
            f"host=127.0.0.1 port={cluster.port} sslmode=require user=postgres dbname=postgres",
        ],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(folder)},
    )
    return Server(cluster, root_file)


@pytest.fixture(scope="module")
def servers(workspace: Workspace) -> Iterator[dict[str, Server]]:
    made = {
        "ecdsa": _server(
            workspace,
            "bindable",
            crafted.issue("ECDSA Root", None, extensions=crafted.CA_EXTENSIONS),
        ),
        "ed25519": _server(
            workspace,
            "unbindable",
            crafted.issue(
                "Ed25519 Root",
                None,
                key=ed25519.Ed25519PrivateKey.generate(),
                extensions=crafted.CA_EXTENSIONS,
            ),
        ),
    }
    yield made
    for server in made.values():
        server.cluster.stop()


def _psql(binary: str, conninfo: str, home: Path) -> tuple[bool, str]:
    done = subprocess.run(
        [binary, "-X", "-At", "-c", "select 1", conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "PGPASSWORD": PASSWORD},
        stdin=subprocess.DEVNULL,
    )
    connected = done.returncode == 0 and done.stdout.strip() == "1"
    return connected, "" if connected else done.stderr.strip()


class Row(NamedTuple):
    server: str
    hba: str
    #: What the string adds.
    rules: str
    #: libpq's words when psql (18; 15 too unless ``only18``) fails; None: it connects.
    fails: str | None
    #: The plugin's state without and with --check-auth.
    plain: str
    with_login: str
    only18: bool = False


UNDEF = "could not find digest for NID UNDEF"
ROWS = {
    "ed25519-require": Row("ed25519", "scram-sha-256", "channel_binding=require", UNDEF,
                           "CRITICAL", "CRITICAL"),
    "ed25519-disable": Row("ed25519", "scram-sha-256", "channel_binding=disable", None,
                           "OK", "OK"),
    "ed25519-prefer": Row("ed25519", "scram-sha-256", "channel_binding=prefer", UNDEF,
                          "WARNING", "CRITICAL"),
    "ecdsa-require-scram": Row("ecdsa", "scram-sha-256", "channel_binding=require", None,
                               "OK", "OK"),
    "ecdsa-require-password": Row(
        "ecdsa", "password", "channel_binding=require",
        "channel binding required but not supported by server's authentication request",
        "OK", "CRITICAL",
    ),
    "ecdsa-require-trust": Row(
        "ecdsa", "trust", "channel_binding=require",
        "channel binding required, but server authenticated client without channel binding",
        "OK", "CRITICAL",
    ),
    "ecdsa-require-disable-sslmode": Row(
        "ecdsa", "scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256",
        "channel_binding=require sslmode=disable",
        "channel binding required, but SSL not in use", "CRITICAL", "CRITICAL",
    ),
    "require-auth-md5-scram-server": Row(
        "ecdsa", "scram-sha-256", "require_auth=md5",
        'authentication method requirement "md5" failed: server requested SASL authentication',
        "OK", "CRITICAL", only18=True,
    ),
    "require-auth-not-scram": Row(
        "ecdsa", "scram-sha-256", "require_auth=!scram-sha-256",
        'authentication method requirement "!scram-sha-256" failed: server requested '
        "SCRAM-SHA-256-PLUS authentication",
        "OK", "CRITICAL", only18=True,
    ),
    "require-auth-scram": Row("ecdsa", "scram-sha-256", "require_auth=scram-sha-256", None,
                              "OK", "OK", only18=True),
    "require-auth-password-server": Row(
        "ecdsa", "password", "require_auth=scram-sha-256,none",
        'authentication method requirement "scram-sha-256,none" failed: server requested a '
        "cleartext password",
        "OK", "CRITICAL", only18=True,
    ),
    "require-auth-not-none-trust": Row(
        "ecdsa", "trust", "require_auth=!none",
        'authentication method requirement "!none" failed: server did not complete '
        "authentication",
        "OK", "CRITICAL", only18=True,
    ),
    "require-auth-none-trust": Row("ecdsa", "trust", "require_auth=none", None,
                                   "OK", "WARNING", only18=True),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ROWS))
def test_login_rules_of_a_string_are_judged_as_libpq_enforces_them(
    servers: dict[str, Server], psql_home: Path, name: str
) -> None:
    row = ROWS[name]
    server = servers[row.server]
    server.cluster.set_hba(f"hostssl all all 127.0.0.1/32 {row.hba}\n")
    conninfo = (
        f"host=db.test hostaddr=127.0.0.1 port={server.cluster.port} sslmode=verify-full "
        f"sslrootcert={server.root_file} user=postgres dbname=postgres connect_timeout=10 "
        f"{row.rules}"
    )
    with ThreadPoolExecutor(4) as pool:
        older = pool.submit(_psql, shutil.which("psql") or "psql", conninfo, psql_home)
        newer = pool.submit(_psql, str(pg18_bindir() / "psql"), conninfo, psql_home)
        plain = pool.submit(run_plugin, conninfo, "--json")
        login = pool.submit(run_plugin, conninfo, "--json", "--check-auth", "postgres")
        oracles = {"psql 18": newer.result(), "psql 15": older.result()}
        if row.only18:
            # libpq 15 does not know require_auth (16+): the README says so.
            connected, said = oracles.pop("psql 15")
            assert not connected and 'invalid connection option "require_auth"' in said
        for who, (connected, said) in oracles.items():
            assert connected is (row.fails is None), (who, said)
            assert row.fails is None or row.fails in said, (who, said)
        for result, state in ((plain.result(), row.plain), (login.result(), row.with_login)):
            (target,) = json.loads(result.stdout)["targets"]
            assert target["state"] == state, (name, target["summary"])
            if state == "CRITICAL" and row.fails is not None:
                assert row.fails in target["summary"], target["summary"]
