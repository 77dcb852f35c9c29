"""Real servers for the tests: PostgreSQL clusters with test certificates.

Clusters are started on first use and shared by the whole session; each
scenario gets its own cluster because one PostgreSQL serves one chain.
"""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed import pki
from testbed.monitoring import RUN_DIR_ENV, run_dir
from testbed.pgcluster import Cluster, Workspace, find_bindir

pytest_plugins = ["tests.no_skips", "tests.serial"]

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs the plugin as a process thousands of times. Where
    # PYTHONDONTWRITEBYTECODE is set (as it may be in CI), none of them
    # would find the package's bytecode and each would compile every module
    # again: about 30 ms of CPU a run, a fifth of its start-up. A user's
    # installation has its bytecode (pip compiles); so does this tree now.
    if hasattr(config, "workerinput"):
        os.environ[RUN_DIR_ENV] = config.workerinput[RUN_DIR_ENV]
        return
    for package in ("check_pg_tls", "testbed"):
        compileall.compile_dir(REPO / package, quiet=1)
    # One directory for the whole run, its xdist workers included: the
    # plugin installed once (testbed.monitoring.installed_plugin).
    config.stash[_RUN_DIR] = path = run_dir()
    os.environ[RUN_DIR_ENV] = str(path)


_RUN_DIR = pytest.StashKey[Path]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist's controller, for each worker it starts."""
    node.workerinput[RUN_DIR_ENV] = str(node.config.stash[_RUN_DIR])


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_RUN_DIR, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def _psql_program() -> str:
    """The oracle's psql: the newest installed PostgreSQL's, as Debian's
    /usr/bin/psql (pg_wrapper, a Perl script) would pick it, run directly:
    the wrapper costs every run about 25 ms of CPU before psql starts.

    The wrapper may also set PGHOST and PGPORT for a local cluster it
    finds, which matters only to a connection string without a host:
    tests/test_conninfo_psql.py runs the wrapper, on purpose.
    """
    try:
        direct = find_bindir() / "psql"
    except FileNotFoundError:
        direct = None
    if direct is not None and os.access(direct, os.X_OK):
        return str(direct)
    return shutil.which("psql") or "psql"


#: The psql (PostgreSQL 15's libpq) every oracle runs.
PSQL = _psql_program()


