"""Real PostgreSQL clusters on loopback, started in hundredths of a second.

One ``initdb`` per workspace makes a template on tmpfs; each cluster is a
copy of it with its own port, certificate chain and settings. PostgreSQL
refuses to run as root, so under root the server runs as the ``postgres``
system user, in a directory that user can read.

Servers live no longer than the process that started them: each gets a
parent-death signal, a stopped cluster's directory is removed at once, and
a workspace left behind by a process that was killed is removed by the
next one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .pki import Issued

__all__ = [
    "PORT_ATTEMPTS",
    "Cluster",
    "Workspace",
    "find_bindir",
    "free_port",
    "lost_port",
    "owned_by_this_process",
    "port_taken",
    "served_leaf",
    "spawn_as",
]

_BASE_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "ssl": "on",
    "ssl_cert_file": "'server.crt'",
    "ssl_key_file": "'server.key'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "shared_buffers": "'16MB'",
    "max_connections": "20",
    "max_wal_senders": "0",
    "wal_level": "minimal",
    "log_connections": "on",
    "log_disconnections": "on",
    # The backend's PID on every line: wait_for_backends() reads it.
    "log_line_prefix": "'%m [%p] '",
    # Dynamic shared memory in the data directory, not loose in /dev/shm:
    # it goes with the cluster, however the server ended.
    "dynamic_shared_memory_type": "mmap",
    "logging_collector": "off",
    "log_min_messages": "info",
}

# Clients of the tests (psql as the oracle) get in without a password, but
# only over TLS: the plugin itself never authenticates.
_HBA = """\
hostssl all all 127.0.0.1/32 trust
hostssl all all ::1/128 trust
"""


def find_bindir(version: int | None = None) -> Path:
    """The directory with ``initdb`` and ``postgres``."""
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    root = Path("/usr/lib/postgresql")
    versions = sorted((int(p.name) for p in root.glob("*") if p.name.isdigit()), reverse=True)
    if version is not None:
        versions = [v for v in versions if v == version]
    for found in versions:
        bindir = root / str(found) / "bin"
        if (bindir / "postgres").exists():
            return bindir
    raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql)")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now; another program may take it before a server binds
    it, which :func:`lost_port` recognises in the server's log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# What PostgreSQL, pgbouncer, NRPE, unbound, Go's servers (Prometheus,
# node_exporter) and Python's log when their port is taken, lower-cased.
_BIND_FAILURES = ("could not bind", "address already in use", "bind failure")
#: Attempts at starting a server on a fresh port when its port was taken.
PORT_ATTEMPTS = 5


def lost_port(log: str) -> bool:
    """Whether a server's log says it could not bind its port."""
    lowered = log.lower()
    return any(failure in lowered for failure in _BIND_FAILURES)


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether another socket holds ``port``, for servers that do not log why they quit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


_OWNER = "owner.pid"
_PREFIX = "check_pg_tls-"


