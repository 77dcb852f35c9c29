"""The test servers come and go with whoever started them.

A port taken between choosing it and binding it costs a retry, not a
failed test; a stopped cluster gives its memory back; a test run or demo
that is killed, or stopped with a signal, leaves no server running and no
directory behind.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import dnslab, pki
from testbed.monitoring import Nrpe, check_nrpe, shared_dir
from testbed.pgbouncer import PgBouncer
from testbed.pgcluster import Workspace, lost_port
from testbed.prometheus import NodeExporter

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def chain() -> tuple[pki.Issued, pki.Issued]:
    inter = pki.make_intermediate(pki.make_root())
    return pki.make_leaf(inter), inter


def _squat(port: int, host: str = "127.0.0.1") -> socket.socket:
    """Take ``port`` the way another program might, between choice and bind."""
    sock = socket.socket(socket.AF_INET)
    sock.bind((host, port))
    sock.listen(1)
    return sock


def _answers_tls(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(bytes.fromhex("0000000804d2162f"))
        return sock.recv(1) == b"S"


def test_cluster_whose_port_was_taken_starts_on_another(
    workspace: Workspace, chain: tuple[pki.Issued, pki.Issued]
) -> None:
    leaf, inter = chain
    cluster = workspace.cluster([leaf, inter], leaf)
    taken = cluster.port
    with _squat(taken):
        cluster.start()
        try:
            assert cluster.port != taken
            assert _answers_tls(cluster.port)
        finally:
            cluster.stop()


def test_pgbouncer_whose_port_was_taken_starts_on_another(
    workspace: Workspace, chain: tuple[pki.Issued, pki.Issued]
) -> None:
    leaf, inter = chain
    cluster = workspace.cluster([leaf, inter], leaf).start()
    try:
        bouncer = PgBouncer(cluster, [leaf, inter], leaf)
        taken = bouncer.port
        with _squat(taken), bouncer:
            assert bouncer.port != taken
            assert _answers_tls(bouncer.port)
            assert f"listening on 127.0.0.1:{bouncer.port}" in bouncer.log()
    finally:
        cluster.stop()


def test_unbound_whose_port_was_taken_starts_on_another(workspace: Workspace) -> None:
    zone = dnslab.make_zone("taken.test", ["www IN A 127.0.0.1"])
    resolver = dnslab.Unbound(workspace.new_dir("dns-taken"), [zone])
    taken = resolver.port
    # unbound listens on TCP too: another program holds that side.
    with _squat(taken):
        resolver.start()
        try:
            assert resolver.port != taken
            answer = resolver.query("www.taken.test", "A")
            assert [str(r) for rrset in answer.answer for r in rrset] == ["127.0.0.1"]
            assert "Address already in use" in resolver.log()
        finally:
            resolver.stop()


def test_node_exporter_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    (tmp_path / "textfiles").mkdir()
    daemon = NodeExporter(tmp_path, tmp_path / "textfiles")
    taken = daemon.port
    with _squat(taken):
        daemon.start()
        try:
            assert daemon.port != taken
            assert "node_exporter_build_info" in daemon.metrics()
            assert lost_port(daemon.log())
        finally:
            daemon.stop()


def test_stopped_cluster_gives_its_directory_back(
    workspace: Workspace, chain: tuple[pki.Issued, pki.Issued]
) -> None:
    leaf, inter = chain
    cluster = workspace.cluster([leaf, inter], leaf).start()
    assert (cluster.data / "postmaster.pid").exists()
    cluster.stop()
    assert not cluster.data.exists()
    # The log stays for whoever wants to read what happened.
    assert "database system is shut down" in cluster.log()


def _postmasters_under(path: Path) -> list[int]:
    """PIDs of postgres processes whose data directory is under ``path``,
    children of another such process left out.

    A backend or auxiliary process the postmaster has just forked shows the
    postmaster's command line until it sets its own title: on a busy
    machine, long enough to be seen. Left out as children, they still count
    once their postmaster is gone (they would belong to init then).
    """
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z" and any(arg.startswith(str(path).encode()) for arg in argv[1:]):
            parents[int(entry.name)] = int(fields[1])
    return sorted(pid for pid, parent in parents.items() if parent not in parents)


def _wait_until(condition, timeout: float = 20) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


@pytest.fixture
def killed() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


_HOLDER = """
import sys, time
from testbed import pki
from testbed.pgcluster import Workspace
space = Workspace()
inter = pki.make_intermediate(pki.make_root())
leaf = pki.make_leaf(inter)
cluster = space.cluster([leaf, inter], leaf).start()
print(space.path, cluster.process.pid, flush=True)
time.sleep(600)
"""


def test_servers_die_with_a_killed_test_process(killed: list[subprocess.Popen[str]]) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    killed.append(holder)
    assert holder.stdout is not None
    path_text, pid_text = holder.stdout.readline().split()
    path, postmaster = Path(path_text), int(pid_text)
    assert _postmasters_under(path) == [postmaster]
    holder.kill()  # as a CI runner's timeout or the OOM killer would
    holder.wait()
    assert _wait_until(lambda: not _postmasters_under(path)), _postmasters_under(path)
    # Nobody was left to remove the directory: the next workspace does.
    assert path.exists()
    Workspace().cleanup()
    assert not path.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL])
def test_demo_keep_stopped_by_a_signal_leaves_nothing(
    killed: list[subprocess.Popen[str]], sig: signal.Signals
) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "testbed.demo", "--keep"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed.append(demo)
    assert demo.stdout is not None
    output = []
    for line in demo.stdout:
        output.append(line)
        if line.startswith("Servers keep running"):
            break
    found = re.search(r"trusted root: (\S+)/root\.crt", "".join(output))
    assert found, "".join(output)
    path = Path(found.group(1))
    assert len(_postmasters_under(path)) == 4
    demo.send_signal(sig)
    rest = demo.communicate(timeout=30)[0]
    assert _wait_until(lambda: not _postmasters_under(path)), _postmasters_under(path)
    if sig == signal.SIGKILL:
        Workspace().cleanup()  # a killed demo cannot clean up: the next run does
    else:
        assert demo.returncode == 0, rest
    assert not path.exists()


def test_nrpe_whose_port_was_taken_starts_on_another() -> None:
    tree = shared_dir("check_pg_tls-nrpe-")
    commands = tree / "commands.cfg"
    commands.write_text("")
    daemon = Nrpe(tree, commands)
    taken = daemon.port
    try:
        with _squat(taken):
            daemon.start()
            assert daemon.port != taken
            assert check_nrpe(daemon.port).returncode == 0
    finally:
        daemon.stop()
        shutil.rmtree(tree, ignore_errors=True)
