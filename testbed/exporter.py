"""pg_tls_exporter as a test runs it: a real process on a free port of 127.0.0.1.

Started with the installed console script, tied to the test process
(parent-death signal), its log kept beside its configuration. Readiness is
polled over HTTP with a deadline; HTTP requests go through a small client
that returns what a scraper sees (status, headers, body), TLS and basic
authentication included, never through a proxy.
"""

from __future__ import annotations

import base64
import http.client
import os
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .pgcluster import PORT_ATTEMPTS, ServerProcess, free_port, lost_port, spawn_as

__all__ = ["Answer", "ExporterProcess", "exporter_argv"]


def exporter_argv() -> list[str]:
    """The installed console script when there is one, else ``python -m``."""
    script = Path(sys.executable).parent / "pg_tls_exporter"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "check_pg_tls.exporter"]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str


class ExporterProcess(ServerProcess):
    """One exporter with ``config`` (a file path), listening on 127.0.0.1."""

    def __init__(
        self,
        path: Path,
        config: Path,
        *args: str,
        web_config: Path | None = None,
        tls: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        listen: str | None = None,
    ) -> None:
        self.path = path
        self.config = config
        self.args = args
        self.web_config = web_config
        #: The client side for requests made by this helper (HTTPS when given).
        self.tls = tls
        self.auth = auth
        self.port = free_port()
        #: ``--web.listen-address``: by default 127.0.0.1 and the free port.
        self.listen = listen or f"127.0.0.1:{self.port}"
        self._listen_given = listen is not None
        if listen is not None:
            self.port = int(listen.rpartition(":")[2])
        self.log_path = path / f"exporter-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        web = [f"--web.config.file={self.web_config}"] if self.web_config else []
        return [
            *exporter_argv(),
            f"--config.file={self.config}",
            f"--web.listen-address={self.listen}",
            *web,
            *self.args,
        ]

    def start(self, timeout: float = 30) -> ExporterProcess:
        """Start; if another program took the port we chose, start on a new one."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            logged = len(self.log())
            with open(self.log_path, "ab") as log:
                self.process = spawn_as(None, self.argv(), log)
            try:
                return self._wait_ready(timeout)
            except RuntimeError:
                if (
                    self._listen_given
                    or attempt == PORT_ATTEMPTS
                    or not lost_port(self.log()[logged:])
                ):
                    raise
                self.port = free_port()
                self.listen = f"127.0.0.1:{self.port}"
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> ExporterProcess:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pg_tls_exporter exited:\n{self.log()}")
            try:
                if self.get("/-/healthy", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"not ready within {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
        auth: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> Answer:
        """One request on a new connection; ``auth`` and ``tls`` override the helper's."""
        context = tls or self.tls
        conn: http.client.HTTPConnection
        if context is not None:
            conn = http.client.HTTPSConnection(host, self.port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, self.port, timeout=timeout)
        sent = dict(headers or {})
        credentials = auth or self.auth
        if credentials is not None:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            sent["Authorization"] = f"Basic {token}"
        try:
            conn.request(method, path, headers=sent)
            response = conn.getresponse()
            body = response.read().decode()
            return Answer(response.status, dict(response.getheaders()), body)
        finally:
            conn.close()

    def get(self, path: str, **kw: object) -> Answer:
        return self.request("GET", path, **kw)  # type: ignore[arg-type]

    def wait_logged(self, *texts: str, timeout: float = 10) -> str:
        """The log, once it holds each of ``texts``.

        A request's line is written after its answer is sent: a client can
        read the answer before the line is there.
        """
        deadline = time.monotonic() + timeout
        log = self.log()
        while not all(text in log for text in texts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not all of {texts} in the log after {timeout} s:\n{log}")
            time.sleep(0.01)
            log = self.log()
        return log

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM, and the exit code."""
        self.signal(signal.SIGTERM)
        assert self.process is not None
        return self.process.wait(timeout)

    def fd_count(self) -> int:
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def threads(self) -> int:
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/task"))
