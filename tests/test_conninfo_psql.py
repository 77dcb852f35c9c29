"""Connection strings judged three times: psql 15, psql 18 and the plugin.

Each row is a string an application could have. psql 18 (its own libpq,
from the test bed's bundle) is the oracle: a string it refuses before
connecting is UNKNOWN with libpq's reason; one it accepts is checked on
the host, port and name libpq connects to and verifies, and the verdict is
whether psql connects. psql 15 (Debian's) is run too and pinned, so that
the README's list of where libpq 15 differs stays true.

The plugin's ``--sslmode`` stands where the string names none, as
``PGSSLMODE`` does for psql: both run with verify-full.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from testbed.pg18 import pg18_bindir
from testbed.pgcluster import Cluster

from .conftest import Pki, run_plugin

CONNECTS, FAILS = "connects", "fails"


class Row(NamedTuple):
    template: str
    #: psql 18: CONNECTS, FAILS (the server did not pass), or the words of
    #: libpq's refusal of the string (before it connects, or as it starts to).
    libpq18: str
    #: The same for psql 15.
    libpq15: str
    #: For a string that connects: the address, the scenario and the name verified.
    checked: tuple[str, str, str | None] | None = None
    scenario: str = "valid"


COMMON = "port={port} sslrootcert={root} user=postgres dbname=postgres"
URI = "postgresql://db.test:{port}/postgres?hostaddr=127.0.0.1&sslrootcert={root}&user=postgres"

ROWS = {
    # --- refused by libpq 18 before it connects ------------------------------
    "host-count-below-hostaddr": Row(
        f"host=db.test hostaddr=127.0.0.1,127.0.0.1 {COMMON}",
        "could not match 1 host names to 2 hostaddr values",
        "could not match 1 host names to 2 hostaddr values",
    ),
    "host-count-above-hostaddr": Row(
        f"host=db.test,db2.test hostaddr=127.0.0.1 {COMMON}",
        "could not match 2 host names to 1 hostaddr values",
        "could not match 2 host names to 1 hostaddr values",
    ),
    "port-count": Row(
        "host=db.test,db2.test hostaddr=127.0.0.1,127.0.0.1 port={port},{port},{port} "
        "sslrootcert={root}",
        "could not match 3 port numbers to 2 hosts",
        "could not match 3 port numbers to 2 hosts",
    ),
    "hostaddr-a-name": Row(
        f"host=db.test hostaddr=localhost {COMMON}",
        'could not parse network address "localhost"',
        'could not parse network address "localhost"',
    ),
    "hostaddr-with-a-blank": Row(
        f"host=db.test hostaddr='127.0.0.1 ' {COMMON}",
        'could not parse network address "127.0.0.1 "',
        'could not parse network address "127.0.0.1 "',
    ),
    "bad-percent-in-an-ignored-parameter": Row(
        URI + "&application_name=%zz",
        'invalid percent-encoded token: "%zz"',
        'invalid percent-encoded token: "%zz"',
    ),
    "nul-in-sslrootcert": Row(
        "postgresql://db.test:{port}/postgres?hostaddr=127.0.0.1&sslrootcert=%00",
        'forbidden value %00 in percent-encoded value: "%00"',
        'forbidden value %00 in percent-encoded value: "%00"',
    ),
    "blank-inside-a-uri-value": Row(
        URI + "&application_name=a b",
        "unexpected spaces found",
        CONNECTS,
        ("127.0.0.1", "valid", "db.test"),
    ),
    "system-roots-with-require": Row(
        "host=db.test hostaddr=127.0.0.1 port={port} sslrootcert=system sslmode=require "
        "user=postgres dbname=postgres",
        'weak sslmode "require" may not be used with sslrootcert=system',
        CONNECTS,  # 15 reads "system" as a file name, which require does not need
    ),
    "system-roots-with-verify-ca": Row(
        "host=db.test hostaddr=127.0.0.1 port={port} sslrootcert=system sslmode=verify-ca "
        "user=postgres dbname=postgres",
        'weak sslmode "verify-ca" may not be used with sslrootcert=system',
        FAILS,  # 15: root certificate file "system" does not exist
    ),
    "direct-with-prefer": Row(
        f"host=db.test hostaddr=127.0.0.1 sslnegotiation=direct sslmode=prefer {COMMON}",
        'weak sslmode "prefer" may not be used with sslnegotiation=direct',
        'invalid connection option "sslnegotiation"',
    ),
    "empty-sslmode": Row(
        f"host=db.test hostaddr=127.0.0.1 sslmode='' {COMMON}",
        'invalid sslmode value: ""',
        'invalid sslmode value: ""',
    ),
    "port-not-a-number": Row(
        "host=db.test hostaddr=127.0.0.1 port={port}x sslrootcert={root}",
        'invalid integer value "{port}x" for connection option "port"',
        'invalid integer value "{port}x" for connection option "port"',
    ),
    "port-zero": Row(
        "host=db.test hostaddr=127.0.0.1 port=0 sslrootcert={root}",
        'invalid port number: "0"',
        'invalid port number: "0"',
    ),
    "unknown-keyword": Row(
        f"host=db.test hostaddr=127.0.0.1 bogus=1 {COMMON}",
        'invalid connection option "bogus"',
        'invalid connection option "bogus"',
    ),
    "unknown-uri-parameter": Row(
        URI + "&bogus=1",
        'invalid URI query parameter: "bogus"',
        'invalid URI query parameter: "bogus"',
    ),
    "missing-equals": Row(
        f"host=db.test hostaddr=127.0.0.1 sslmode {COMMON}",
        'missing "=" after "sslmode" in connection info string',
        'missing "=" after "sslmode" in connection info string',
    ),
    "bad-choice-of-an-ignored-keyword": Row(
        f"host=db.test hostaddr=127.0.0.1 target_session_attrs=any-old {COMMON}",
        'invalid target_session_attrs value: "any-old"',
        'invalid target_session_attrs value: "any-old"',
    ),
    "bad-connect-timeout": Row(
        f"host=db.test hostaddr=127.0.0.1 connect_timeout=soon {COMMON}",
        'invalid integer value "soon" for connection option "connect_timeout"',
        'invalid integer value "soon" for connection option "connect_timeout"',
    ),
    "bad-keepalives": Row(
        f"host=db.test hostaddr=127.0.0.1 keepalives=yes {COMMON}",
        'invalid integer value "yes" for connection option "keepalives"',
        'invalid integer value "yes" for connection option "keepalives"',
    ),
    "verify-full-without-a-host-name": Row(
        f"hostaddr=127.0.0.1 sslmode=verify-full {COMMON}",
        "host name must be specified for a verified SSL connection",
        # 15 verifies the name of its default Unix socket directory instead.
        "does not match host name",
    ),
    # --- accepted by libpq: checked where and as libpq connects ---------------
    "backslash-escape-in-an-unquoted-value": Row(
        f"host=db\\.test hostaddr=127.0.0.1 sslmode=verify-full {COMMON}",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "valid", "db.test"),
    ),
    "jdbc-ssl-true": Row(
        "postgresql://127.0.0.1:{port}/postgres?ssl=true&user=postgres",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "self_signed", None),
        "self_signed",
    ),
    "requiressl": Row(
        "requiressl=1 host=127.0.0.1 port={port} user=postgres dbname=postgres",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "self_signed", None),
        "self_signed",
    ),
    "port-with-a-plus": Row(
        "host=db.test hostaddr=127.0.0.1 port=+{port} sslrootcert={root} user=postgres",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "valid", "db.test"),
    ),
    "port-with-blanks": Row(
        "host=db.test hostaddr=127.0.0.1 port=' {port} ' sslrootcert={root} user=postgres",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "valid", "db.test"),
    ),
    "hostaddr-shorthand": Row(
        f"host=db.test hostaddr=127.1 {COMMON}",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "valid", "db.test"),
    ),
    "sslsni-any-value": Row(
        f"host=db.test hostaddr=127.0.0.1 sslsni=yes {COMMON}",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "valid", "db.test"),
    ),
    "blanks-around-a-uri-value": Row(
        URI + "&sslmode= verify-full ",
        CONNECTS,
        'invalid sslmode value: " verify-full "',
        ("127.0.0.1", "valid", "db.test"),
    ),
    "percent-encoded-host": Row(
        "postgresql://db%2etest:{port}/postgres?hostaddr=127.0.0.1&sslrootcert={root}"
        "&user=postgres",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "valid", "db.test"),
    ),
    "later-value-wins": Row(
        URI + "&host=db2.test&sslmode=require&sslmode=verify-full",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "valid", "db2.test"),
    ),
    "ipv6-in-brackets": Row(
        "postgresql://[::1]:{port}/postgres?sslrootcert={root}&user=postgres",
        CONNECTS,
        CONNECTS,
        ("::1", "valid", None),
    ),
    "a-password-is-not-used": Row(
        f"host=db.test hostaddr=127.0.0.1 password='hun ter2' {COMMON}",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "valid", "db.test"),
    ),
    "verify-ca-without-a-host-name": Row(
        "hostaddr=127.0.0.1 port={port} sslmode=verify-ca sslrootcert={root} user=postgres",
        CONNECTS,
        CONNECTS,
        ("127.0.0.1", "wrong_name", None),
        "wrong_name",
    ),
    "wrong-name": Row(
        f"host=db.test hostaddr=127.0.0.1 sslmode=verify-full {COMMON}",
        FAILS,
        FAILS,
        scenario="wrong_name",
    ),
    "system-roots-default-to-verify-full": Row(
        "host=db.test hostaddr=127.0.0.1 port={port} sslrootcert=system user=postgres "
        "dbname=postgres",
        FAILS,
        FAILS,
    ),
}


class Judgement(NamedTuple):
    connected: bool
    #: libpq's words when it did not connect, "" when it did.
    error: str

    def is_(self, expected: str) -> bool:
        if expected == CONNECTS:
            return self.connected
        if expected == FAILS:
            return not self.connected and "connection to server at" in self.error
        return not self.connected and expected in self.error


def _psql(binary: str, conninfo: str, home: Path) -> Judgement:
    done = subprocess.run(
        [binary, "-X", "-At", "-c", "select 1", conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "PGSSLMODE": "verify-full",
            "PGCONNECT_TIMEOUT": "10",
        },
        stdin=subprocess.DEVNULL,
    )
    connected = done.returncode == 0 and done.stdout.strip() == "1"
    return Judgement(connected, "" if connected else done.stderr.strip())


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_the_plugin_reads_a_connection_string_as_libpq18(
    server: Callable[[str], Cluster], ca: Pki, psql_home: Path, row: Row
) -> None:
    port = server(row.scenario).port
    conninfo = row.template.format(port=port, root=ca.root_file)
    expected18 = row.libpq18.format(port=port)
    with ThreadPoolExecutor(3) as pool:
        older = pool.submit(_psql, shutil.which("psql") or "psql", conninfo, psql_home)
        newer = pool.submit(_psql, str(pg18_bindir() / "psql"), conninfo, psql_home)
        checked = pool.submit(run_plugin, conninfo, "--json")
        psql15, psql18, result = older.result(), newer.result(), checked.result()
    # The oracles, pinned first.
    assert psql18.is_(expected18), psql18
    assert psql15.is_(row.libpq15.format(port=port)), psql15
    if expected18 not in (CONNECTS, FAILS):
        # A run that fails as a whole still prints the format asked for.
        refused = json.loads(result.stdout)
        assert result.returncode == refused["exit_code"] == 3, result.stdout
        assert refused["state"] == "UNKNOWN"
        assert refused["error"].startswith("invalid connection string")
        assert expected18.split(" (")[0] in refused["error"]
        return
    document = json.loads(result.stdout)
    (target,) = document["targets"]
    if expected18 == FAILS:
        assert document["exit_code"] == 2, result.stdout
        return
    assert document["exit_code"] == 0, result.stdout
    assert row.checked is not None
    address, scenario, name = row.checked
    assert (target["host"], target["port"]) == (address, server(scenario).port)
    assert target["servername"] == (name or address)


def test_a_host_named_twice_is_checked_once_like_any_repeated_target(
    server: Callable[[str], Cluster], ca: Pki, psql_home: Path
) -> None:
    port = server("valid").port
    conninfo = (
        f"postgresql://db.test:{port},db.test:{port}/postgres?hostaddr=127.0.0.1,127.0.0.1"
        f"&sslrootcert={ca.root_file}&user=postgres"
    )
    assert _psql(str(pg18_bindir() / "psql"), conninfo, psql_home).connected
    document = json.loads(run_plugin(conninfo, "--json").stdout)
    assert [t["target"] for t in document["targets"]] == [f"127.0.0.1(db.test):{port}"]
