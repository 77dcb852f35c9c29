"""A connection string's client-side settings, as libpq applies them: psql 15 and 18 judge.

libpq hands the string's TCP keywords to the kernel before it connects
(``setsockopt``), and the kernel, not a table of limits, says which values
it takes: every client with a value it refuses fails, whatever the server.
The plugin's probe gives its socket the same settings, so the kernel's
refusal is its answer too: CRITICAL, in libpq's words.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from testbed import pki
from testbed.pg18 import pg18_bindir
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, run_plugin


class Judged(NamedTuple):
    psql15: tuple[bool, str]
    psql18: tuple[bool, str]
    #: The plugin's JSON target.
    target: dict[str, object]


def _psql(binary: str, conninfo: str, home: Path) -> tuple[bool, str]:
    done = subprocess.run(
        [binary, "-X", "-At", "-c", "select 1", conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        stdin=subprocess.DEVNULL,
    )
    connected = done.returncode == 0 and done.stdout.strip() == "1"
    return connected, "" if connected else done.stderr.strip()


def _judged(conninfos: list[str], home: Path, *options: str) -> list[Judged]:
    """psql 15, psql 18 and the plugin (``--json``) on each string, at once."""
    psqls = (shutil.which("psql") or "psql", str(pg18_bindir() / "psql"))
    with ThreadPoolExecutor(3) as pool:
        runs = [
            (
                pool.submit(_psql, psqls[0], conninfo, home),
                pool.submit(_psql, psqls[1], conninfo, home),
                pool.submit(run_plugin, conninfo, "--json", *options),
            )
            for conninfo in conninfos
        ]
        judged = []
        for older, newer, checked in runs:
            document = json.loads(checked.result().stdout)
            (target,) = document["targets"]
            judged.append(Judged(older.result(), newer.result(), target))
    return judged


#: TCP keywords, and the socket option whose refusal fails libpq (None: it connects).
KEEPALIVES = {
    "keepalives_idle=0": "TCP_KEEPIDLE",
    "keepalives_idle=-1": "TCP_KEEPIDLE",
    "keepalives_idle=40000": "TCP_KEEPIDLE",
    "keepalives_idle=32767": None,
    "keepalives_idle=' 5 '": None,
    "keepalives_interval=0": "TCP_KEEPINTVL",
    "keepalives_interval=-3": "TCP_KEEPINTVL",
    "keepalives_count=0": "TCP_KEEPCNT",
    "keepalives_count=200": "TCP_KEEPCNT",
    "keepalives_count=127": None,
    # keepalives=0: libpq sets none of them.
    "keepalives=0 keepalives_idle=0 keepalives_count=0": None,
    "keepalives=2 keepalives_idle=0": "TCP_KEEPIDLE",
    "keepalives=-1 keepalives_count=0": "TCP_KEEPCNT",
    "tcp_user_timeout=-1": None,
    "tcp_user_timeout=2147483647": None,
}


def test_tcp_settings_the_kernel_refuses_fail_as_libpq_fails(
    server: Callable[[str], Cluster], ca: Pki, psql_home: Path
) -> None:
    port = server("valid").port
    base = (
        f"host=db.test hostaddr=127.0.0.1 port={port} sslmode=verify-full "
        f"sslrootcert={ca.root_file} user=postgres dbname=postgres"
    )
    judged = _judged([f"{base} {setting}" for setting in KEEPALIVES], psql_home)
    for (setting, option), (psql15, psql18, target) in zip(KEEPALIVES.items(), judged, strict=True):
        if option is None:
            assert psql15[0] and psql18[0], (setting, psql15, psql18)
            assert target["state"] == "OK", (setting, target)
            continue
        refusal = f"setsockopt({option}) failed: Invalid argument"
        # The oracles, pinned first.
        assert not psql15[0] and refusal in psql15[1], (setting, psql15)
        assert not psql18[0] and refusal in psql18[1], (setting, psql18)
        assert target["state"] == "CRITICAL", (setting, target)
        assert target["error"] == (
            f"libpq clients with this connection string cannot connect: {refusal} "
            f"(the kernel refuses {setting.split()[-1]})"
        ), target


@pytest.mark.parametrize("output", ["", "-v"])
def test_a_refused_tcp_setting_is_critical_in_the_status_line(
    server: Callable[[str], Cluster], ca: Pki, output: str
) -> None:
    port = server("valid").port
    result = run_plugin(
        f"host=db.test hostaddr=127.0.0.1 port={port} sslrootcert={ca.root_file} "
        "keepalives_count=0",
        *([output] if output else []),
    )
    assert result.returncode == 2, result.stdout
    assert result.status_line.startswith(
        f"PG_TLS CRITICAL - 127.0.0.1(db.test):{port}: libpq clients with this connection "
        "string cannot connect: setsockopt(TCP_KEEPCNT) failed: Invalid argument"
    ), result.stdout


def test_the_system_roots_without_the_name_are_refused_as_libpq_18_refuses(
    server: Callable[[str], Cluster], ca: Pki, psql_home: Path
) -> None:
    # SSL_CERT_FILE stands for a public CA: OpenSSL's default verify paths
    # read it, for psql and for the plugin. The certificate is issued to
    # another name, which only verify-full notices.
    env = {"SSL_CERT_FILE": str(ca.root_file)}
    port = server("wrong_name").port
    psql18 = str(pg18_bindir() / "psql")
    base = f"host=db.test hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres"
    for sslmode in ("verify-ca", "require"):
        connected, said = _psql_env(psql18, f"{base} sslmode={sslmode} sslrootcert=system", env)
        assert not connected and f'weak sslmode "{sslmode}" may not be used' in said, said
    # The oracles for the plugin's other answers: require without a root
    # file connects, verify-full with the system's roots does not.
    assert _psql_env(psql18, f"{base} sslmode=require", env, psql_home)[0]
    assert not _psql_env(psql18, f"{base} sslmode=verify-full sslrootcert=system", env)[0]

    options = ["-H", "127.0.0.1", "-p", str(port), "--servername", "db.test"]
    cases = [
        (["--sslmode", "verify-ca"], 3, 'weak sslmode "verify-ca" may not be used'),
        (["--sslmode", "verify-ca", "--sslrootcert", "system"], 3, 'weak sslmode "verify-ca"'),
        (["--sslmode", "require", "--sslrootcert", "system"], 3, 'weak sslmode "require"'),
        (["--sslmode", "require"], 0, "certificate expires in"),
        (["--sslmode", "require", "--sslrootcert="], 0, "certificate expires in"),
        ([], 2, "certificate is not valid for db.test"),
        # A string with a weaker sslmode than the options' explicit system roots.
        ([f"{base} sslmode=require", "--sslrootcert", "system"], 3, 'weak sslmode "require"'),
        ([f"{base} sslmode=verify-ca"], 3, 'weak sslmode "verify-ca"'),
        ([f"{base} sslmode=require"], 0, "certificate expires in"),
    ]
    with ThreadPoolExecutor(3) as pool:
        runs = [
            # A connection string names its own host; options need -H.
            pool.submit(run_plugin, *(args if "=" in args[0] else [*options, *args]), env=env)
            if args
            else pool.submit(run_plugin, *options, env=env)
            for args, _, _ in cases
        ]
        for (args, state, words), run in zip(cases, runs, strict=True):
            result = run.result()
            assert result.returncode == state, (args, result.stdout)
            assert words in result.status_line, (args, result.stdout)


def _psql_env(
    binary: str, conninfo: str, env: dict[str, str], home: Path | None = None
) -> tuple[bool, str]:
    done = subprocess.run(
        [binary, "-X", "-At", "-c", "select 1", conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home or "/nonexistent"),
            **env,
        },
        stdin=subprocess.DEVNULL,
    )
    connected = done.returncode == 0 and done.stdout.strip() == "1"
    return connected, "" if connected else done.stderr.strip()


# --- a connection string's own files, as libpq takes them --------------------------


class Row(NamedTuple):
    #: The string's file keywords ({crl}, {root}, ... filled in).
    files: str
    #: Does libpq (psql 15 and 18) connect, and if not, what does it say?
    connects: bool
    said: str | None
    #: The plugin's state for the string, and words of its status.
    state: str
    words: str


ROWS = {
    # libpq sends no client certificate, and never reads the key.
    "sslcert-missing": Row(
        "sslcert={dir}/no-such.crt sslkey={dir}/no-such.key", True, None, "OK", "chain trusted"
    ),
    # libpq fails before the handshake, whatever the server.
    "sslkey-group-readable": Row(
        "sslcert={dir}/client.crt sslkey={dir}/client-0644.key",
        False,
        "has group or world access",
        "CRITICAL",
        "libpq clients with this sslkey cannot connect",
    ),
    # OpenSSL's directory lookup finds nothing there: the file's CRLs decide.
    "sslcrldir-missing-beside-a-good-sslcrl": Row(
        "sslcrl={dir}/good.pem sslcrldir={dir}/no-such-dir", True, None, "OK", "chain trusted"
    ),
    "sslcrldir-missing-beside-a-revoking-sslcrl": Row(
        "sslcrl={dir}/revoking.pem sslcrldir={dir}/no-such-dir",
        False,
        "certificate verify failed",
        "CRITICAL",
        "certificate revoked",
    ),
    # OpenSSL cannot load the file: libpq turns revocation off, the directory too.
    "sslcrl-missing-beside-a-revoking-sslcrldir": Row(
        "sslcrl={dir}/no-such.pem sslcrldir={dir}/revoking-dir",
        True,
        None,
        "WARNING",
        "libpq cannot load sslcrl",
    ),
}


@pytest.fixture(scope="module")
def crl_files(workspace: Workspace, ca: Pki) -> Iterator[tuple[Cluster, Path]]:
    leaf = pki.make_leaf(ca.intermediate, dns=("db.test",))
    cluster = workspace.cluster([leaf, ca.intermediate], leaf, name="string-files").start()
    folder = workspace.new_dir("string-files")
    pki.write_crls(folder / "good.pem", pki.make_crl(ca.intermediate), pki.make_crl(ca.root))
    revoking = (pki.make_crl(ca.intermediate, [(leaf, None)]), pki.make_crl(ca.root))
    pki.write_crls(folder / "revoking.pem", *revoking)
    hashed = folder / "revoking-dir"
    hashed.mkdir()
    for index, crl in enumerate(revoking):
        pki.write_crls(hashed / f"crl{index}.pem", crl)
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
    client = pki.make_leaf(pki.make_root("Client CA"), dns=(), server_auth=False)
    pki.write_pem(folder / "client.crt", client)
    key = folder / "client-0644.key"
    key.write_bytes(client.key_pem)
    key.chmod(0o644)
    yield cluster, folder
    cluster.stop()


def test_a_string_s_own_files_are_taken_as_libpq_takes_them(
    crl_files: tuple[Cluster, Path], ca: Pki, psql_home: Path
) -> None:
    cluster, folder = crl_files
    base = (
        f"host=db.test hostaddr=127.0.0.1 port={cluster.port} sslmode=verify-full "
        f"sslrootcert={ca.root_file} user=postgres dbname=postgres"
    )
    strings = [f"{base} {row.files.format(dir=folder)}" for row in ROWS.values()]
    for (name, row), (psql15, psql18, target) in zip(
        ROWS.items(), _judged(strings, psql_home), strict=True
    ):
        for connected, said in (psql15, psql18):
            assert connected is row.connects, (name, said)
            assert row.said is None or row.said in said, (name, said)
        assert target["state"] == row.state, (name, target)
        assert row.words in str(target["summary"]), (name, target)


def test_an_option_s_file_that_is_missing_is_a_typo(
    crl_files: tuple[Cluster, Path], ca: Pki
) -> None:
    cluster, folder = crl_files
    options = ["-H", "127.0.0.1", "-p", str(cluster.port), "--servername", "db.test"]
    options += ["--sslrootcert", str(ca.root_file)]
    for extra, words in (
        (["--sslcert", f"{folder}/no-such.crt"], "cannot read client certificate file"),
        (["--sslcrl", f"{folder}/good.pem", "--sslcrldir", f"{folder}/no"], "CRL directory"),
        (["--sslcrl", f"{folder}/no-such.pem"], "cannot read CRL file"),
    ):
        result = run_plugin(*options, *extra)
        assert result.returncode == 3, result.stdout
        assert words in result.status_line, result.stdout


def test_a_string_s_missing_root_file_verifies_nothing_under_require(
    server: Callable[[str], Cluster], psql_home: Path
) -> None:
    port = server("self_signed").port
    base = f"host=db.test hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres"
    strings = [
        f"{base} sslmode=require sslrootcert=/no/such/root.crt",
        f"{base} sslmode=verify-full sslrootcert=/no/such/root.crt",
    ]
    (require, verify) = _judged(strings, psql_home)
    assert require.psql15[0] and require.psql18[0], require
    assert require.target["state"] == "OK", require.target
    for connected, said in (verify.psql15, verify.psql18):
        assert not connected and 'root certificate file "/no/such/root.crt" does not exist' in said
    assert verify.target["state"] == "UNKNOWN", verify.target
    assert "cannot read root certificate file /no/such/root.crt" in str(verify.target["error"])
