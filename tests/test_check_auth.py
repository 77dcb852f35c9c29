"""``--check-auth``: what the server asks of a user after the handshake, never a password.

One PostgreSQL 15 server with ``ssl_ca_file`` (so it asks every client for a
certificate) goes through the pg_hba.conf lines admins write, reloaded
between cases. For each, psql shows what a libpq client meets, the plugin
must say so, a recording TLS proxy shows that the plugin sent only a
StartupMessage (and a Terminate to a server that let it in), and the
server's log has only the lines the README lists. PostgreSQL 18 and
pgbouncer are asked the same.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from check_pg_tls.protocol import TERMINATE, startup_message
from testbed import crafted, pki
from testbed.faults import FaultServer, scripted_login
from testbed.pgbouncer import PgBouncer
from testbed.pgcluster import Cluster, Workspace
from testbed.tls_proxy import RecordingProxy

from .conftest import PSQL, Pki, PsqlAttempt, Run, check_local, run_plugin

PASSWORD = "check-pg-tls-oracle"


@dataclass(frozen=True)
class Client:
    cert: Path
    key: Path

    @property
    def options(self) -> tuple[str, ...]:
        return ("--sslcert", str(self.cert), "--sslkey", str(self.key))

    @property
    def conninfo(self) -> tuple[str, ...]:
        return (f"sslcert={self.cert}", f"sslkey={self.key}")


@dataclass
class Lab:
    cluster: Cluster
    ca: Pki
    home: Path
    clients: dict[str, Client]
    #: The server's certificate and key as files, for the recording proxy.
    cert_file: Path
    key_file: Path
    psql: str = PSQL

    def check(self, *args: str, port: int | None = None) -> Run:
        return check_local(
            port or self.cluster.port, self.ca.root_file, *args, servername="db.test"
        )

    def psql_login(
        self, user: str = "postgres", client: str | None = None, password: bool = True
    ) -> PsqlAttempt:
        """What libpq meets: the right password (when ``password``), the client's certificate."""
        # An empty HOME holds no ~/.postgresql client certificate; libpq
        # sends one only when told, as the plugin does.
        certificate = (
            self.clients[client].conninfo
            if client
            else (f"sslcert={self.home / 'none.crt'}", f"sslkey={self.home / 'none.key'}")
        )
        conninfo = " ".join(
            (
                f"host=db.test hostaddr=127.0.0.1 port={self.cluster.port} sslmode=verify-full",
                f"sslrootcert={self.ca.root_file} user={user} dbname=postgres",
                "connect_timeout=10",
                *certificate,
            )
        )
        done = self._psql(conninfo, "select 1", {"PGPASSWORD": PASSWORD} if password else {})
        connected = done.returncode == 0 and done.stdout.strip() == "1"
        return PsqlAttempt(connected, "" if connected else done.stderr.strip())

    def sql(self, statement: str) -> None:
        """Run SQL as postgres, over a line that lets it in without a password."""
        done = self._psql(
            f"host=127.0.0.1 port={self.cluster.port} sslmode=require user=postgres "
            "dbname=postgres",
            statement,
            {},
        )
        assert done.returncode == 0, done.stderr

    def _psql(
        self, conninfo: str, statement: str, env: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.psql, "-X", "-At", "-c", statement, conninfo],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.home), **env},
            stdin=subprocess.DEVNULL,
        )


def _client(folder: Path, name: str, issued: pki.Issued) -> Client:
    cert = pki.write_pem(folder / f"{name}.crt", issued)
    key = folder / f"{name}.key"
    key.write_bytes(issued.key_pem)
    os.chmod(key, 0o600)
    return Client(cert, key)