class Workspace:
    """A directory on tmpfs owned by the server's user, and a template cluster."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        shm = Path("/dev/shm")
        parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        _remove_orphans(Path(parent or tempfile.gettempdir()))
        self.path = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=parent))
        owned_by_this_process(self.path)
        self.user = _server_user()
        os.chmod(self.path, 0o755)
        self._chown(self.path)
        self._template: Path | None = None
        self._count = 0

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def template(self) -> Path:
        if self._template is None:
            target = self.path / "template"
            _run_as(
                self.user,
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(target),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
            )
            (target / "pg_hba.conf").write_text(_HBA)
            self._template = target
        return self._template

    def new_dir(self, name: str) -> Path:
        self._count += 1
        path = self.path / f"{name}-{self._count}"
        path.mkdir()
        self._chown(path)
        return path

    def cluster(
        self,
        chain: Sequence[Issued | x509.Certificate],
        key: Issued,
        settings: Mapping[str, str] | None = None,
        name: str = "pg",
        hba: str | None = None,
    ) -> Cluster:
        """A new, not yet started cluster serving ``chain`` (leaf first).

        ``hba`` replaces pg_hba.conf (default: TLS-only logins without password).
        """
        data = self.path / f"{name}-{self._count + 1}"
        self._count += 1
        subprocess.run(["cp", "-a", str(self.template()), str(data)], check=True)
        if hba is not None:
            (data / "pg_hba.conf").write_text(hba)
        cluster = Cluster(self, data, dict(settings or {}))
        cluster.install_certificate(chain, key)
        return cluster

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def owned_by_this_process(path: Path) -> None:
    """Mark ``path`` (named ``check_pg_tls-...`` in /dev/shm or the temporary
    directory) as this process's: once it is gone, the next workspace removes
    what it left behind."""
    (path / _OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot), or "" if it is gone.

    With the PID, it names a process for good: a PID alone may be reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return ""
    return stat.rpartition(b")")[2].split()[19].decode()


def _remove_orphans(parent: Path) -> None:
    """Remove workspaces whose owner process is gone (it was killed).

    Their servers went with the owner (parent-death signal); only files
    remain, tens of megabytes each on tmpfs. A workspace without an owner
    file, or whose owner still runs, belongs to someone else: left alone.
    """
    for path in parent.glob(f"{_PREFIX}*"):
        try:
            pid, started = (path / _OWNER).read_text().split()
        except (OSError, ValueError):
            continue
        if _start_time(int(pid)) != started:
            shutil.rmtree(path, ignore_errors=True)


class ServerProcess:
    """A server run in the foreground by a test: its process, its log, a way to stop it."""

    #: The signal that shuts the server down without ceremony.
    stop_signal = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = None
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self._stopped()
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            # Every server runs in a session of its own (spawn_as): a hung one
            # goes with all its workers, and nothing else.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._stopped()

    def _stopped(self) -> None:
        """Called once the server has stopped: a place to clean up."""


class Cluster(ServerProcess):
    """One PostgreSQL server. Settings go into postgresql.conf, so a reload
    picks up changed certificate files, as on a real server."""

    # Immediate shutdown: these clusters hold nothing worth a checkpoint.
    stop_signal = signal.SIGQUIT

    def __init__(self, workspace: Workspace, data: Path, settings: dict[str, str]) -> None:
        self.workspace = workspace
        self.data = data
        self.port = free_port()
        self.settings = {**_BASE_SETTINGS, "port": str(self.port), **settings}
        self.log_path = data.parent / f"{data.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_settings()

    def _write_settings(self) -> None:
        lines = [f"{k} = {v}" for k, v in self.settings.items()]
        (self.data / "postgresql.conf").write_text("\n".join(lines) + "\n")

    def install_certificate(self, chain: Sequence[Issued | x509.Certificate], key: Issued) -> None:
        pem = b"".join(
            (c.cert if isinstance(c, Issued) else c).public_bytes(serialization.Encoding.PEM)
            for c in chain
        )
        self.install_pem(pem, key.key_pem)

    def install_pem(self, chain_pem: bytes, key_pem: bytes) -> None:
        """Certificate file (leaf first) and key file as PEM, taken as they are."""
        self._write_private("server.crt", chain_pem)
        self._write_private("server.key", key_pem)

    def _write_private(self, name: str, data: bytes) -> None:
        # Written next to the old file and renamed over it, as certbot does.
        path = self.data / name
        fresh = self.data / f".{name}.new"
        fresh.write_bytes(data)
        os.chmod(fresh, 0o600)
        self.workspace._chown(fresh)
        os.replace(fresh, path)

    def set(self, **settings: str) -> None:
        self.settings.update(settings)
        self._write_settings()

    def start(self, timeout: float = 30, env: Mapping[str, str] | None = None) -> Cluster:
        """Start the server; ``env`` adds environment variables (e.g. OPENSSL_CONF).

        If another program took the port meanwhile, start on a new one.
        """
        user = self.workspace.user
        argv = [str(self.workspace.bindir / "postgres"), "-D", str(self.data)]
        for attempt in range(1, PORT_ATTEMPTS + 1):
            logged = len(self.log())
            with open(self.log_path, "ab") as log:
                self.process = spawn_as(user, argv, log, env, death_signal=self.stop_signal)
            try:
                self._wait_ready(timeout)
            except RuntimeError:
                if attempt == PORT_ATTEMPTS or not lost_port(self.log()[logged:]):
                    raise
                self.set(port=str(free_port()))
                self.port = int(self.settings["port"])
                continue
            return self
        raise AssertionError("unreachable")

    def _stopped(self) -> None:
        # ~40 MB of tmpfs each: given back now, not when the whole run ends.
        # The log, next to the data directory, stays.
        shutil.rmtree(self.data, ignore_errors=True)

    def wait_for_backends(self, timeout: float = 10) -> None:
        """Return once every backend the log mentions has exited.

        A backend writes its last lines to the log as it exits, after the
        client has gone: a test that reads the log must wait for this.
        """
        end = time.monotonic() + timeout
        pids = set(re.findall(r"\[(\d+)\] LOG:  connection received", self.log()))
        while pids:
            pids = {pid for pid in pids if _running(int(pid))}
            if pids and time.monotonic() > end:
                raise TimeoutError(f"backends {sorted(pids)} still running after {timeout} s")
            time.sleep(0.005)

    def _wait_ready(self, timeout: float) -> None:
        # Ready means postmaster.pid's status line says so for our process;
        # answering connections alone is not enough (it may still be starting).
        assert self.process is not None
        pidfile = self.data / "postmaster.pid"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.log()}")
            try:
                lines = pidfile.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if (
                len(lines) >= 8
                and lines[0] == str(self.process.pid)
                and lines[7].strip() == "ready"
            ):
                return
            time.sleep(0.005)
        raise TimeoutError(f"postgres not ready after {timeout} s:\n{self.log()}")

    def reload(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGHUP)

    def set_hba(self, text: str, timeout: float = 10) -> None:
        """Replace pg_hba.conf and reload; return once new connections get the new rules.

        The postmaster logs "received SIGHUP" as it starts reloading and
        forks no backend until it has read the files again: a connection
        made after that line is judged by the new rules.
        """
        (self.data / "pg_hba.conf").write_text(text)
        before = self.log().count("received SIGHUP")
        self.reload()
        end = time.monotonic() + timeout
        while self.log().count("received SIGHUP") == before:
            if time.monotonic() > end:
                raise TimeoutError(f"no reload after {timeout} s:\n{self.log()}")
            time.sleep(0.002)

    def wait_served(
        self, accept: Callable[[bytes | ssl.SSLError], bool], timeout: float = 10
    ) -> None:
        """Poll until the server presents what ``accept`` wants (after a reload, say).

        ``accept`` gets the leaf (DER) of a handshake without verification, or
        the TLS error that ended it. A reload with a certificate the server
        cannot load keeps the old one: the deadline then fails with the log.
        """
        end = time.monotonic() + timeout
        seen: bytes | OSError | None = None
        while time.monotonic() < end:
            try:
                seen = served_leaf(self.port)
            except OSError as exc:  # ssl.SSLError included
                seen = exc
            if isinstance(seen, bytes | ssl.SSLError) and accept(seen):
                return
            time.sleep(0.002)
        shown = f"a certificate {seen[:32].hex()}..." if isinstance(seen, bytes) else repr(seen)
        raise TimeoutError(
            f"server on port {self.port} still presents {shown} after {timeout} s:\n{self.log()}"
        )


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(os.environ.get("PG_USER", "postgres"))


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except OSError:
        return False
    return state != b"Z"


def spawn_as(
    user: pwd.struct_passwd | None,
    argv: list[str],
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as ``user``, in a session of its own, tied to this process.

    When the thread that started it ends, whatever the reason (even
    SIGKILL), the program gets ``death_signal``: ``setpriv --pdeathsig``
    sets that and execs the program, so the PID is still the program's
    own (the postmaster's, for PostgreSQL).
    """
    signame = signal.Signals(death_signal).name.removeprefix("SIG")
    return subprocess.Popen(
        [_setpriv(), f"--pdeathsig={signame}", "--", *argv],
        env={**os.environ, **env} if env else None,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd="/",
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
    )


