"""libpq is the oracle: the plugin accepts exactly what psql accepts.

For every certificate scenario, sslmode and root file, psql (libpq) connects
to the same real server with the same settings, and the plugin's verdict must
match. With ``-w 0 -c 0`` only trust, name and validity decide the state, so
"plugin exits 0" means "the plugin says a client would connect".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.pgcluster import Cluster

from .conftest import Pki, psql_connects, run_plugin

# scenario, host a client connects as, accepted by verify-full, by verify-ca
CASES = [
    ("valid", "db.test", True, True),
    ("valid", "127.0.0.1", True, True),
    ("valid", "nope.test", False, True),
    ("expiring_crit", "db.test", True, True),
    ("expired", "db.test", False, False),
    ("not_yet_valid", "db.test", False, False),
    ("wrong_name", "db.test", False, True),
    ("wildcard", "a.db.test", True, True),
    ("wildcard", "a.b.db.test", False, True),
    ("wildcard", "db.test", False, True),
    ("ip_only", "127.0.0.1", True, True),
    ("ip_only", "db.test", False, True),
    ("cn_only", "db.test", True, True),
    ("cn_only", "127.0.0.1", False, True),
    ("self_signed", "db.test", False, False),
    ("unknown_ca", "db.test", False, False),
    ("missing_intermediate", "db.test", False, False),
    ("intermediate_expiring", "db.test", True, True),
]

# Expiry is judged even when nothing else is: the plugin is stricter than
# libpq's unverified "require" here, on purpose.
OUT_OF_VALIDITY = {"expired", "not_yet_valid"}


def _plugin_accepts(cluster: Cluster, host: str, sslmode: str, root: Path | None) -> bool:
    args = ["-H", "127.0.0.1", "-p", str(cluster.port), "--sslmode", sslmode, "-w", "0", "-c", "0"]
    if host != "127.0.0.1":
        args += ["--servername", host]
    if root is not None:
        args += ["--sslrootcert", str(root)]
    result = run_plugin(*args)
    assert result.returncode in (0, 2), result.stdout
    return result.returncode == 0


@pytest.mark.parametrize(
    ("scenario", "host", "full", "ca_only"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
@pytest.mark.parametrize("sslmode", ["verify-full", "verify-ca", "require+root", "require"])
def test_plugin_agrees_with_libpq(
    server: Callable[[str], Cluster],
    ca: Pki,
    psql_home: Path,
    scenario: str,
    host: str,
    full: bool,
    ca_only: bool,
    sslmode: str,
) -> None:
    cluster = server(scenario)
    mode, _, with_root = sslmode.partition("+")
    root = ca.root_file if mode != "require" or with_root else None
    libpq = psql_connects(cluster, psql_home, host, mode, str(root) if root else None)
    expected_libpq = {"verify-full": full, "verify-ca": ca_only}.get(
        mode, ca_only if root else True
    )
    # First pin down what libpq does, so that a broken oracle cannot pass.
    assert libpq == expected_libpq
    expected_plugin = libpq and not (root is None and scenario in OUT_OF_VALIDITY)
    assert _plugin_accepts(cluster, host, mode, root) == expected_plugin


def test_self_signed_root_file_agrees_with_libpq(
    server: Callable[[str], Cluster], ca: Pki, psql_home: Path
) -> None:
    cluster = server("self_signed")
    own = ca.dir / "snakeoil-oracle.crt"
    own.write_text((cluster.data / "server.crt").read_text())
    assert psql_connects(cluster, psql_home, "db.test", "verify-full", str(own))
    assert _plugin_accepts(cluster, "db.test", "verify-full", own)