def _lab(workspace: Workspace, ca: Pki, name: str, psql: str = PSQL) -> Lab:
    folder = workspace.new_dir(f"{name}-files")
    client_ca = pki.make_root("Client CA")
    ca_file = pki.write_pem(folder / "client-ca.crt", client_ca)
    os.chmod(ca_file, 0o644)
    clients = {
        cn_as: _client(
            folder,
            cn_as,
            pki.make_leaf(client_ca, dns=(), common_name=cn, server_auth=False),
        )
        for cn_as, cn in (("good", "postgres"), ("wrong", "alice"))
    }
    leaf = pki.make_leaf(ca.intermediate)
    cert_file = pki.write_pem(folder / "server.crt", leaf, ca.intermediate)
    key_file = folder / "server.key"
    key_file.write_bytes(leaf.key_pem)
    cluster = workspace.cluster(
        [leaf, ca.intermediate], leaf, {"ssl_ca_file": f"'{ca_file}'"}, name=name
    ).start()
    lab = Lab(cluster, ca, workspace.new_dir(f"{name}-home"), clients, cert_file, key_file, psql)
    # The template lets postgres in over TLS without a password: set up the
    # roles, then each test sets pg_hba.conf. postgres gets a SCRAM
    # verifier, md5user an MD5 one, alice none.
    lab.sql(f"alter role postgres password '{PASSWORD}'")
    lab.sql(
        "set password_encryption = 'md5'; "
        f"create role md5user login password '{PASSWORD}'; create role alice login"
    )
    return lab


@pytest.fixture(scope="module")
def lab15(workspace: Workspace, ca: Pki) -> Iterator[Lab]:
    lab = _lab(workspace, ca, "auth15")
    yield lab
    lab.cluster.stop()


@dataclass(frozen=True)
class Case:
    hba: str
    #: The plugin's exit code and what its -v output says about the login.
    code: int
    says: str
    user: str = "postgres"
    client: str | None = None
    #: Whether psql (with the password, and the client's certificate) logs in.
    psql_connects: bool = True
    #: What psql says when it does not.
    psql_error: str = ""
    #: The server's log lines for the plugin's connection, besides
    #: "connection received": (level, start of the message).
    log: tuple[tuple[str, str], ...] = ()
    #: Relayed through the recording proxy (which holds no client certificate).
    wire: bool = True


HOST = "hostssl all all 127.0.0.1/32"
_SESSION = (("LOG", "connection authorized"), ("LOG", "disconnection: session time"))
_NEEDS_CERT = "connection requires a valid client certificate"

