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


def test_bad_chains_leave_no_error_lines(server: Callable[[str], Cluster], ca: Pki) -> None:
    # OpenSSL verifies inside the handshake; its complaints must not turn
    # into a TLS alert, which the server would log as a failed connection.
    clusters = [server("expired"), server("self_signed"), server("unknown_ca")]
    runs = [
        (clusters[0], ["--servername", "db.test"]),  # expired leaf
        (clusters[0], ["--servername", "wrong.test"]),  # expired and the wrong name
        (clusters[1], ["--servername", "db.test"]),  # self-signed: untrusted
        (clusters[2], ["--servername", "db.test"]),  # another CA: untrusted
    ]
    # The clusters are shared: psql, as the oracle elsewhere, aborts bad
    # handshakes and leaves its own error lines. Only this test's part counts.
    before = [len(cluster.log()) for cluster in clusters]
    results = [
        run_plugin("-H", "127.0.0.1", "-p", str(c.port), "--sslrootcert", str(ca.root_file), *args)
        for c, args in runs
    ]
    assert [r.returncode for r in results] == [2, 2, 2, 2], [r.stdout for r in results]
    assert "certificate expired" in results[0].status_line
    assert "certificate is not valid for wrong.test" in results[1].status_line
    assert "self-signed and not in the trusted roots" in results[2].status_line
    assert "chain does not reach a trusted root" in results[3].status_line
    ours = [cluster.log()[start:] for cluster, start in zip(clusters, before, strict=True)]
    assert [log.count("connection received") for log in ours] == [2, 1, 1]
    for log in ours:
        for line in log.splitlines():
            assert not any(noise in line for noise in NOISE), line
