"""Benchmark check_pg_tls as a monitoring host pays for it: whole processes.

Starts real PostgreSQL servers with test certificates, then measures, over
repeated runs (median, min-max), wall time and peak memory of:

1. one check: check_pg_tls; the floor script (bench/floor.py: SSLRequest,
   handshake, parse with cryptography, print notAfter) run by the same
   interpreter; ``openssl s_client -starttls postgres``; and
   ``check_ssl_cert -P postgres`` where it is installed;
2. a fleet of 100 and of 1,000 targets (four real servers, repeated to reach
   the count): check_pg_tls with a targets file against the concurrent floor
   (bench/floor_fleet.py), both 16 at a time.

    .venv/bin/python bench/bench.py [--runs 30] [--fleet-runs 5] [--no-fleet]

It installs the plugin normally (not editable) into bench/.venv on first use,
so that start-up cost is what a user's installation pays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed import pki
from testbed.pgcluster import Cluster, Workspace

GNU_TIME = "/usr/bin/time"
HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"


def bench_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # The plugin is reinstalled every time (the benchmark measures the code in
    # this tree); its dependencies only when missing.
    for extra in (["--force-reinstall", "--no-deps"], []):
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *extra,
                str(HERE.parent),
            ],
            check=True,
        )
    return python


Row = tuple[str, list[float], list[float], list[float], set[int]]


def measure(commands: dict[str, list[str]], runs: int) -> list[Row]:
    """Wall time and peak RSS of each command over ``runs`` rounds.

    The commands take turns within each round, so that whatever else the
    machine is doing weighs on all of them alike. Peak RSS comes from GNU
    time: a child forked by this (large) Python process would start with
    this process's pages counted in its own peak, while GNU time is small, so
    what it reports is the command's own.
    """
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, list[float]] = {name: [] for name in commands}
    codes: dict[str, set[int]] = {name: set() for name in commands}
    with tempfile.NamedTemporaryFile("r") as report:
        for _ in range(runs):
            for name, argv in commands.items():
                start = time.perf_counter()
                done = subprocess.run(
                    [GNU_TIME, "-q", "-o", report.name, "-f", "%M %U %S", *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                walls[name].append((time.perf_counter() - start) * 1000)
                report.seek(0)
                peak, user, system = report.read().split()[-3:]
                rss[name].append(int(peak) / 1024)
                cpu[name].append((float(user) + float(system)) * 1000)
                codes[name].add(done.returncode)
    return [(name, walls[name], cpu[name], rss[name], codes[name]) for name in commands]


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}\n")
    print(f"{'command':38} {'wall ms':>24} {'CPU ms':>22} {'peak RSS MB':>18}  exit")
    for name, walls, cpu, rss, codes in rows:
        print(
            f"{name:38} {fmt(walls):>24} {fmt(cpu):>22} {fmt(rss):>18}  "
            f"{','.join(map(str, sorted(codes)))}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per single-check command")
    parser.add_argument("--fleet-runs", type=int, default=5, help="runs per fleet command")
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet runs")
    args = parser.parse_args()

    if not Path(GNU_TIME).exists():
        sys.exit("bench needs GNU time for peak memory: apt-get install time")
    python = bench_python()
    plugin = str(VENV / "bin" / "check_pg_tls")
    workspace = Workspace()
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    root_file = pki.write_pem(workspace.path / "root.crt", root)
    clusters: list[Cluster] = []
    try:
        for _ in range(1 if args.no_fleet else 4):
            leaf = pki.make_leaf(inter, dns=("db.test",))
            # Room for 16 concurrent probes per server and then some.
            cluster = workspace.cluster([leaf, inter], leaf, {"max_connections": "100"})
            clusters.append(cluster.start())
        port = str(clusters[0].port)
        single = {
            "check_pg_tls": [
                plugin,
                "-H",
                "127.0.0.1",
                "-p",
                port,
                "--servername",
                "db.test",
                "--sslrootcert",
                str(root_file),
            ],
            "floor.py (same interpreter)": [str(python), str(HERE / "floor.py"), "127.0.0.1", port],
        }
        if shutil.which("openssl"):
            single["openssl s_client -starttls postgres"] = [
                "openssl",
                "s_client",
                "-starttls",
                "postgres",
                "-connect",
                f"127.0.0.1:{port}",
            ]
        tool = shutil.which("check_ssl_cert") or "/usr/lib/nagios/plugins/check_ssl_cert"
        if Path(tool).exists():
            argv = [tool, "-H", "127.0.0.1", "-p", port, "-P", "postgres", "--ignore-exp"]
            trial = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            if trial.returncode == 3:
                # Installed but unusable (it needs DNS tools, say): say so, skip it.
                print(f"check_ssl_cert skipped: {trial.stdout.strip()[:120]}")
            else:
                single["check_ssl_cert -P postgres"] = argv
        measure(single, 2)  # warm the page cache
        rows = measure(single, args.runs)
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; median (min-max)")
        table(f"One check, {args.runs} runs each", rows)
        walls = {row[0]: row[1] for row in rows}
        # The commands took turns, so run i of each saw the same machine:
        # the median of the paired ratios is steadier than a ratio of medians.
        ratios = [
            plugin_run / floor_run
            for plugin_run, floor_run in zip(
                walls["check_pg_tls"], walls["floor.py (same interpreter)"], strict=True
            )
        ]
        print(
            f"check_pg_tls / floor.py, wall time: median {statistics.median(ratios):.2f}x "
            f"over {len(ratios)} interleaved pairs"
        )

        if not args.no_fleet:
            rows = []
            for count in (100, 1000):
                specs = [
                    f"127.0.0.1(db.test):{clusters[i % len(clusters)].port}" for i in range(count)
                ]
                ours = workspace.path / f"targets-{count}"
                ours.write_text("\n".join(specs) + "\n")
                plain = workspace.path / f"floor-{count}"
                plain.write_text(
                    "\n".join(f"127.0.0.1:{clusters[i % len(clusters)].port}" for i in range(count))
                    + "\n"
                )
                fleet = {
                    f"check_pg_tls, {count} targets": [
                        plugin,
                        "--targets-file",
                        str(ours),
                        "--sslrootcert",
                        str(root_file),
                    ],
                    f"floor_fleet.py, {count} targets": [
                        str(python),
                        str(HERE / "floor_fleet.py"),
                        str(plain),
                    ],
                }
                rows += measure(fleet, args.fleet_runs)
            table(f"Fleets, {args.fleet_runs} runs each, 16 at a time", rows)
    finally:
        for cluster in clusters:
            cluster.stop()
        workspace.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