CASES = {
    "scram-sha-256": Case(
        f"{HOST} scram-sha-256\n",
        0,
        "auth: server asks user postgres for a password by SCRAM (offers "
        "SCRAM-SHA-256-PLUS, SCRAM-SHA-256)",
    ),
    "md5": Case(
        f"{HOST} md5\n",
        0,
        "auth: server asks user md5user and database postgres for an MD5-hashed password",
        user="md5user",
    ),
    "password": Case(
        f"{HOST} password\n",
        0,
        "auth: server asks user postgres for a cleartext password (password, ldap, radius "
        "or pam in pg_hba.conf), sent inside TLS",
    ),
    "trust": Case(
        f"{HOST} trust\n",
        1,
        "auth: server lets user postgres log in over TLS without a password or client "
        "certificate (pg_hba.conf trust)",
        log=_SESSION,
    ),
    "cert-without-certificate": Case(
        f"{HOST} cert\n",
        2,
        "auth: login of user postgres refused (SQLSTATE 28000) before any password, on a "
        "connection without a client certificate",
        psql_connects=False,
        psql_error=_NEEDS_CERT,
        log=(("FATAL", _NEEDS_CERT),),
    ),
    "cert-with-good-certificate": Case(
        f"{HOST} cert\n",
        0,
        "auth: server lets user postgres in on the client certificate, without a password",
        client="good",
        log=(
            ("LOG", 'connection authenticated: identity="CN=postgres'),
            *_SESSION,
        ),
        wire=False,
    ),
    "cert-with-wrongly-named-certificate": Case(
        f"{HOST} cert\n",
        2,
        "auth: login of user postgres refused with the client certificate given (SQLSTATE "
        "28000) before any password: its name does not map to the user",
        client="wrong",
        psql_connects=False,
        psql_error='certificate authentication failed for user "postgres"',
        log=(
            ("LOG", 'connection authenticated: identity="CN=alice'),
            ("LOG", "provided user name (postgres) and authenticated user name (alice)"),
            ("FATAL", 'certificate authentication failed for user "postgres"'),
            ("DETAIL", "Connection matched pg_hba.conf line 1"),
        ),
        wire=False,
    ),
    "clientcert-verify-full-without-certificate": Case(
        f"{HOST} scram-sha-256 clientcert=verify-full\n",
        2,
        "auth: login of user postgres refused (SQLSTATE 28000) before any password, on a "
        "connection without a client certificate",
        psql_connects=False,
        psql_error=_NEEDS_CERT,
        log=(("FATAL", _NEEDS_CERT),),
    ),
    "clientcert-verify-full-with-good-certificate": Case(
        f"{HOST} scram-sha-256 clientcert=verify-full\n",
        0,
        "auth: server asks user postgres for a password by SCRAM (offers SCRAM-SHA-256-PLUS, "
        "SCRAM-SHA-256); the client certificate passed the handshake",
        client="good",
        wire=False,
    ),
    # The server asks for the password first and compares the certificate's
    # name only after it: without sending one, the plugin can only point out
    # that the name is not the user's.
    "clientcert-verify-full-with-wrongly-named-certificate": Case(
        f"{HOST} scram-sha-256 clientcert=verify-full\n",
        1,
        "auth: the client certificate names CN=alice, not user postgres: a pg_hba.conf line "
        "with clientcert=verify-full (or cert) refuses it",
        client="wrong",
        psql_connects=False,
        # With the right password: the server says the password was wrong.
        psql_error='password authentication failed for user "postgres"',
        wire=False,
    ),
    "reject": Case(
        f"{HOST} reject\n",
        2,
        "auth: login of user postgres refused (SQLSTATE 28000)",
        psql_connects=False,
        psql_error="pg_hba.conf rejects connection",
        log=(("FATAL", "pg_hba.conf rejects connection"),),
    ),
    # ident asks the client's ident server (none answers on 127.0.0.1), not
    # the client: a refusal before any password, with the same SQLSTATE.
    "ident": Case(
        f"{HOST} ident\n",
        2,
        "auth: login of user postgres refused (SQLSTATE 28000) before any password, on a "
        "connection without a client certificate: pg_hba.conf demands one (cert, "
        "clientcert=verify-ca or verify-full), which libpq clients without sslcert never get "
        "past, or rejects the login (reject, no line for it over TLS, ident); the SQLSTATE "
        "does not tell which",
        psql_connects=False,
        psql_error='Ident authentication failed for user "postgres"',
        log=(
            ("LOG", 'could not connect to Ident server at address "127.0.0.1", port 113'),
            ("FATAL", 'Ident authentication failed for user "postgres"'),
            ("DETAIL", "Connection matched pg_hba.conf line 1"),
        ),
    ),
    # The server waits for a Kerberos token; the check closes instead, and
    # the server logs the exchange as failed.
    "gss": Case(
        f"{HOST} gss\n",
        0,
        "auth: server asks user postgres for Kerberos (GSSAPI)",
        psql_connects=False,
        psql_error="GSSAPI continuation error",
        log=(
            ("FATAL", 'GSSAPI authentication failed for user "postgres"'),
            ("DETAIL", "Connection matched pg_hba.conf line 1"),
        ),
    ),
    "no-line-for-the-user": Case(
        "hostssl all alice 127.0.0.1/32 trust\n",
        2,
        "auth: login of user postgres refused (SQLSTATE 28000)",
        psql_connects=False,
        psql_error="no pg_hba.conf entry",
        log=(("FATAL", "no pg_hba.conf entry"),),
    ),
    "trust-for-a-role-that-does-not-exist": Case(
        f"{HOST} trust\n",
        1,
        "auth: server lets user nobody and database postgres log in over TLS without a "
        "password or client certificate (pg_hba.conf trust); it then ended the session with "
        "SQLSTATE 28000",
        user="nobody",
        psql_connects=False,
        psql_error='role "nobody" does not exist',
        log=(("LOG", "connection authorized"), ("FATAL", 'role "nobody" does not exist')),
    ),
}


def _new_lines(cluster: Cluster, start: int) -> list[tuple[str, str]]:
    """(level, message) of each log line after ``start``, but "connection received"."""
    cluster.wait_for_backends()
    found = []
    for line in cluster.log()[start:].splitlines():
        match = re.match(r"\S+ \S+ \S+ \[\d+\] (\w+):  (.*)", line)
        if match and not match.group(2).startswith("connection received"):
            found.append((match.group(1), match.group(2)))
    return found


def _assert_log(found: list[tuple[str, str]], expected: tuple[tuple[str, str], ...]) -> None:
    assert len(found) == len(expected), found
    for (level, text), (want_level, want) in zip(found, expected, strict=True):
        assert level == want_level and text.startswith(want), (level, text)


