"""pgbouncer on loopback in front of a test cluster.

pgbouncer answers the SSLRequest itself: ``S`` and its own certificate chain
(``client_tls_cert_file``) with ``client_tls_sslmode`` other than
``disable``, else ``N``. It refuses to run as root, so under root it runs in
the foreground as the cluster's user (``postgres``), from a directory of the
cluster's workspace that user can read.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .pgcluster import PORT_ATTEMPTS, Cluster, ServerProcess, free_port, lost_port, spawn_as
from .pki import Issued

__all__ = ["PgBouncer", "find_pgbouncer"]


def find_pgbouncer() -> Path:
    """The pgbouncer binary (``PGBOUNCER`` in the environment wins)."""
    env = os.environ.get("PGBOUNCER")
    if env:
        return Path(env)
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    found = shutil.which("pgbouncer") or shutil.which(
        "pgbouncer", path="/usr/sbin:/usr/local/sbin:/usr/bin"
    )
    if found is None:
        raise FileNotFoundError("pgbouncer not found (apt-get install pgbouncer)")
    return Path(found)


class PgBouncer(ServerProcess):
    """One pgbouncer, listening on ``host:port``, pooling for ``cluster``.

    With ``chain`` and ``key`` it offers TLS to clients
    (``client_tls_sslmode=require``, the whole chain, leaf first, in
    ``client_tls_cert_file``); without, TLS is off and it answers ``N``.
    ``settings`` are extra or overriding ``[pgbouncer]`` settings. Towards
    the cluster it uses TLS (the test clusters accept only ``hostssl``), and
    the user ``postgres`` gets in without a password, so psql can connect
    through it; ``password`` is the one pgbouncer itself asks for when its
    ``auth_type`` wants one.
    """

    def __init__(
        self,
        cluster: Cluster,
        chain: Sequence[Issued | x509.Certificate] | None = None,
        key: Issued | None = None,
        settings: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        name: str = "pgbouncer",
        password: str = "",
    ) -> None:
        if (chain is None) != (key is None):
            raise ValueError("give both chain and key, or neither")
        self.cluster = cluster
        self.host = host
        self.tls = chain is not None
        self.port = free_port(host)
        workspace = cluster.workspace
        self.user = workspace.user
        self.dir = workspace.new_dir(name)
        self.config_path = self.dir / "pgbouncer.ini"
        self.log_path = self.dir / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

        self._write("userlist.txt", f'"postgres" "{password}"\n'.encode(), 0o600)
        backend = cluster.settings["listen_addresses"].strip("'").split(",")[0].strip()
        settings_out = {
            "listen_addr": host,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.dir / "userlist.txt"),
            "pool_mode": "session",
            "server_tls_sslmode": "require",
            "client_tls_sslmode": "disable",
            "log_connections": "1",
            "log_disconnections": "1",
        }
        if chain is not None and key is not None:
            pem = b"".join(
                (c.cert if isinstance(c, Issued) else c).public_bytes(serialization.Encoding.PEM)
                for c in chain
            )
            self._write("server.crt", pem, 0o644)
            self._write("server.key", key.key_pem, 0o600)
            settings_out.update(
                client_tls_sslmode="require",
                client_tls_cert_file=str(self.dir / "server.crt"),
                client_tls_key_file=str(self.dir / "server.key"),
            )
        settings_out.update(settings or {})
        self._databases = f"* = host={backend} port={cluster.port}"
        self._settings = settings_out
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            "[databases]",
            self._databases,
            "",
            "[pgbouncer]",
            *(f"{k} = {v}" for k, v in self._settings.items()),
        ]
        self._write("pgbouncer.ini", ("\n".join(lines) + "\n").encode(), 0o644)

    def _write(self, name: str, data: bytes, mode: int) -> None:
        path = self.dir / name
        path.write_bytes(data)
        os.chmod(path, mode)
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def start(self, timeout: float = 10) -> PgBouncer:
        """Start in the foreground; return once it listens on its port.

        If another program took the port meanwhile, start on a new one.
        """
        for attempt in range(1, PORT_ATTEMPTS + 1):
            logged = len(self.log())
            with open(self.log_path, "ab") as log:
                self.process = spawn_as(
                    self.user, [str(find_pgbouncer()), str(self.config_path)], log
                )
            try:
                self._wait_ready(timeout, logged)
            except RuntimeError:
                if attempt == PORT_ATTEMPTS or not lost_port(self.log()[logged:]):
                    raise
                self.port = free_port(self.host)
                self._settings["listen_port"] = str(self.port)
                self._write_config()
                continue
            return self
        raise AssertionError("unreachable")

    # SIGTERM closes everything at once (SIGINT would wait for clients).
    stop_signal = signal.SIGTERM

    def _wait_ready(self, timeout: float, logged: int) -> None:
        # Its own log line, not a connection: a connection would also succeed
        # to another program that took the port.
        assert self.process is not None
        host = f"[{self.host}]" if ":" in self.host else self.host
        listening = f"listening on {host}:{self.port}"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {self.process.returncode}:\n{self.log()}"
                )
            if listening in self.log()[logged:]:
                return
            time.sleep(0.002)
        self.stop()
        raise TimeoutError(f"pgbouncer not listening after {timeout} s:\n{self.log()}")

    def __enter__(self) -> PgBouncer:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
