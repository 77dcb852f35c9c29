"""One server's oddity stays that server's: the others keep their results, in every format.

An x400Address in a SAN (which cryptography refuses to represent) and a host
name Python's IDNA encoder rejects used to turn a whole fleet run into
"internal error"; now each is that target's own result.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from testbed import pki
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, Run, run_plugin


def _tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


@pytest.fixture(scope="module")
def odd_server(workspace: Workspace, ca: Pki) -> Iterator[Cluster]:
    """A leaf whose SAN holds an x400Address before its DNS name."""
    leaf_key = pki.make_leaf(ca.intermediate)
    now = dt.datetime.now(dt.timezone.utc)
    san = _tlv(0x30, _tlv(0xA3, _tlv(0x30, b"")) + _tlv(0x82, b"db.test"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.intermediate.cert.subject)
        .public_key(leaf_key.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=60))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, san), False
        )
        .sign(ca.intermediate.key, hashes.SHA256())
    )
    with pytest.raises(x509.UnsupportedGeneralNameType):
        _ = cert.extensions  # what used to crash the whole run
    odd = pki.Issued(cert, leaf_key.key)
    cluster = workspace.cluster([odd, ca.intermediate], odd, name="x400").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def targets(server: Callable[[str], Cluster], odd_server: Cluster, tmp_path: Path) -> Path:
    path = tmp_path / "targets"
    path.write_text(
        f"127.0.0.1(db.test):{server('valid').port}\n"
        f"127.0.0.1(db.test):{odd_server.port}\n"
        "a..b:5432\n"
    )
    return path


def fleet(ca: Pki, targets: Path, *args: str) -> Run:
    return run_plugin("--targets-file", str(targets), "--sslrootcert", str(ca.root_file), *args)


def test_nagios_format_keeps_every_result(ca: Pki, targets: Path) -> None:
    result = fleet(ca, targets)
    assert result.returncode == 3, result.stdout
    assert "internal error" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("PG_TLS UNKNOWN - 1 of 3 servers needs attention (1 unknown): ")
    assert "line 3: invalid target 'a..b:5432': empty label in host name" in lines[0]
    states = [line.split(" ", 1)[0] for line in lines[1:4]]
    assert states == ["OK", "OK", "UNKNOWN"]
    # The x400Address is skipped as libpq skips it; db.test after it matches.
    assert "valid for db.test" in lines[2]


def test_json_keeps_its_format_and_every_result(ca: Pki, targets: Path) -> None:
    result = fleet(ca, targets, "--json")
    document = json.loads(result.stdout)
    assert [t["state"] for t in document["targets"]] == ["OK", "OK", "UNKNOWN"]
    assert document["targets"][1]["chain"][0]["dns_names"] == ["db.test"]
    assert result.returncode == 3


def test_tap_and_quiet_keep_their_formats(ca: Pki, targets: Path) -> None:
    tap = fleet(ca, targets, "--tap")
    assert tap.stdout.startswith("TAP version 13\n1..3\nok 1 - ")
    assert "\nok 2 - " in tap.stdout
    assert "\nnot ok 3 - line 3 invalid target 'a..b:5432': empty label" in tap.stdout
    quiet = fleet(ca, targets, "--quiet")
    assert quiet.stdout == "line 3: invalid target 'a..b:5432': empty label in host name\n"
    assert quiet.returncode == 3


def test_a_large_fleet_keeps_its_status_line_short(tmp_path: Path) -> None:
    # 1,000 refused targets: the first line names five, counts the rest, and
    # its perfdata holds the aggregates only (NRPE 2 passes 1 KiB).
    from testbed.faults import RefusedPort

    with RefusedPort() as refused:
        path = tmp_path / "many"
        # A thousand checks: the same target listed twice would be one.
        path.write_text("".join(f"127.0.0.1(db{n}.test):{refused.port}\n" for n in range(1000)))
        result = run_plugin("--targets-file", str(path), "--sslmode", "require")
    lines = result.stdout.splitlines()
    assert result.returncode == 2
    assert len(lines[0]) < 1024, len(lines[0])
    assert lines[0].startswith(
        "PG_TLS CRITICAL - 1000 of 1000 servers need attention (1000 critical): "
    )
    assert "; and 995 more | " in lines[0]
    assert result.perfdata["servers_critical"] == "1000;;;0"
    assert result.perfdata["servers_ok"] == "0;;;0"
    assert set(result.perfdata) == {
        "max_time",
        "servers_ok",
        "servers_warning",
        "servers_critical",
        "servers_unknown",
    }
    # Every server is still in the long output.
    assert len(lines) == 1001


def test_a_small_fleet_keeps_per_server_perfdata_and_aggregates(ca: Pki, targets: Path) -> None:
    result = fleet(ca, targets)
    perfdata = result.perfdata
    assert {"min_days_left", "servers_ok", "servers_unknown", "max_time"} <= set(perfdata)
    assert perfdata["servers_ok"] == "2;;;0"
    assert perfdata["servers_unknown"] == "1;;;0"
    assert float(perfdata["min_days_left"]) == pytest.approx(59.99, abs=0.02)
    assert sum(1 for label in perfdata if label.endswith("_days_left")) == 3
