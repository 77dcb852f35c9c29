"""Benchmark check_pg_tls as a monitoring host pays for it: whole processes.

Starts real PostgreSQL servers with test certificates, then measures, over
repeated runs (median, min-max), wall time, CPU time (user+system) and peak
memory of:

1. one check, verify-full against a root file: check_pg_tls; the floor
   (bench/floor.py: SSLRequest, a handshake that verifies chain and name,
   cryptography's parse of the leaf, one close_notify), run by the same
   interpreter; the same floor with this project's libraries imported
   (``floor.py --libraries``: nagiosplugin, pyOpenSSL, cryptography's x509);
   ``openssl s_client -starttls postgres``; and ``check_ssl_cert -P
   postgres`` where it is installed. The ratios to both floors are medians
   of interleaved pairs, for wall and CPU time;
2. fleets of 1,000 targets (and 10,000 with ``--10k``): four real servers
   repeated, ``check_pg_tls -q --targets-file``, 16 at a time, against the
   concurrent floor (bench/floor_fleet.py: floor.py's work, 16 at a time).

    .venv/bin/python bench/bench.py [--runs 30] [--fleet-runs 3] [--no-fleet] [--10k]

It installs the plugin normally (not editable) into bench/.venv on first use,
so that start-up cost is what a user's installation pays. The machine's load
average is printed before and after each part: CPU time is what other work
on the machine disturbs least.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed import pki
from testbed.pgcluster import Cluster, Workspace

GNU_TIME = "/usr/bin/time"
HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
PLUGIN = "check_pg_tls"
FLOOR = "floor.py"
FLOOR_LIBS = "floor.py --libraries"


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


@dataclass
class Runs:
    """One command's measurements, run by run."""

    name: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    codes: set[int] = field(default_factory=set)


