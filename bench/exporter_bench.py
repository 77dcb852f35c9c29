"""Benchmark pg_tls_exporter against what it replaces: a check_pg_tls process per probe.

Starts four real PostgreSQL servers with test certificates and one exporter,
then measures:

1. CPU per probe: the exporter's own CPU time (from /proc) over sequential
   /probe requests, against the CPU of a whole ``check_pg_tls`` process for
   the same server (its children's rusage), taking turns in rounds;
2. probes per second: 1,000 probes (the four servers repeated), 16 requests
   at a time over keep-alive connections, as Prometheus sends them, against
   the concurrent floor (bench/floor_fleet.py, 16 at a time: the same
   verification, one close_notify each) over the same 1,000 targets;
3. memory with 64 probes in flight (``--probe.concurrency 64``, 64 requests
   to a server that accepts and never answers), and descriptors and memory
   after thousands of probes.

    .venv/bin/python bench/exporter_bench.py [--rounds 5]

The client runs in this process and shares the machine's two cores with
the exporter, so the rate is the exporter's on a busy host, not a bound.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed import pki
from testbed.exporter import ExporterProcess
from testbed.faults import FaultServer, silent
from testbed.pgcluster import Workspace

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Client(threading.local):
    """One keep-alive connection per thread, as Prometheus keeps them."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def probe(self, target: str) -> bool:
        self.conn.request("GET", f"/probe?target={target}")
        response = self.conn.getresponse()
        return response.status == 200 and b"probe_success 1.0" in response.read()


def settled(exporter: ExporterProcess, at_most: int = 0) -> int:
    """Open descriptors once the exporter has closed what its clients closed."""
    deadline = time.monotonic() + 5
    count = exporter.fd_count()
    while count > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
        count = exporter.fd_count()
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the CPU comparison")
    parser.add_argument("--probes", type=int, default=1000, help="probes for the rate")
    args = parser.parse_args()

    plugin = str(Path(sys.executable).parent / "check_pg_tls")
    workspace = Workspace()
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    root_file = pki.write_pem(workspace.path / "root.crt", root)
    clusters = []
    tmp = Path(tempfile.mkdtemp(prefix="exporter-bench-"))
    try:
        for _ in range(4):
            leaf = pki.make_leaf(inter, dns=("db.test",))
            cluster = workspace.cluster([leaf, inter], leaf, {"max_connections": "100"})
            clusters.append(cluster.start())
        config = tmp / "pg_tls_exporter.yml"
        config.write_text(
            json.dumps(
                {
                    "modules": {"default": {"sslrootcert": str(root_file), "timeout": 5}},
                    "allowed_targets": ["127.0.0.1", "*.test"],
                }
            )
        )
        exporter = ExporterProcess(tmp, config, "--probe.concurrency=64").start()
        assert exporter.process is not None
        pid = exporter.process.pid
        targets = [f"127.0.0.1(db.test):{c.port}" for c in clusters]
        client = Client(exporter.port)
        for target in targets * 8:  # warm: imports, first handshakes
            assert client.probe(target)
        start_rss = exporter.rss_kib()

        # 1. CPU per probe, taking turns with whole check_pg_tls processes.
        per_probe, per_check = [], []
        for _ in range(args.rounds):
            before = cpu_seconds(pid)
            for _ in range(50):
                assert client.probe(targets[0])
            per_probe.append((cpu_seconds(pid) - before) / 50 * 1000)
            before = children_cpu()
            for _ in range(5):
                done = subprocess.run(
                    [plugin, targets[0], "--sslrootcert", str(root_file)],
                    stdout=subprocess.DEVNULL,
                )
                assert done.returncode == 0
            per_check.append((children_cpu() - before) / 5 * 1000)
        probe_ms, check_ms = statistics.median(per_probe), statistics.median(per_check)
        rounds = f"median of {args.rounds} rounds"
        print(f"CPU per probe, exporter:          {probe_ms:6.1f} ms ({rounds} of 50)")
        print(f"CPU per check_pg_tls process:     {check_ms:6.1f} ms ({rounds} of 5)")
        print(f"ratio:                            1/{check_ms / probe_ms:.0f}")

        # 2. Probes per second against the concurrent floor.
        listed = [targets[i % 4] for i in range(args.probes)]
        clients = Client(exporter.port)
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(clients.probe, listed))
        exporter_seconds = time.perf_counter() - started
        assert all(results)
        floor_file = tmp / "floor-targets"
        floor_file.write_text(
            "".join(f"127.0.0.1 {clusters[i % 4].port} db.test\n" for i in range(args.probes))
        )
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(HERE / "floor_fleet.py"), str(floor_file), str(root_file)],
            stdout=subprocess.DEVNULL,
            check=True,
        )
        floor_seconds = time.perf_counter() - started
        print(
            f"{args.probes} probes, 16 at a time: {exporter_seconds:5.2f} s "
            f"({args.probes / exporter_seconds:.0f}/s); floor_fleet.py: {floor_seconds:5.2f} s "
            f"({args.probes / floor_seconds:.0f}/s)"
        )

        # 3. Memory with 64 probes in flight.
        with FaultServer(silent()) as mute:
            local = Client(exporter.port)

            def hold(_: int) -> None:
                local.conn.request("GET", f"/probe?target=127.0.0.1:{mute.port}")
                local.conn.getresponse().read()

            peak = 0
            with ThreadPoolExecutor(64) as pool:
                futures = [pool.submit(hold, i) for i in range(64)]
                deadline = time.monotonic() + 4
                while time.monotonic() < deadline:
                    peak = max(peak, exporter.rss_kib())
                    if len(mute._conns) >= 64:
                        break
                    time.sleep(0.01)
                in_flight = len(mute._conns)
                peak = max(peak, exporter.rss_kib())
                for future in futures:
                    future.result()
        print(
            f"RSS: {start_rss / 1024:.1f} MB after start and warm-up; "
            f"{peak / 1024:.1f} MB with {in_flight} probes in flight"
        )
        fds = settled(exporter)
        for _ in range(3):
            with ThreadPoolExecutor(16) as pool:
                assert all(pool.map(Client(exporter.port).probe, listed))
        settled(exporter, fds)
        print(
            f"after {3 * args.probes} more probes: {exporter.fd_count()} descriptors "
            f"(before: {fds}), RSS {exporter.rss_kib() / 1024:.1f} MB"
        )
        exporter.stop()
    finally:
        for cluster in clusters:
            cluster.stop()
        workspace.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
