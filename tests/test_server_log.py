"""A probe leaves no error in the server's log, whatever it concludes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from testbed.pgcluster import Cluster

from .conftest import Pki, psql_connects, run_plugin

NOISE = (
    "could not accept SSL connection",
    "invalid length of startup packet",
    "could not receive data from client",
    "connection reset",
    "EOF detected",
    "incomplete startup packet",
    "FATAL",
    "ERROR",
)


def test_probes_leave_no_error_lines(
    server: Callable[[str], Cluster], ca: Pki, psql_home: Path
) -> None:
    cluster = server("quiet")  # used by this test only
    other_root = ca.dir / "other-root-log.crt"
    other_root.write_bytes(ca.other_root.cert_pem)
    port = str(cluster.port)
    runs = [
        ["--servername", "db.test", "--sslrootcert", str(ca.root_file)],  # OK
        ["--servername", "wrong.test", "--sslrootcert", str(ca.root_file)],  # name mismatch
        ["--servername", "db.test", "--sslrootcert", str(other_root)],  # untrusted
        ["--sslmode", "require"],
        ["--servername", "db.test", "--sslrootcert", str(ca.root_file), "-v"],
    ]
    codes = [run_plugin("-H", "127.0.0.1", "-p", port, *args).returncode for args in runs]
    assert codes == [0, 2, 2, 0, 0]
    # A positive control: a real session, whose end the log records.
    assert psql_connects(cluster, psql_home, "db.test", "verify-full", str(ca.root_file))
    # A backend writes its last lines after the client has gone.
    cluster.wait_for_backends()
    log = cluster.log()
    assert log.count("connection received") == len(runs) + 1
    assert log.count("disconnection: session time:") == 1
    for line in log.splitlines():
        assert not any(noise in line for noise in NOISE), line