@pytest.fixture(scope="module")
def proxy15(lab15: Lab) -> Iterator[RecordingProxy]:
    with RecordingProxy(lab15.cluster.port, lab15.cert_file, lab15.key_file) as proxy:
        yield proxy


@pytest.mark.parametrize("name", list(CASES))
def test_postgresql_15(lab15: Lab, proxy15: RecordingProxy, name: str) -> None:
    case = CASES[name]
    lab = lab15
    lab.cluster.set_hba(case.hba)
    client = lab.clients[case.client].options if case.client else ()

    # The oracle: psql with the right password and the same certificate.
    attempt = lab.psql_login(case.user, case.client)
    assert attempt.connected == case.psql_connects, attempt.error
    assert case.psql_error in attempt.error

    # psql's backend writes its last lines after psql has gone.
    lab.cluster.wait_for_backends()
    start = len(lab.cluster.log())
    result = lab.check("--check-auth", f"{case.user}@postgres", *client, "-v")
    assert result.returncode == case.code, result.stdout
    assert case.says in result.stdout, result.stdout
    if case.code:
        assert case.says.removeprefix("auth: ") in result.status_line
    # One connection, and only the lines the README lists.
    log = lab.cluster.log()[start:]
    assert log.count("connection received") == 1, log
    _assert_log(_new_lines(lab.cluster, start), case.log)
    assert "PRIVATE KEY" not in result.stdout and PASSWORD not in result.stdout

    if case.wire:
        # What went over the wire inside TLS: the StartupMessage, and a
        # Terminate only to a server that let the client in.
        before = len(proxy15.sessions)
        relayed = run_plugin(
            "-H", "127.0.0.1", "-p", str(proxy15.port), "--sslmode", "require",
            "--check-auth", f"{case.user}@postgres",
        )  # fmt: skip
        assert relayed.returncode == case.code, relayed.stdout
        sent = proxy15.wait_sessions(before + 1)[before]
        let_in = case.log and case.log[-1] == _SESSION[-1]
        assert sent == startup_message(case.user, "postgres") + (TERMINATE if let_in else b"")


def test_without_check_auth_a_certificate_request_claims_nothing(lab15: Lab) -> None:
    # PostgreSQL asks for a client certificate in every handshake once
    # ssl_ca_file is set; pg_hba.conf decides only after the StartupMessage.
    lab15.cluster.set_hba(f"{HOST} scram-sha-256 clientcert=verify-full\n")
    assert not lab15.psql_login().connected
    result = lab15.check("-v")
    assert result.returncode == 0, result.stdout
    assert "does not require" not in result.stdout
    assert (
        "client_certificate: server asks for a client certificate and completes the TLS "
        "handshake without one; whether a login needs one (pg_hba.conf clientcert or cert) "
        "is decided after the StartupMessage (only a login can tell: --check-auth USER)"
    ) in result.stdout
    assert lab15.check("--check-auth", "postgres").returncode == 2


def test_passwordless_state(lab15: Lab) -> None:
    lab15.cluster.set_hba(f"{HOST} trust\n")
    assert lab15.psql_login(password=False).connected
    assert (
        lab15.check("--check-auth", "postgres", "--passwordless-state", "critical").returncode == 2
    )
    assert lab15.check("--check-auth", "postgres", "--passwordless-state", "ok").returncode == 0


def test_json(lab15: Lab) -> None:
    import json

    lab15.cluster.set_hba(f"{HOST} scram-sha-256\n")
    (target,) = json.loads(lab15.check("--check-auth", "postgres@template1", "--json").stdout)[
        "targets"
    ]
    assert target["auth"] == {
        "user": "postgres",
        "database": "template1",
        "request": "sasl",
        "mechanisms": ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
        "other_mechanisms": 0,
        "sqlstate": None,
        "session_sqlstate": None,
        "failure": None,
    }
    assert target["checks"]["auth"]["ok"] is True


@pytest.mark.parametrize("value", ["@db", "", "@", "x" * 10000])
def test_bad_check_auth_is_unknown(value: str) -> None:
    result = run_plugin("-H", "127.0.0.1", "--check-auth", value)
    assert result.returncode == 3, result.stdout
    assert result.status_line.startswith("PG_TLS UNKNOWN - invalid --check-auth")