def _setpriv() -> str:
    found = shutil.which("setpriv", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin"]))
    if found is None:
        raise FileNotFoundError("setpriv not found: apt-get install util-linux")
    return found


def _run_as(user: pwd.struct_passwd | None, argv: list[str]) -> None:
    with tempfile.TemporaryFile() as log:
        if spawn_as(user, argv, log).wait() != 0:
            log.seek(0)
            raise RuntimeError(f"{argv[0]} failed: {log.read().decode(errors='replace')}")


_WEAK_OPENSSL_CONF = """\
openssl_conf = check_pg_tls_tests
[check_pg_tls_tests]
ssl_conf = ssl_section
[ssl_section]
system_default = system_default_section
[system_default_section]
MinProtocol = TLSv1
CipherString = ALL:@SECLEVEL=0
"""


def weak_openssl_conf(workspace: Workspace) -> dict[str, str]:
    """Environment for a server that must load and offer weak crypto.

    PostgreSQL loads its certificate before it applies ssl_ciphers, at the
    system's security level (Debian: 2), which refuses SHA-1 signatures and
    1024-bit RSA keys; servers that still have them run with an older or
    laxer OpenSSL configuration, which this recreates.
    """
    path = workspace.path / "openssl-weak.cnf"
    if not path.exists():
        path.write_text(_WEAK_OPENSSL_CONF)
        os.chmod(path, 0o644)
    return {"OPENSSL_CONF": str(path)}


def served_leaf(port: int, host: str = "127.0.0.1", timeout: float = 2) -> bytes:
    """The leaf certificate (DER) a PostgreSQL server presents, unverified.

    Raises ssl.SSLError when the handshake fails, OSError when the server
    does not answer or does not offer TLS.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Weak test certificates must still be seen.
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
        if sock.recv(1) != b"S":
            raise ConnectionRefusedError("server does not offer TLS")
        with context.wrap_socket(sock) as tls:
            leaf = tls.getpeercert(binary_form=True)
            with contextlib.suppress(OSError, ValueError):
                tls.unwrap()
    if not leaf:
        raise ssl.SSLError("no certificate presented")
    return leaf
