"""Benchmark one check as a monitoring host pays for it: whole processes.

Starts a real PostgreSQL with a test certificate, then runs, in turn and
repeatedly: check_pg_tls, the floor script (bench/floor.py: SSLRequest,
handshake, parse with cryptography, print notAfter) with the same
interpreter, ``openssl s_client -starttls postgres``, and check_ssl_cert
when installed. Reports wall time and peak memory (median, min, max).

    .venv/bin/python bench/single_check.py [--runs 30]

For a fair start-up cost it installs the plugin normally (not editable) into
bench/.venv on first use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed import pki
from testbed.pgcluster import Workspace

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"


def bench_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                str(HERE.parent),
            ],
            check=True,
        )
    return python


def measure(argv: list[str], runs: int) -> tuple[list[float], list[float], set[int]]:
    walls, rss, codes = [], [], set()
    for _ in range(runs):
        start = time.perf_counter()
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(child.pid, 0)
        walls.append((time.perf_counter() - start) * 1000)
        rss.append(usage.ru_maxrss / 1024)
        codes.add(os.waitstatus_to_exitcode(status))
        child.returncode = 0  # reaped above
    return walls, rss, codes


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    python = bench_python()
    workspace = Workspace()
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    leaf = pki.make_leaf(inter, dns=("db.test",))
    root_file = pki.write_pem(workspace.path / "root.crt", root)
    cluster = workspace.cluster([leaf, inter], leaf).start()
    port = str(cluster.port)
    commands = {
        "check_pg_tls": [
            str(VENV / "bin" / "check_pg_tls"),
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
        commands["openssl s_client -starttls postgres"] = [
            "openssl",
            "s_client",
            "-starttls",
            "postgres",
            "-connect",
            f"127.0.0.1:{port}",
        ]
    if shutil.which("check_ssl_cert") or Path("/usr/lib/nagios/plugins/check_ssl_cert").exists():
        tool = shutil.which("check_ssl_cert") or "/usr/lib/nagios/plugins/check_ssl_cert"
        commands["check_ssl_cert -P postgres"] = [
            tool,
            "-H",
            "127.0.0.1",
            "-p",
            port,
            "-P",
            "postgres",
            "--ignore-exp",
        ]
    try:
        rows = []
        for name, argv in commands.items():
            measure(argv, 2)  # warm the page cache
            walls, rss, codes = measure(argv, args.runs)
            rows.append((name, fmt(walls), fmt(rss), ",".join(map(str, sorted(codes)))))
    finally:
        cluster.stop()
        workspace.cleanup()
    print(
        f"{args.runs} runs each; median (min-max); Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores\n"
    )
    print(f"{'command':40} {'wall ms':>24} {'peak RSS MB':>24}  exit")
    for name, wall, rss_text, codes in rows:
        print(f"{name:40} {wall:>24} {rss_text:>24}  {codes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