# --- PostgreSQL 18 -------------------------------------------------------------------

# PostgreSQL 18 logs who authenticated how before "connection authorized".
_AUTHENTICATED_18 = ("LOG", 'connection authenticated: user="postgres" method=trust')
PG18_CASES = {
    "scram-sha-256": (),
    "md5": (),
    "trust": (_AUTHENTICATED_18, *_SESSION),
    "clientcert-verify-full-without-certificate": (("FATAL", _NEEDS_CERT),),
    "clientcert-verify-full-with-wrongly-named-certificate": (),
    "cert-with-wrongly-named-certificate": (
        ("LOG", 'connection authenticated: identity="CN=alice'),
        ("LOG", "provided user name (postgres) and authenticated user name (alice)"),
        ("FATAL", 'certificate authentication failed for user "postgres"'),
        ("DETAIL", "Connection matched file"),
    ),
    "ident": (
        ("LOG", 'could not connect to Ident server at address "127.0.0.1", port 113'),
        ("FATAL", 'Ident authentication failed for user "postgres"'),
        ("DETAIL", "Connection matched file"),
    ),
    "gss": (
        ("FATAL", 'GSSAPI authentication failed for user "postgres"'),
        ("DETAIL", "Connection matched file"),
    ),
}


@pytest.fixture(scope="module")
def lab18(pg18_workspace: Workspace, ca: Pki) -> Iterator[Lab]:
    from testbed.pg18 import pg18_bindir

    lab = _lab(pg18_workspace, ca, "auth18", str(pg18_bindir() / "psql"))
    yield lab
    lab.cluster.stop()


@pytest.mark.parametrize("name", list(PG18_CASES))
def test_postgresql_18(lab18: Lab, name: str) -> None:
    case = CASES[name]
    lab18.cluster.set_hba(case.hba)
    attempt = lab18.psql_login(case.user, case.client)
    assert attempt.connected == case.psql_connects, attempt.error
    assert case.psql_error in attempt.error
    lab18.cluster.wait_for_backends()
    start = len(lab18.cluster.log())
    client = lab18.clients[case.client].options if case.client else ()
    result = lab18.check("--check-auth", f"{case.user}@postgres", *client, "-v")
    assert result.returncode == case.code, result.stdout
    assert case.says in result.stdout, result.stdout
    assert lab18.cluster.log()[start:].count("connection received") == 1
    _assert_log(_new_lines(lab18.cluster, start), PG18_CASES[name])


# --- pgbouncer -----------------------------------------------------------------------


@dataclass
class Bouncer:
    bouncer: PgBouncer
    root_file: Path
    home: Path

    def check(self, *args: str) -> Run:
        return check_local(self.bouncer.port, self.root_file, *args, servername="bouncer.test")

    def psql(self, *settings: str, password: bool = True) -> PsqlAttempt:
        conninfo = " ".join(
            (
                f"host=bouncer.test hostaddr=127.0.0.1 port={self.bouncer.port}",
                f"sslmode=verify-full sslrootcert={self.root_file} user=postgres",
                "dbname=postgres connect_timeout=10",
                f"sslcert={self.home / 'none.crt'} sslkey={self.home / 'none.key'}",
                *settings,
            )
        )
        done = subprocess.run(
            [PSQL, "-X", "-At", "-c", "select 1", conninfo],
            capture_output=True,
            text=True,
            timeout=30,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(self.home),
                **({"PGPASSWORD": PASSWORD} if password else {}),
            },
            stdin=subprocess.DEVNULL,
        )
        connected = done.returncode == 0 and done.stdout.strip() == "1"
        return PsqlAttempt(connected, "" if connected else done.stderr.strip())

    def lines_after(self, start: int) -> list[str]:
        """pgbouncer's log after ``start``, once a later login shows it has caught up.

        pgbouncer logs from one event loop: when a psql that started after
        the plugin had finished has its "login attempt" logged, every line
        about the plugin's connection is there.
        """
        marker = self.bouncer.log()[start:].count("login attempt") + 1
        self.psql()
        end = time.monotonic() + 10
        while self.bouncer.log()[start:].count("login attempt") < marker:
            assert time.monotonic() < end, self.bouncer.log()[start:]
            time.sleep(0.005)
        log = self.bouncer.log()
        lines = log[start:].splitlines()
        last = max(i for i, line in enumerate(lines) if "login attempt" in line)
        # An earlier psql's closing line can be logged after ``start`` was
        # taken: leave out lines about clients that logged in before it.
        earlier = set(_CLIENT.findall(log[:start]))
        return [line for line in lines[:last] if not set(_CLIENT.findall(line)) & earlier]


