"""Prometheus and node_exporter from Debian, in the foreground on loopback.

Each runs as the invoking user with its own configuration and data under a
directory the test gives, on a free port of 127.0.0.1, and is stopped by the
test. Readiness is polled over HTTP with a deadline, never waited for by
sleeping a fixed time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .pgcluster import PORT_ATTEMPTS, ServerProcess, free_port, lost_port, spawn_as

__all__ = ["NodeExporter", "PrometheusServer", "http_get", "promtool"]

# Loopback only: never through a proxy the environment may name.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5) -> str:
    with _OPENER.open(url, timeout=timeout) as response:
        return str(response.read().decode())


def _program(name: str, package: str) -> str:
    found = shutil.which(name, path="/usr/bin:/usr/sbin:/usr/local/bin")
    if found is None:
        raise FileNotFoundError(
            f"{name} not found: apt-get install {package} (scripts/setup-env --test does)"
        )
    return found


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Run promtool; its exit code and everything it printed."""
    done = subprocess.run(
        [_program("promtool", "prometheus"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    return done.returncode, done.stdout + done.stderr


class _HttpServer(ServerProcess):
    port: int
    path: Path

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready_url(self) -> str:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> _HttpServer:
        """Start; if another program took the port meanwhile, start on a new one."""
        self.log_path = self.path / "daemon.log"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            logged = len(self.log())
            with open(self.log_path, "ab") as log:
                self.process = spawn_as(None, self._argv(), log)
            try:
                return self._wait_ready(timeout)
            except RuntimeError:
                if attempt == PORT_ATTEMPTS or not lost_port(self.log()[logged:]):
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> _HttpServer:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self._argv()[0]} exited:\n{self.log()}")
            try:
                http_get(self._ready_url(), timeout=1)
                return self
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"not ready within {timeout} s:\n{self.log()}") from None
            time.sleep(0.05)


class NodeExporter(_HttpServer):
    """node_exporter with only the textfile collector, reading ``textfile_dir``."""

    def __init__(self, path: Path, textfile_dir: Path) -> None:
        self.path = path
        self.textfile_dir = textfile_dir
        self.port = free_port()

    def _argv(self) -> list[str]:
        return [
            _program("prometheus-node-exporter", "prometheus-node-exporter"),
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={self.textfile_dir}",
        ]

    def _ready_url(self) -> str:
        return f"{self.url}/metrics"

    def metrics(self) -> str:
        return http_get(f"{self.url}/metrics")


class PrometheusServer(_HttpServer):
    """A Prometheus server scraping ``targets`` (job name to ``host:port``) every second.

    Rules from ``rule_files`` are evaluated every second as well; more jobs,
    written out in full, come from ``scrape_configs``.
    """

    def __init__(
        self,
        path: Path,
        targets: dict[str, str],
        rule_files: Sequence[Path] = (),
        scrape_configs: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.path = path
        self.port = free_port()
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(file) for file in rule_files],
            "scrape_configs": [
                *(
                    {"job_name": job, "static_configs": [{"targets": [address]}]}
                    for job, address in targets.items()
                ),
                *scrape_configs,
            ],
        }
        # JSON is YAML too.
        self.config = path / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))

    def _argv(self) -> list[str]:
        return [
            _program("prometheus", "prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.path / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    def _ready_url(self) -> str:
        return f"{self.url}/-/ready"

    def api(self, endpoint: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        answer = json.loads(http_get(f"{self.url}/api/v1/{endpoint}?{query}"))
        if answer.get("status") != "success":
            raise RuntimeError(f"{endpoint}: {answer}")
        return answer["data"]

    def query(self, expr: str, label: str = "target") -> dict[str, float]:
        """An instant query's result: each series' ``label`` (or its whole
        label set, as text, if it has none) and its value."""
        data = self.api("query", query=expr)
        found = {}
        for series in data["result"]:
            labels = series["metric"]
            key = labels.get(label) or json.dumps(labels, sort_keys=True)
            found[key] = float(series["value"][1])
        return found

    def wait_for(
        self,
        expr: str,
        done: Callable[[dict[str, float]], bool],
        timeout: float = 30,
        label: str = "target",
    ) -> dict[str, float]:
        """Poll ``expr`` until ``done`` accepts its result; the last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr, label)
            if done(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr}: still {result} after {timeout} s:\n{self.log()}")
            time.sleep(0.1)
