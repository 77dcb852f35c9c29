"""A client key file's mode, judged by libpq's rule: it depends on who owns the file.

libpq (fe-secure-openssl.c, the same in 15 and 18) refuses an ``sslkey``
with group or world access, except that a file owned by root may be
readable by its group (0640), whoever runs the client. Each case below is
set up for real (owner, group, mode), psql 15 and psql 18 are run as the
user the plugin runs as, and the plugin's finding must say what they did.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from testbed import pki
from testbed.monitoring import installed_plugin
from testbed.pg18 import pg18_bindir
from testbed.pgcluster import Cluster, Workspace

from .conftest import PSQL, plugin_argv


class Case(NamedTuple):
    owner: str
    group: str
    mode: int
    #: Who runs psql and the plugin.
    runner: str
    #: Does libpq take the key?
    taken: bool


CASES = [
    Case("root", "root", 0o600, "root", True),
    Case("root", "root", 0o400, "root", True),
    Case("root", "root", 0o640, "root", True),
    Case("root", "root", 0o700, "root", True),
    Case("root", "root", 0o644, "root", False),
    Case("root", "root", 0o660, "root", False),
    Case("root", "root", 0o650, "root", False),
    Case("root", "root", 0o604, "root", False),
    Case("postgres", "postgres", 0o600, "root", True),
    Case("postgres", "postgres", 0o640, "root", False),
    Case("postgres", "postgres", 0o604, "root", False),
    Case("postgres", "postgres", 0o600, "postgres", True),
    Case("postgres", "postgres", 0o640, "postgres", False),
    Case("root", "postgres", 0o640, "postgres", True),
    Case("root", "postgres", 0o660, "postgres", False),
]


def _id(case: Case) -> str:
    return f"{case.owner}.{case.group}-{case.mode:04o}-as-{case.runner}"


class Files(NamedTuple):
    folder: Path
    cert: Path
    key_pem: bytes


@pytest.fixture(scope="module")
def files(workspace: Workspace) -> Files:
    if os.geteuid() != 0:
        pytest.fail("files of other owners need root: run the tests as root, as CI does")
    issued = pki.make_leaf(pki.make_root("Client CA"), dns=(), server_auth=False)
    folder = workspace.new_dir("client-keys")
    folder.chmod(0o755)
    cert = pki.write_pem(folder / "client.crt", issued)
    os.chmod(cert, 0o644)
    return Files(folder, cert, issued.key_pem)


def _as(user: str) -> dict[str, object]:
    """subprocess arguments that run a program as ``user``, with its groups."""
    if user == "root":
        return {}
    entry = pwd.getpwnam(user)
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": os.getgrouplist(user, entry.pw_gid),
    }


def _psql(binary: str, conninfo: str, runner: str, home: Path) -> tuple[bool, str]:
    done = subprocess.run(
        [binary, "-X", "-At", "-c", "select 1", conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
        stdin=subprocess.DEVNULL,
        cwd="/",
        **_as(runner),  # type: ignore[call-overload]
    )
    return done.returncode == 0 and done.stdout.strip() == "1", done.stderr


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_client_key_mode_is_judged_as_libpq_judges_it(
    server: Callable[[str], Cluster], files: Files, psql_home: Path, case: Case
) -> None:
    port = server("valid").port
    key = files.folder / f"{_id(case)}.key"
    key.write_bytes(files.key_pem)
    os.chown(key, pwd.getpwnam(case.owner).pw_uid, pwd.getpwnam(case.group).pw_gid)
    os.chmod(key, case.mode)
    conninfo = (
        f"host=127.0.0.1 port={port} sslmode=require sslcert={files.cert} sslkey={key} "
        "user=postgres dbname=postgres"
    )
    plugin = plugin_argv() if case.runner == "root" else [str(installed_plugin())]
    with ThreadPoolExecutor(3) as pool:
        psqls = [
            pool.submit(_psql, psql, conninfo, case.runner, psql_home)
            for psql in (PSQL, str(pg18_bindir() / "psql"))
        ]
        argv = [*plugin, "-H", "127.0.0.1", "-p", str(port), "--sslmode", "require"]
        argv += ["--sslcert", str(files.cert), "--sslkey", str(key), "--json"]
        checked = pool.submit(_run, argv, case.runner)
        for psql in psqls:
            connected, said = psql.result()
            assert connected is case.taken, said
            assert case.taken or "has group or world access" in said, said
        (target,) = json.loads(checked.result())["targets"]
    finding = target["checks"]["client_key_permissions"]
    assert finding["ok"] is case.taken, finding
    if not case.taken:
        assert f"mode {case.mode:04o}" in finding["message"]
        # psql fails before it connects: no such client connects.
        assert (finding["severity"], target["state"]) == ("critical", "CRITICAL"), finding


def _run(argv: list[str], runner: str) -> str:
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd="/",
        **_as(runner),  # type: ignore[call-overload]
    )
    return str(done.stdout)
