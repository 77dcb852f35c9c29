"""Every certificate scenario against a real PostgreSQL 15, as a user runs the plugin."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest

from testbed import pki
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, Run, check_local, run_plugin

ServerFactory = Callable[[str], Cluster]


def check(cluster: Cluster, ca: Pki, *args: str) -> Run:
    return check_local(cluster.port, ca.root_file, *args)


@pytest.mark.parametrize(
    ("scenario", "args", "code", "expected"),
    [
        (
            "valid",
            ["--servername", "db.test"],
            0,
            "PG_TLS OK - 127.0.0.1(db.test):{port}: certificate expires in 89 days",
        ),
        ("valid", [], 0, "valid for 127.0.0.1"),
        (
            "expiring_warn",
            ["--servername", "db.test"],
            1,
            "PG_TLS WARNING - 127.0.0.1(db.test):{port}: certificate expires in 18 days",
        ),
        (
            "expiring_crit",
            ["--servername", "db.test"],
            2,
            "PG_TLS CRITICAL - 127.0.0.1(db.test):{port}: certificate expires in 10 days",
        ),
        ("expired", ["--servername", "db.test"], 2, "certificate expired 2 days ago"),
        ("not_yet_valid", ["--servername", "db.test"], 2, "certificate is not valid before"),
        (
            "wrong_name",
            ["--servername", "db.test"],
            2,
            "certificate is not valid for db.test (valid for ip-10-1-2-3.internal)",
        ),
        ("wildcard", ["--servername", "a.db.test"], 0, "valid for a.db.test"),
        (
            "wildcard",
            ["--servername", "a.b.db.test"],
            2,
            "certificate is not valid for a.b.db.test",
        ),
        ("wildcard", ["--servername", "db.test"], 2, "certificate is not valid for db.test"),
        ("ip_only", [], 0, "valid for 127.0.0.1"),
        ("ip_only", ["--servername", "db.test"], 2, "not valid for db.test (valid for 127.0.0.1)"),
        ("cn_only", ["--servername", "db.test"], 0, "valid for db.test"),
        (
            "self_signed",
            ["--servername", "db.test"],
            2,
            "certificate is self-signed and not in the trusted roots",
        ),
        ("unknown_ca", ["--servername", "db.test"], 2, "chain does not reach a trusted root"),
        (
            "missing_intermediate",
            ["--servername", "db.test"],
            2,
            "the server sends no intermediate certificate (issuer "
            "CN=check_pg_tls Test Intermediate,O=check_pg_tls tests); add it to ssl_cert_file",
        ),
        (
            "intermediate_expiring",
            ["--servername", "db.test"],
            2,
            "intermediate CN=Short-lived Intermediate,O=check_pg_tls tests expires in 10 days",
        ),
    ],
)
def test_scenario(
    server: ServerFactory, ca: Pki, scenario: str, args: list[str], code: int, expected: str
) -> None:
    cluster = server(scenario)
    result = check(cluster, ca, *args)
    assert result.returncode == code, result.stdout
    assert expected.format(port=cluster.port) in result.status_line
    assert result.stderr == ""


def test_every_problem_is_reported_not_only_the_first(server: ServerFactory, ca: Pki) -> None:
    result = run_plugin(
        "-H",
        "127.0.0.1",
        "-p",
        str(server("expiring_crit").port),
        "--servername",
        "other.test",
        "--sslrootcert",
        str(_other_root_file(ca)),
    )
    assert result.returncode == 2
    line = result.status_line
    assert "certificate is not valid for other.test (valid for db.test)" in line
    assert "chain does not reach a trusted root" in line
    assert "certificate expires in 10 days" in line


def _other_root_file(ca: Pki):  # type: ignore[no-untyped-def]
    path = ca.dir / "other-root.crt"
    pki.write_pem(path, ca.other_root)
    return path


def test_perfdata_has_days_left_with_thresholds(server: ServerFactory, ca: Pki) -> None:
    result = check(server("expiring_warn"), ca, "--servername", "db.test")
    value, warn, crit, *_ = result.perfdata["days_left"].split(";")
    assert 18 < float(value) < 18.6
    assert (warn, crit) == ("20:", "15:")
    assert result.perfdata["time"].endswith("s;;;0")
    assert result.status_line.count("|") == 1


def test_expired_perfdata_is_negative(server: ServerFactory, ca: Pki) -> None:
    result = check(server("expired"), ca, "--servername", "db.test")
    assert float(result.perfdata["days_left"].split(";")[0]) < -1.9


def test_percent_threshold_is_share_of_lifetime(server: ServerFactory, ca: Pki) -> None:
    # The leaf lives 19.5 days (1 before now, 18.5 after): 18.5 left is 95%.
    cluster = server("expiring_warn")
    ok = check(cluster, ca, "--servername", "db.test", "-w", "90%", "-c", "50%")
    assert ok.returncode == 0, ok.stdout
    warn = check(cluster, ca, "--servername", "db.test", "-w", "96%", "-c", "50%")
    assert warn.returncode == 1, warn.stdout
    assert warn.perfdata["days_left"].split(";")[1] == "18.72:"


def test_nagios_range_thresholds(server: ServerFactory, ca: Pki) -> None:
    cluster = server("valid")
    inside = check(cluster, ca, "--servername", "db.test", "-w", "@0:100", "-c", "@0:10")
    assert inside.returncode == 1, inside.stdout
    assert check(cluster, ca, "--servername", "db.test", "-w", "10:", "-c", "5:").returncode == 0


def test_expired_is_critical_whatever_the_thresholds(server: ServerFactory, ca: Pki) -> None:
    result = check(server("expired"), ca, "--servername", "db.test", "-w", "@0:1", "-c", "@0:1")
    assert result.returncode == 2


def test_verify_ca_ignores_the_name(server: ServerFactory, ca: Pki) -> None:
    result = check(server("wrong_name"), ca, "--servername", "db.test", "--sslmode", "verify-ca")
    assert result.returncode == 0, result.stdout
    assert "chain trusted" in result.status_line


def test_require_judges_only_expiry(server: ServerFactory) -> None:
    result = run_plugin(
        "-H", "127.0.0.1", "-p", str(server("self_signed").port), "--sslmode", "require"
    )
    assert result.returncode == 0, result.stdout
    assert result.status_line.startswith("PG_TLS OK - ")


def test_self_signed_certificate_trusted_as_its_own_root(server: ServerFactory, ca: Pki) -> None:
    cluster = server("self_signed")
    own = ca.dir / "snakeoil.crt"
    own.write_text((cluster.data / "server.crt").read_text())
    result = run_plugin(
        "-H",
        "127.0.0.1",
        "-p",
        str(cluster.port),
        "--servername",
        "db.test",
        "--sslrootcert",
        str(own),
    )
    assert result.returncode == 0, result.stdout


def test_intermediate_only_in_root_file_is_a_warning(server: ServerFactory, ca: Pki) -> None:
    both = ca.dir / "root-and-intermediate.crt"
    pki.write_pem(both, ca.root, ca.intermediate)
    result = run_plugin(
        "-H",
        "127.0.0.1",
        "-p",
        str(server("missing_intermediate").port),
        "--servername",
        "db.test",
        "--sslrootcert",
        str(both),
    )
    # libpq connects (the trust store fills the gap), so not CRITICAL; but
    # clients that trust only the root would fail: WARNING, and say why.
    assert result.returncode == 1, result.stdout
    assert "server sends no intermediate certificate (CN=check_pg_tls Test Intermediate" in (
        result.status_line
    )
    assert "add it to ssl_cert_file" in result.status_line


def test_verbose_lists_chain_and_session(server: ServerFactory, ca: Pki) -> None:
    result = check(server("valid"), ca, "--servername", "db.test", "-v")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert " | days_left=" in lines[0]
    assert any(line.startswith("leaf: subject ") for line in lines)
    assert any(
        line.startswith("chain[1]: subject CN=check_pg_tls Test Intermediate") for line in lines
    )
    assert any(line.startswith("tls: TLSv1.3 ") for line in lines)
    assert "names: db.test, db2.test, 127.0.0.1, ::1" in lines


def test_ipv6_literal_host(server: ServerFactory, ca: Pki) -> None:
    cluster = server("valid")
    result = run_plugin("-H", "::1", "-p", str(cluster.port), "--sslrootcert", str(ca.root_file))
    assert result.returncode == 0, result.stdout
    assert result.status_line.startswith(f"PG_TLS OK - [::1]:{cluster.port}: ")


def test_host_name_resolved_from_hosts_file(server: ServerFactory, ca: Pki) -> None:
    cluster = server("valid")
    result = run_plugin(
        "-H",
        "localhost",
        "-4",
        "-p",
        str(cluster.port),
        "--servername",
        "db.test",
        "--sslrootcert",
        str(ca.root_file),
    )
    assert result.returncode == 0, result.stdout


@pytest.fixture
def own_server(workspace: Workspace) -> Iterator[Callable[..., Cluster]]:
    """A cluster for one test, serving the given chain."""
    started: list[Cluster] = []

    def start(chain: list[pki.Issued], key: pki.Issued) -> Cluster:
        started.append(workspace.cluster(chain, key).start())
        return started[-1]

    yield start
    for cluster in started:
        cluster.stop()


def test_percent_is_a_share_of_the_certificate_that_expires_first(
    own_server: Callable[..., Cluster], ca: Pki
) -> None:
    # A leaf for ever (1950-9999) under the five-year intermediate: the
    # intermediate expires first, and 10% is 10% of its lifetime, not of the
    # leaf's 8000 years.
    now = dt.datetime.now(dt.timezone.utc)
    days_before = (now - dt.datetime(1950, 1, 1, tzinfo=dt.timezone.utc)).days
    days_after = (dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc) - now).days
    leaf = pki.make_leaf(ca.intermediate, days_before=days_before, days_after=days_after)
    cluster = own_server([leaf, ca.intermediate], leaf)
    result = check(cluster, ca, "--servername", "db.test", "-w", "10%", "-c", "5%")
    assert result.returncode == 0, result.stdout
    assert "intermediate CN=check_pg_tls Test Intermediate" in result.status_line
    # The intermediate lives 30 + 1825 days.
    assert result.perfdata["days_left"].split(";")[1:] == ["185.5:", "92.75:"]


def test_percent_of_a_short_lifetime_is_not_rounded_away(
    own_server: Callable[..., Cluster], ca: Pki
) -> None:
    # A certificate that lives one hour and has three minutes left: 10% of
    # its lifetime is six minutes, so it is CRITICAL (not rounded to 0 days).
    leaf = pki.make_leaf(ca.intermediate, days_before=57 / 1440, days_after=3 / 1440)
    cluster = own_server([leaf, ca.intermediate], leaf)
    result = check(cluster, ca, "--servername", "db.test", "-w", "20%", "-c", "10%")
    assert result.returncode == 2, result.stdout
    assert result.status_line.startswith("PG_TLS CRITICAL - 127.0.0.1(db.test):")
    assert result.perfdata["days_left"].split(";")[1:] == ["0.0083:", "0.0042:"]