@dataclass(frozen=True)
class Run:
    """What a user sees: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def status_line(self) -> str:
        return self.stdout.splitlines()[0] if self.stdout else ""

    @property
    def perfdata(self) -> dict[str, str]:
        _, _, perf = self.status_line.partition(" | ")
        return dict(item.split("=", 1) for item in perf.split())


def plugin_argv() -> list[str]:
    """The installed console script when there is one, else ``python -m``."""
    script = Path(sys.executable).parent / "check_pg_tls"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "check_pg_tls"]


def run_plugin(
    *args: str,
    guard: float = 60,
    prefix: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Run:
    """Run the plugin; ``env`` adds environment variables."""
    # ``guard`` only stops a hung test run; it is not what a test asserts.
    done = subprocess.run(
        [*prefix, *plugin_argv(), *args],
        capture_output=True,
        text=True,
        timeout=guard,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env} if env else None,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def check_local(port: int, root_file: Path, *args: str, servername: str | None = None) -> Run:
    """The plugin against a test server on 127.0.0.1, trusting the test root."""
    name = ["--servername", servername] if servername else []
    return run_plugin(
        "-H", "127.0.0.1", "-p", str(port), *name, "--sslrootcert", str(root_file), *args
    )


@dataclass
class Pki:
    root: pki.Issued
    intermediate: pki.Issued
    other_root: pki.Issued
    other_intermediate: pki.Issued
    dir: Path

    @property
    def root_file(self) -> Path:
        return self.dir / "root.crt"


@pytest.fixture(scope="session")
def workspace() -> Iterator[Workspace]:
    space = Workspace()
    yield space
    space.cleanup()


@pytest.fixture(scope="session")
def ca(workspace: Workspace) -> Pki:
    root = pki.make_root()
    other_root = pki.make_root("Some Other Root")
    made = Pki(
        root=root,
        intermediate=pki.make_intermediate(root),
        other_root=other_root,
        other_intermediate=pki.make_intermediate(other_root, "Some Other Intermediate"),
        dir=workspace.new_dir("pki"),
    )
    pki.write_pem(made.root_file, root)
    return made


def _scenarios(ca: Pki) -> dict[str, tuple[list[pki.Issued], pki.Issued]]:
    """Each scenario: the chain the server sends (leaf first) and its key."""
    inter = ca.intermediate

    def leaf_chain(**kw: object) -> tuple[list[pki.Issued], pki.Issued]:
        leaf = pki.make_leaf(inter, **kw)  # type: ignore[arg-type]
        return [leaf, inter], leaf

    short_inter = pki.make_intermediate(ca.root, "Short-lived Intermediate", days_after=10.5)
    short_leaf = pki.make_leaf(short_inter)
    missing = pki.make_leaf(inter)
    snakeoil = pki.make_leaf(None, dns=("db.test",), common_name="db.test")
    unknown = pki.make_leaf(ca.other_intermediate)
    return {
        "valid": leaf_chain(dns=("db.test", "db2.test"), ips=("127.0.0.1", "::1")),
        "quiet": leaf_chain(),
        "expiring_warn": leaf_chain(days_after=18.5),
        "expiring_crit": leaf_chain(days_after=10.5),
        "expired": leaf_chain(days_before=100, days_after=-2),
        "not_yet_valid": leaf_chain(days_before=-3, days_after=90),
        "wrong_name": leaf_chain(dns=("ip-10-1-2-3.internal",)),
        "wildcard": leaf_chain(dns=("*.db.test",)),
        "ip_only": leaf_chain(dns=(), ips=("127.0.0.1",)),
        "cn_only": leaf_chain(dns=(), common_name="db.test"),
        "self_signed": ([snakeoil], snakeoil),
        "unknown_ca": ([unknown, ca.other_intermediate], unknown),
        "missing_intermediate": ([missing], missing),
        "intermediate_expiring": ([short_leaf, short_inter], short_leaf),
    }


@pytest.fixture(scope="session")
def server(workspace: Workspace, ca: Pki) -> Iterator[Callable[[str], Cluster]]:
    """``server(name)``: the running cluster of a scenario, started on first use."""
    chains = _scenarios(ca)
    started: dict[str, Cluster] = {}

    def get(name: str) -> Cluster:
        if name not in started:
            chain, key = chains[name]
            settings = {"listen_addresses": "'127.0.0.1,::1'"} if name == "valid" else {}
            started[name] = workspace.cluster(chain, key, settings, name=name).start()
        return started[name]

    yield get
    for cluster in started.values():
        cluster.stop()


@pytest.fixture(scope="session")
def psql_home(workspace: Workspace) -> Path:
    # An empty HOME: no ~/.postgresql/root.crt or client certificate to change libpq's mind.
    return workspace.new_dir("home")


def psql_connects(
    cluster: Cluster,
    home: Path,
    host: str,
    sslmode: str,
    sslrootcert: str | None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> bool:
    """The oracle: does libpq (psql) with these settings connect?

    ``extra``: more conninfo settings; ``env``: more environment variables.
    """
    return psql_attempt(cluster, home, host, sslmode, sslrootcert, extra, env).connected


@dataclass(frozen=True)
class PsqlAttempt:
    connected: bool
    #: What psql printed on failure (libpq's reason), else "".
    error: str


def psql_attempt(
    cluster: Cluster,
    home: Path,
    host: str,
    sslmode: str,
    sslrootcert: str | None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> PsqlAttempt:
    """psql connects with ``host`` as the name to verify and 127.0.0.1 as the address."""
    conninfo = [
        f"host={host}",
        "hostaddr=127.0.0.1",
        f"port={cluster.port}",
        f"sslmode={sslmode}",
        "user=postgres",
        "dbname=postgres",
        "connect_timeout=10",
    ]
    # libpq reads a root file only if it exists; a missing one means "no roots".
    conninfo.append(f"sslrootcert={sslrootcert or home / 'no-such-root.crt'}")
    conninfo += extra
    return psql_with(" ".join(conninfo), home, env)


def psql_with(conninfo: str, home: Path, env: dict[str, str] | None = None) -> PsqlAttempt:
    """psql with exactly this connection string (keywords or a URI), HOME set to ``home``."""
    done = subprocess.run(
        [PSQL, "-X", "-At", "-c", "select 1", conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    connected = done.returncode == 0 and done.stdout.strip() == "1"
    return PsqlAttempt(connected, "" if connected else done.stderr.strip())


@pytest.fixture(scope="session")
def pg18_workspace() -> Iterator[Workspace]:
    """A workspace of PostgreSQL 18 clusters, its template made once per session."""
    from testbed.pg18 import pg18_bindir

    space = Workspace(bindir=pg18_bindir())
    yield space
    space.cleanup()