# pgbouncer names a client connection "C-0x...: user/db@address:port".
_CLIENT = re.compile(r"C-0x[0-9a-f]+: \S+@\S+:\d+")


def _bouncer_pki(workspace: Workspace) -> tuple[Path, crafted.Cert]:
    """An Ed25519 root and a bouncer.test leaf it signed: no channel binding possible."""
    root = crafted.issue(
        "Ed25519 Root",
        key=ed25519.Ed25519PrivateKey.generate(),
        extensions=crafted.CA_EXTENSIONS,
    )
    leaf = crafted.issue("bouncer.test", root, extensions=crafted.leaf_extensions("bouncer.test"))
    root_file = workspace.new_dir("bouncer-root") / "root.crt"
    root_file.write_bytes(root.pem)
    os.chmod(root_file, 0o644)
    return root_file, leaf


@pytest.fixture(scope="module")
def bouncers(
    workspace: Workspace, server: Callable[[str], Cluster], lab15: Lab
) -> Iterator[dict[str, Bouncer]]:
    root_file, leaf = _bouncer_pki(workspace)
    chain = [x509.load_der_x509_certificate(leaf.der)]
    key = cast(pki.Issued, leaf)
    client_ca = lab15.cluster.settings["ssl_ca_file"].strip("'")
    home = workspace.new_dir("bouncer-home")
    settings = {
        "scram-sha-256": {"auth_type": "scram-sha-256"},
        "md5": {"auth_type": "md5"},
        "trust": {"auth_type": "trust"},
        "cert": {
            "auth_type": "cert",
            "client_tls_sslmode": "verify-full",
            "client_tls_ca_file": client_ca,
        },
    }
    started: dict[str, Bouncer] = {}
    try:
        for name, extra in settings.items():
            bouncer = PgBouncer(
                server("valid"), chain, key, extra, name=f"bouncer-{name}", password=PASSWORD
            )
            started[name] = Bouncer(bouncer.start(), root_file, home)
        yield started
    finally:
        for each in started.values():
            each.bouncer.stop()


_NO_PLUS = (
    "channel binding is required, but server did not offer an authentication method that "
    "supports channel binding"
)


def test_pgbouncer_offers_scram_without_channel_binding(
    bouncers: dict[str, Bouncer], lab15: Lab
) -> None:
    bouncer = bouncers["scram-sha-256"]
    # pgbouncer 1.18 offers SCRAM-SHA-256 only: libpq's default connects
    # although the certificate is Ed25519-signed; require cannot bind at all.
    assert bouncer.psql("channel_binding=prefer").connected
    assert _NO_PLUS in bouncer.psql("channel_binding=require").error
    assert not bouncer.psql(password=False).connected
    # Without asking, the plugin cannot know that no client binds the channel.
    assert bouncer.check().returncode == 1
    start = len(bouncer.bouncer.log())
    result = bouncer.check("--check-auth", "postgres", "-v")
    assert result.returncode == 0, result.stdout
    assert (
        "auth: server asks user postgres for a password by SCRAM (offers SCRAM-SHA-256)"
        in result.stdout
    )
    assert (
        "channel_binding: libpq cannot bind SCRAM to this certificate (could not find digest "
        "for NID UNDEF), but the server does not offer SCRAM-SHA-256-PLUS" in result.stdout
    )
    lines = bouncer.lines_after(start)
    assert sum("login attempt" in line for line in lines) == 1, lines
    assert not [line for line in lines if "closing because" in line or " LOG " not in line]
    # On the wire: the StartupMessage and nothing else.
    with RecordingProxy(bouncer.bouncer.port, lab15.cert_file, lab15.key_file) as proxy:
        relayed = run_plugin(
            "-H", "127.0.0.1", "-p", str(proxy.port), "--sslmode", "require",
            "--check-auth", "postgres",
        )  # fmt: skip
        assert relayed.returncode == 0, relayed.stdout
        assert proxy.wait_sessions(1) == [startup_message("postgres", "postgres")]