def run_once(argv: Sequence[str], report: str) -> tuple[float, float, float, int]:
    """Wall ms, CPU ms, peak RSS MB and exit code of one run of ``argv``.

    CPU is the rusage of GNU time as this process reaps it, which holds the
    command's (GNU time waits for it), to the microsecond; GNU time's own,
    about a millisecond, is in every row alike. Peak RSS comes from GNU time:
    a child forked by this (large) Python process would start with this
    process's pages counted in its own peak, while GNU time is small, so what
    it reports is the command's own.
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        [GNU_TIME, "-q", "-o", report, "-f", "%M", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = (time.perf_counter() - start) * 1000
    process.returncode = code = os.waitstatus_to_exitcode(status)
    with open(report) as text:
        peak = int(text.read().split()[-1])
    return wall, (usage.ru_utime + usage.ru_stime) * 1000, peak / 1024, code


def measure(commands: dict[str, list[str]], runs: int) -> dict[str, Runs]:
    """Every command ``runs`` times, taking turns within each round, so that
    whatever else the machine is doing weighs on all of them alike."""
    results = {name: Runs(name) for name in commands}
    with tempfile.NamedTemporaryFile("r") as report:
        for _ in range(runs):
            for name, argv in commands.items():
                wall, cpu, rss, code = run_once(argv, report.name)
                found = results[name]
                found.wall.append(wall)
                found.cpu.append(cpu)
                found.rss.append(rss)
                found.codes.add(code)
    return results


def fmt(values: list[float], digits: int = 1) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def table(title: str, rows: dict[str, Runs]) -> None:
    print(f"\n{title}\n")
    print(f"{'command':34} {'wall ms':>24} {'CPU ms':>24} {'peak RSS MB':>18}  exit")
    for runs in rows.values():
        print(
            f"{runs.name:34} {fmt(runs.wall):>24} {fmt(runs.cpu):>24} {fmt(runs.rss):>18}  "
            f"{','.join(map(str, sorted(runs.codes)))}"
        )


def paired(ours: Runs, floor: Runs) -> str:
    """Median of the per-round ratios, wall and CPU.

    The commands took turns, so run i of each saw the same machine: the
    median of the paired ratios is steadier than a ratio of medians.
    """
    wall = statistics.median(a / b for a, b in zip(ours.wall, floor.wall, strict=True))
    cpu = statistics.median(a / b for a, b in zip(ours.cpu, floor.cpu, strict=True))
    return f"wall {wall:.2f}x, CPU {cpu:.2f}x"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def require_success(rows: dict[str, Runs], names: Sequence[str]) -> None:
    """A run that failed measured something else: say so, and stop."""
    for name in names:
        if rows[name].codes != {0}:
            sys.exit(f"{name} exited with {sorted(rows[name].codes)}: nothing to compare")


def one_check(python: Path, cluster: Cluster, root_file: Path, runs: int) -> None:
    port = str(cluster.port)
    target = ["127.0.0.1", port, "one.db.test", str(root_file)]
    floor = [str(python), str(HERE / "floor.py"), *target]
    single = {
        PLUGIN: [
            str(VENV / "bin" / "check_pg_tls"),
            "-H", "127.0.0.1", "-p", port, "--servername", "one.db.test",
            "--sslrootcert", str(root_file),
        ],
        FLOOR: floor,
        FLOOR_LIBS: [*floor, "--libraries"],
        "/bin/true (the measuring's own)": ["true"],
    }  # fmt: skip
    if shutil.which("openssl"):
        single["openssl s_client -starttls postgres"] = [
            "openssl", "s_client", "-starttls", "postgres", "-connect", f"127.0.0.1:{port}",
        ]  # fmt: skip
    tool = shutil.which("check_ssl_cert") or "/usr/lib/nagios/plugins/check_ssl_cert"
    if Path(tool).exists():
        argv = [tool, "-H", "127.0.0.1", "-p", port, "-P", "postgres", "--ignore-exp"]
        trial = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if trial.returncode == 3:
            # Installed but unusable (it needs DNS tools, say): say so, skip it.
            print(f"check_ssl_cert skipped: {trial.stdout.strip()[:120]}")
        else:
            single["check_ssl_cert -P postgres"] = argv
    for name in (PLUGIN, FLOOR, FLOOR_LIBS):
        shown = subprocess.run(single[name], capture_output=True, text=True, timeout=60)
        print(f"{name}: exit {shown.returncode}: {shown.stdout.strip()[:100]}")
    measure(single, 2)  # warm the page cache
    print(load())
    rows = measure(single, runs)
    require_success(rows, (PLUGIN, FLOOR, FLOOR_LIBS))
    table(f"One check, verify-full, {runs} runs each", rows)
    print(f"\nmedians of {runs} interleaved pairs:")
    print(f"  check_pg_tls / {FLOOR + ':':22} {paired(rows[PLUGIN], rows[FLOOR])}")
    print(f"  check_pg_tls / {FLOOR_LIBS + ':':22} {paired(rows[PLUGIN], rows[FLOOR_LIBS])}")
    print(f"  {FLOOR_LIBS} / {FLOOR + ':':11} {paired(rows[FLOOR_LIBS], rows[FLOOR])}")
    print(load())


def fleets(
    python: Path,
    workspace: Workspace,
    clusters: list[Cluster],
    root_file: Path,
    counts: Sequence[int],
    runs: int,
) -> None:
    for count in counts:
        # Four servers, each named many ways: the plugin checks a target
        # listed twice once, so every line names its own (t1.db.test, ...).
        named = [(clusters[i % len(clusters)].port, f"t{i}.db.test") for i in range(count)]
        ours = workspace.path / f"targets-{count}"
        ours.write_text("".join(f"127.0.0.1({name}):{port}\n" for port, name in named))
        plain = workspace.path / f"floor-{count}"
        plain.write_text("".join(f"127.0.0.1 {port} {name}\n" for port, name in named))
        plugin, floor = f"check_pg_tls, {count} targets", f"floor_fleet.py, {count} targets"
        fleet = {
            plugin: [
                str(VENV / "bin" / "check_pg_tls"),
                "-q", "--workers", "16", "--targets-file", str(ours),
                "--sslrootcert", str(root_file),
            ],
            floor: [str(python), str(HERE / "floor_fleet.py"), str(plain), str(root_file)],
        }  # fmt: skip
        print(f"\n{load()}")
        rows = measure(fleet, runs)
        require_success(rows, (plugin, floor))
        table(f"{count} targets, 16 at a time, {runs} runs each", rows)
        ratio = paired(rows[plugin], rows[floor])
        per_target = statistics.median(rows[plugin].wall) / count
        print(
            f"check_pg_tls / floor_fleet.py: {ratio} (medians of {runs} interleaved pairs); "
            f"{per_target:.2f} ms a target"
        )
        print(load())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per single-check command")
    parser.add_argument("--fleet-runs", type=int, default=3, help="runs per fleet command")
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet runs")
    parser.add_argument(
        "--10k", dest="ten_thousand", action="store_true", help="also 10,000 targets (minutes)"
    )
    args = parser.parse_args()

    if not Path(GNU_TIME).exists():
        sys.exit("bench needs GNU time for peak memory: apt-get install time")
    python = bench_python()
    workspace = Workspace()
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    root_file = pki.write_pem(workspace.path / "root.crt", root)
    clusters: list[Cluster] = []
    try:
        for _ in range(1 if args.no_fleet else 4):
            leaf = pki.make_leaf(inter, dns=("*.db.test",))
            # Room for 16 concurrent probes per server and then some.
            cluster = workspace.cluster([leaf, inter], leaf, {"max_connections": "100"})
            clusters.append(cluster.start())
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; median (min-max)")
        one_check(python, clusters[0], root_file, args.runs)
        if not args.no_fleet:
            counts = (1000, 10000) if args.ten_thousand else (1000,)
            fleets(python, workspace, clusters, root_file, counts, args.fleet_runs)
    finally:
        for cluster in clusters:
            cluster.stop()
        workspace.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
