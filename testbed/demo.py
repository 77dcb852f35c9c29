"""The main job, end to end: real PostgreSQL servers, real certificates, the plugin.

Starts four throwaway PostgreSQL servers on loopback, each with a test
certificate (good, expiring soon, wrong name, self-signed "snakeoil"), runs
the installed ``check_pg_tls`` against each as a monitoring system would,
prints what it says, and stops the servers again. ``--keep`` leaves them
running until Ctrl-C so you can try options yourself.

However the demo ends (Ctrl-C, SIGTERM, a closed terminal, or even
SIGKILL), its servers stop; its directory goes with it, or, after SIGKILL,
with the next run.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from . import pki
from .pgcluster import Cluster, Workspace


def _plugin() -> list[str]:
    script = Path(sys.executable).parent / "check_pg_tls"
    return [str(script)] if script.exists() else [sys.executable, "-m", "check_pg_tls"]


class Stopped(Exception):
    """A signal asked the demo to stop."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the servers until Ctrl-C")
    args = parser.parse_args()
    # Each of these would end Python without running the clean-up below.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        return _demo(args.keep)
    except Stopped as stopped:
        print(f"Stopped by {stopped} before the end; the servers are gone.", file=sys.stderr)
        return 1


def _demo(keep: bool) -> int:
    workspace = Workspace()
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    root_file = pki.write_pem(workspace.path / "root.crt", root)
    good = pki.make_leaf(inter, dns=("db.example.test",))
    soon = pki.make_leaf(inter, dns=("db.example.test",), days_after=18.5)
    wrong = pki.make_leaf(inter, dns=("ip-10-1-2-3.internal",))
    snakeoil = pki.make_leaf(None, dns=("debian",), common_name="debian")
    servers: list[tuple[str, Cluster, int]] = []
    try:
        for title, chain, key, expected in [
            ("a good certificate", [good, inter], good, 0),
            ("a certificate that expires in 18 days", [soon, inter], soon, 1),
            ("a certificate for another name", [wrong, inter], wrong, 2),
            ("the distribution's self-signed snakeoil certificate", [snakeoil], snakeoil, 2),
        ]:
            servers.append((title, workspace.cluster(chain, key).start(), expected))
        print(
            f"Started {len(servers)} PostgreSQL servers on 127.0.0.1; trusted root: {root_file}\n"
        )
        failures = 0
        for title, cluster, expected in servers:
            argv = [
                *_plugin(),
                "-H",
                "127.0.0.1",
                "-p",
                str(cluster.port),
                "--servername",
                "db.example.test",
                "--sslrootcert",
                str(root_file),
            ]
            shown = ["check_pg_tls", *argv[len(_plugin()) :]]
            print(f"# A server with {title}:")
            print(f"$ {shlex.join(shown)}")
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            print(done.stdout, end="")
            print(f"(exit code {done.returncode})\n")
            failures += done.returncode != expected
        if keep:
            print("Servers keep running; press Ctrl-C to stop them.", flush=True)
            try:
                while True:
                    signal.pause()
            except Stopped:
                pass
        if failures:
            print(f"{failures} result(s) were not what the demo expected", file=sys.stderr)
        return 1 if failures else 0
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for _, cluster, _ in servers:
            cluster.stop()
        workspace.cleanup()


if __name__ == "__main__":
    sys.exit(main())