@pytest.mark.parametrize(
    ("name", "code", "says", "closing"),
    [
        ("md5", 0, "auth: server asks user postgres for an MD5-hashed password", None),
        (
            "trust",
            1,
            "auth: server lets user postgres log in over TLS without a password or client "
            "certificate (pg_hba.conf trust)",
            "closing because: client close request",
        ),
    ],
)
def test_pgbouncer_auth_types(
    bouncers: dict[str, Bouncer], name: str, code: int, says: str, closing: str | None
) -> None:
    bouncer = bouncers[name]
    assert bouncer.psql().connected
    assert bouncer.psql(password=False).connected == (name == "trust")
    start = len(bouncer.bouncer.log())
    # The certificate is Ed25519-signed: the channel-binding warning stays
    # for users not asked for SCRAM (others may be); not this test's subject.
    result = bouncer.check("--check-auth", "postgres", "--channel-binding-state", "ok", "-v")
    assert result.returncode == code, result.stdout
    assert says in result.stdout
    lines = bouncer.lines_after(start)
    closed = [line for line in lines if "closing because" in line]
    assert closed == [] if closing is None else len(closed) == 1 and closing in closed[0], lines
    assert all(" LOG " in line for line in lines), lines


@pytest.mark.parametrize(
    ("client", "code", "says"),
    [
        (
            None,
            2,
            "client_certificate: server requires a client certificate (give --sslcert and "
            "--sslkey)",
        ),
        ("good", 0, "auth: server lets user postgres in on the client certificate"),
        (
            "wrong",
            2,
            "auth: login of user postgres refused with the client certificate given (SQLSTATE "
            "08P01) before any password",
        ),
    ],
)
def test_pgbouncer_certificate_authentication(
    bouncers: dict[str, Bouncer], lab15: Lab, client: str | None, code: int, says: str
) -> None:
    bouncer = bouncers["cert"]
    given = lab15.clients[client] if client else None
    attempt = bouncer.psql(*(given.conninfo if given else ()))
    assert attempt.connected == (client == "good"), attempt.error
    result = bouncer.check(
        "--check-auth",
        "postgres",
        "--channel-binding-state",
        "ok",
        *(given.options if given else ()),
        "-v",
    )
    assert result.returncode == code, result.stdout
    assert says in result.stdout
    if client is None:
        # Refused in TLS: no login was asked, and none is claimed.
        assert (
            "auth: no login asked: the server refused the TLS connection (see "
            "client_certificate)" in result.stdout
        )


# --- what no real server answers ------------------------------------------------------


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def _request(code: int, extra: bytes = b"") -> bytes:
    return _message(b"R", code.to_bytes(4, "big") + extra)


_READY = (
    _message(b"S", b"server_version\x0099\x00") + _message(b"K", bytes(8)) + _message(b"Z", b"I")
)

ODD_ANSWERS = {
    "gss": (_request(7), 0, "auth: server asks user postgres for Kerberos (GSSAPI)"),
    "sspi": (_request(9), 0, "auth: server asks user postgres for SSPI (Windows)"),
    "oauth": (
        _request(10, b"OAUTHBEARER\x00\x00"),
        0,
        "auth: server asks user postgres for an OAuth bearer token (OAUTHBEARER)",
    ),
    "kerberos-v5": (
        _request(2),
        3,
        "cannot tell what the server asks of user postgres: it asks for Kerberos V5, which "
        "libpq does not support",
    ),
    "unknown-code": (_request(4), 3, "it asks for authentication method 4, which libpq"),
    "unknown-mechanism": (
        _request(10, b"X-MADE-UP\x00\x00"),
        3,
        "it asks for SASL with 1 mechanism libpq does not know",
    ),
    "mechanism-no-sasl-name": (
        _request(10, b"scram <b>\x00\x00"),
        3,
        "cannot tell what the server asks of user postgres: server offered a SASL mechanism "
        "with an impossible name",
    ),
    "too-many-clients": (
        _message(b"E", b"SFATAL\x00C53300\x00Msorry <script>alert(1)</script>\x00\x00"),
        3,
        "cannot tell what the server asks of user postgres: it answered with SQLSTATE 53300",
    ),
    "refused": (
        _message(b"E", b"SFATAL\x00C28000\x00Mgo away <b>\x00\x00"),
        2,
        "login of user postgres refused over TLS (SQLSTATE 28000)",
    ),
    "empty-sasl-list": (
        _request(10, b"\x00"),
        3,
        "it asks for SASL without any mechanism",
    ),
    "negotiate-protocol-version": (
        _message(b"v", b"\x00\x00\x00\x00\x00\x00\x00\x00"),
        3,
        "cannot tell what the server asks of user postgres: server answered the StartupMessage "
        "with NegotiateProtocolVersion, which PostgreSQL does not send to a protocol 3.0 "
        "StartupMessage without options",
    ),
    "not-postgresql": (
        b"HTTP/1.1 200 OK\r\n\r\n",
        3,
        "cannot tell what the server asks of user postgres: server answered the StartupMessage "
        "with byte 0x48: not a PostgreSQL server",
    ),
    "let-in": (
        _request(0) + _READY,
        1,
        "server lets user postgres log in over TLS without a password",
    ),
}


