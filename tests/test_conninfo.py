"""libpq connection strings as targets: what an admin already has, judged as libpq would.

The parser on its own, then the same strings against a real server with
psql, given the very same string, as the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from check_pg_tls.conninfo import ConnSpec, parse_conninfo
from testbed.pgcluster import Cluster

from .conftest import Pki, psql_with, run_plugin

# --- the parser ---------------------------------------------------------------


def test_uri_with_query_parameters() -> None:
    (spec,) = parse_conninfo(
        "postgresql://app:secret@db.example.com:5433/appdb"
        "?sslmode=verify-ca&sslrootcert=/etc/pg/root.crt&application_name=x"
    )
    assert spec == ConnSpec(
        "db.example.com",
        None,
        5433,
        (("sslmode", "verify-ca"), ("sslrootcert", "/etc/pg/root.crt")),
    )


def test_keyword_string_with_hostaddr_and_quotes() -> None:
    (spec,) = parse_conninfo(
        "host=db.example.com hostaddr=10.0.0.5 port=5433 sslmode=verify-full "
        "sslrootcert='/etc/my pg/root.crt' user=postgres"
    )
    assert spec.host == "db.example.com"
    assert spec.hostaddr == "10.0.0.5"
    assert spec.port == 5433
    assert spec.get("sslrootcert") == "/etc/my pg/root.crt"


def test_multi_host_uri_and_list_check_every_host() -> None:
    specs = parse_conninfo("postgresql://a.test:5433,[::1],b.test/db?sslmode=require")
    assert [(s.host, s.port) for s in specs] == [("a.test", 5433), ("::1", None), ("b.test", None)]
    listed = parse_conninfo("host=a.test,b.test port=5432,5433")
    assert [(s.host, s.port) for s in listed] == [("a.test", 5432), ("b.test", 5433)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("host=a.test service=prod", "pg_service.conf", id="service"),
        pytest.param("host=a.test sslpassword=x", "'sslpassword' would change", id="unhonoured"),
        pytest.param("host=a.test sslmode=sometimes", "invalid sslmode", id="bad-sslmode"),
        pytest.param(
            "host=a.test,b.test port=1,2,3", "could not match 3 port numbers to 2 hosts", id="ports"
        ),
        pytest.param("host=/var/run/postgresql", "Unix socket", id="socket"),
        pytest.param("dbname=app", "needs host or hostaddr", id="no-host"),
        pytest.param("host='unterminated", "unterminated quoted string", id="quote"),
    ],
)
def test_bad_connection_strings_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_conninfo(text)


# --- against a real server, psql given the same string ------------------------


@pytest.mark.parametrize(
    ("scenario", "template", "accepted"),
    [
        pytest.param(
            "valid",
            "postgresql://db.test:{port}/postgres?hostaddr=127.0.0.1&sslmode=verify-full"
            "&sslrootcert={root}&user=postgres",
            True,
            id="uri-verify-full",
        ),
        pytest.param(
            "wrong_name",
            "host=db.test hostaddr=127.0.0.1 port={port} sslmode=verify-full "
            "sslrootcert={root} user=postgres dbname=postgres",
            False,
            id="keywords-wrong-name",
        ),
        pytest.param(
            "wrong_name",
            "host=db.test hostaddr=127.0.0.1 port={port} sslmode=verify-ca "
            "sslrootcert={root} user=postgres dbname=postgres",
            True,
            id="keywords-verify-ca-ignores-the-name",
        ),
        pytest.param(
            "self_signed",
            "postgresql://127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={root}"
            "&user=postgres",
            False,
            id="uri-untrusted",
        ),
    ],
)
def test_connection_string_agrees_with_psql(
    server: Callable[[str], Cluster],
    ca: Pki,
    psql_home: Path,
    scenario: str,
    template: str,
    accepted: bool,
) -> None:
    conninfo = template.format(port=server(scenario).port, root=ca.root_file)
    assert psql_with(conninfo, psql_home).connected is accepted  # the oracle, pinned first
    result = run_plugin(conninfo)
    assert result.returncode == (0 if accepted else 2), result.stdout


def test_prefer_is_reported_and_the_offered_tls_still_judged(
    server: Callable[[str], Cluster], ca: Pki
) -> None:
    result = run_plugin(f"postgresql://127.0.0.1:{server('valid').port}/db?sslmode=prefer")
    assert result.returncode == 1, result.stdout
    assert "sslmode=prefer in the connection string lets a client run without TLS" in (
        result.status_line
    )
    assert "certificate expires in 89 days" in result.status_line


def test_a_connection_strings_bad_root_file_is_its_own_unknown(
    server: Callable[[str], Cluster], ca: Pki
) -> None:
    port = server("valid").port
    result = run_plugin(
        f"host=db.test hostaddr=127.0.0.1 port={port} sslrootcert=/nonexistent/root.crt",
        f"127.0.0.1(db.test):{port}",
        "--sslrootcert",
        str(ca.root_file),
    )
    assert result.returncode == 3, result.stdout
    lines = result.stdout.splitlines()
    assert "cannot read root certificate file /nonexistent/root.crt" in lines[0]
    assert [line.split(" ", 1)[0] for line in lines[1:3]] == ["UNKNOWN", "OK"]


def test_unhonoured_keyword_is_unknown_with_its_name() -> None:
    result = run_plugin("host=db.test ssl_min_protocol_version=TLSv1.3")
    assert result.returncode == 3
    assert "connection keyword 'ssl_min_protocol_version' would change what a client does" in (
        result.status_line
    )
