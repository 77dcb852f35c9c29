"""Real PostgreSQL clusters on loopback, started in hundredths of a second.

One ``initdb`` per workspace makes a template on tmpfs; each cluster is a
copy of it with its own port, certificate chain and settings. PostgreSQL
refuses to run as root, so under root the server runs as the ``postgres``
system user, in a directory that user can read.
"""

from __future__ import annotations

import contextlib
import os
import pwd
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

__all__ = ["Cluster", "Workspace", "find_bindir", "free_port", "served_leaf"]

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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Workspace:
    """A directory on tmpfs owned by the server's user, and a template cluster."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        shm = Path("/dev/shm")
        parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.path = Path(tempfile.mkdtemp(prefix="check_pg_tls-", dir=parent))
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
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            # Every server runs in a session of its own (spawn_as): a hung one
            # goes with all its workers, and nothing else.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


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
        """Start the server; ``env`` adds environment variables (e.g. OPENSSL_CONF)."""
        user = self.workspace.user
        with open(self.log_path, "ab") as log:
            self.process = spawn_as(
                user, [str(self.workspace.bindir / "postgres"), "-D", str(self.data)], log, env
            )
        self._wait_ready(timeout)
        return self

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


def spawn_as(
    user: pwd.struct_passwd | None,
    argv: list[str],
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    # The child execs the program directly, so the PID is the postmaster's.
    return subprocess.Popen(
        argv,
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