@pytest.fixture(scope="module")
def fault_files(workspace: Workspace, ca: Pki) -> tuple[Path, Path]:
    leaf = pki.make_leaf(ca.intermediate)
    folder = workspace.new_dir("odd-logins")
    cert_file = pki.write_pem(folder / "server.crt", leaf, ca.intermediate)
    key_file = folder / "server.key"
    key_file.write_bytes(leaf.key_pem)
    return cert_file, key_file


@pytest.mark.parametrize("name", list(ODD_ANSWERS))
def test_odd_answers_are_named_and_only_a_startup_message_is_sent(
    fault_files: tuple[Path, Path], ca: Pki, name: str
) -> None:
    reply, code, says = ODD_ANSWERS[name]
    received: list[bytes] = []
    with FaultServer(scripted_login(*fault_files, reply, received)) as fake:
        result = check_local(
            fake.port, ca.root_file, "--check-auth", "postgres", "-v", servername="db.test"
        )
        fake.wait_connections(1)
    assert result.returncode == code, result.stdout
    assert says in result.stdout
    # The chain was judged all the same.
    assert "certificate expires in 89 days" in result.status_line
    assert "<" not in result.stdout and "sorry" not in result.stdout and "away" not in result.stdout
    terminate = TERMINATE if name == "let-in" else b""
    assert received == [startup_message("postgres", "postgres") + terminate]


@pytest.mark.serial
def test_a_server_that_never_gets_ready_costs_no_more_than_the_timeout(
    fault_files: tuple[Path, Path], ca: Pki
) -> None:
    received: list[bytes] = []
    # -t 2, not 1: the plugin counts -t from its own start, and on a busy
    # machine start-up alone may take most of a second before it connects;
    # what is asserted is that the login's wait ends within -t.
    with FaultServer(scripted_login(*fault_files, _request(0), received)) as fake:
        started = time.monotonic()
        result = check_local(
            fake.port, ca.root_file, "--check-auth", "postgres", "-t", "2", servername="db.test"
        )
        elapsed = time.monotonic() - started
        fake.wait_connections(1)
    assert elapsed < 2.5, elapsed
    # It let the user in without a password; that is what counts.
    assert result.returncode == 1, result.stdout
    assert (
        "server lets user postgres log in over TLS without a password or client certificate "
        "(pg_hba.conf trust); the session then did not start: no ReadyForQuery within 2 "
        "seconds" in result.status_line
    )
    assert "certificate expires in 89 days" in result.status_line
    assert received == [startup_message("postgres", "postgres")]


@pytest.mark.serial
def test_a_server_that_stays_silent_after_the_startup_message(
    fault_files: tuple[Path, Path], ca: Pki
) -> None:
    received: list[bytes] = []
    with FaultServer(scripted_login(*fault_files, b"", received)) as fake:
        started = time.monotonic()
        result = check_local(
            fake.port, ca.root_file, "--check-auth", "postgres", "-t", "2", servername="db.test"
        )
        elapsed = time.monotonic() - started
        fake.wait_connections(1)
    assert elapsed < 2.5, elapsed
    assert result.returncode == 3, result.stdout
    assert (
        "cannot tell what the server asks of user postgres: no answer to the StartupMessage "
        "within 2 seconds" in result.status_line
    )
    assert "certificate expires in 89 days" in result.status_line
    assert received == [startup_message("postgres", "postgres")]
