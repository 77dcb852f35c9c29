"""The concurrent floor: floor.py's work for every target, 16 at a time.

    python floor_fleet.py TARGETS_FILE ROOT_FILE

Reads ``HOST PORT SERVERNAME`` lines; verifies each server against the root
file and its name, parses its leaf and prints its notAfter, in input order;
closes each connection as check_pg_tls does (one close_notify, no wait). One
TLS context for all, as the plugin builds one per run.
"""

from __future__ import annotations

import gc
import sys
from concurrent.futures import ThreadPoolExecutor

from floor import client_context, not_after


def main(targets_file: str, root_file: str) -> int:
    # As check_pg_tls runs a fleet: what start-up made is left out of every
    # collection; the checks' own garbage is collected.
    gc.freeze()
    context = client_context(root_file)

    def check(line: str) -> tuple[bool, str]:
        host, port, servername = line.split()
        try:
            return True, not_after(context, host, int(port), servername)
        except OSError as exc:  # ssl.SSLError included
            return False, f"{host}:{port}: {exc}"

    with open(targets_file) as handle:
        targets = [line.strip() for line in handle if line.strip()]
    failed = 0
    with ThreadPoolExecutor(16) as pool:
        for ok, text in pool.map(check, targets):
            failed += not ok
            print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
