"""No part of a secret reaches any output, wherever it sits and whatever it holds.

A secret is written with the characters that mean something in a
connection string (``/ ? # @ & = : , [ ] %``, blanks, quotes, backslashes,
percent-encodings) and put in every place libpq reads one, or may take part
of one for something else: a URI's user info (where a ``/`` makes libpq read
a host and a port instead, and ``#`` starts a targets file's comment), a
URI's query, ``password=`` quoted or not (where a blank makes libpq read the
rest as more keywords), a misspelt keyword, a ``user:password@host`` without
a scheme. The secret, and every part of it of four characters or more that
the input does not also hold elsewhere, must never be shown: not by the
reading of the targets (a property test over generated secrets), and not in
any output of the plugin, on the command line or in a targets file, nor in
pg_tls_exporter's answers and log.

Parts checked hold one of the secret's letters: a part made of punctuation
only is the plugin's own punctuation too (perfdata's ``;;;``).
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from check_pg_tls.errors import UsageError
from check_pg_tls.model import TargetDefaults
from check_pg_tls.targets import read_targets, shown_spec
from testbed.exporter import ExporterProcess
from testbed.pgcluster import Cluster

from .conftest import Pki, Run, run_plugin

#: The secret's letters; no libpq keyword is spelt with them, so no part of
#: a secret reads as a keyword libpq knows (which libpq would then honour).
MARKERS = "xqzXQZ"
_META = [
    *"/?#@&=:,[]% '\\\"+;!$*\t",
    *["%2F", "%40", "%23", "%3F", "%26", "%3D", "%20", "%zz", "%00"],
]
SECRETS = (
    st.lists(st.sampled_from([*MARKERS, *_META]), min_size=4, max_size=18)
    .map("".join)
    .filter(lambda secret: sum(char in MARKERS for char in secret) >= 3)
)


def _raw(secret: str) -> str:
    return secret


def _encoded(secret: str) -> str:
    return urllib.parse.quote(secret, safe="")


def _escaped(secret: str) -> str:
    return secret.replace("\\", "\\\\").replace("'", "\\'")


_URI = "postgresql://db.test:{port}/postgres?hostaddr=127.0.0.1&sslrootcert={root}"
_KEYWORDS = "host=db.test hostaddr=127.0.0.1 port={port} sslrootcert={root}"

#: Where a secret is put ({s}), and how it is written there. Every server
#: named is 127.0.0.1, directly or as hostaddr: a string that is read is
#: checked there, and nothing is ever looked up.
PLACES: dict[str, tuple[str, Callable[[str], str]]] = {
    "uri-user-info": (
        "postgresql://app:{s}@db.test:{port}/postgres?hostaddr=127.0.0.1&sslrootcert={root}",
        _raw,
    ),
    "uri-user-info-encoded": (
        "postgresql://app:{s}@db.test:{port}/postgres?hostaddr=127.0.0.1&sslrootcert={root}",
        _encoded,
    ),
    "uri-user-info-no-path": ("postgresql://app:{s}@127.0.0.1:{port}", _raw),
    "uri-query-last": (_URI + "&password={s}", _raw),
    "uri-query-first": (
        "postgresql://db.test:{port}/postgres?password={s}&hostaddr=127.0.0.1&sslrootcert={root}",
        _raw,
    ),
    "uri-query-encoded": (_URI + "&password={s}", _encoded),
    "uri-query-sslpassword": (_URI + "&sslpassword={s}", _raw),
    "keywords-last": (_KEYWORDS + " password={s}", _raw),
    "keywords-first": ("password={s} " + _KEYWORDS, _raw),
    "keywords-blanks": (
        "host=db.test password = {s} hostaddr=127.0.0.1 port={port} sslrootcert={root}",
        _raw,
    ),
    "keywords-quoted": ("password='{s}' " + _KEYWORDS, _escaped),
    "keywords-quoted-unescaped": ("password='{s}' " + _KEYWORDS, _raw),
    "keywords-misspelt": (_KEYWORDS + " pasword={s}", _raw),
    "keywords-oauth-secret": ("oauth_client_secret={s} " + _KEYWORDS, _raw),
    "no-scheme": ("app:{s}@127.0.0.1:{port}", _raw),
    "scheme-typo": ("postgre://app:{s}@127.0.0.1:{port}/x", _raw),
}


def _place(name: str, secret: str, port: int = 5432, root: str = "/root.crt") -> tuple[str, str]:
    """The line with ``secret`` in place ``name``, and the secret as written there."""
    template, written = PLACES[name]
    form = written(secret)
    line = template.replace("{port}", str(port)).replace("{root}", root)
    return line.replace("{s}", form), form


def _leaks(shown: str, placed: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """Parts of secrets in ``shown``: (line, part) for each (line, secret, form written)."""
    found = []
    for line, secret, form in placed:
        elsewhere = line.replace(form, "\x00")
        for text in {secret, form}:
            for start in range(len(text) - 3):
                for end in range(start + 4, len(text) + 1):
                    part = text[start:end]
                    if set(part) & set(MARKERS) and part not in elsewhere and part in shown:
                        found.append((line, part))
    return found


# --- the reading of targets: every place, generated secrets -------------------------


def _what_reading_shows(line: str, listed: Path) -> str:
    """Every text the check derives from reading ``line``: its messages, the targets as
    each output names them, their settings; as an argument and as a targets file's line."""
    # How the exporter's log names a probe's target.
    shown = [shown_spec(line)]
    listed.write_bytes(line.encode("utf-8", "surrogateescape") + b"\n")
    for specs, path in (([line], None), ([], str(listed))):
        try:
            found = read_targets(specs, path, TargetDefaults(), {})
        except UsageError as exc:
            shown.append(str(exc))
            continue
        for target, problem in found:
            shown += [str(target), target.host, target.servername or "", problem or ""]
            shown += [f"{key}={value}" for key, value in target.settings]
    return "\n".join(shown)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(SECRETS)
@example("Xq/zQxQ")  # libpq reads a host and a port from the user info
@example("Xq#zQxQ")  # a targets file's comment would cut the line
@example("Xq zQ=Zx")  # libpq reads a keyword "zQ" after a blank
@example("Xq?z@Q/x")
@example("Xq&zQ=xZ")
@example("xQz'x Z\\q")
@example("//xxx")  # app://xxx@host: a scheme, or app's password?
def test_no_reading_of_a_target_shows_a_secret(secret: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        listed = Path(directory) / "targets"
        for name in PLACES:
            line, form = _place(name, secret)
            shown = _what_reading_shows(line, listed)
            assert not _leaks(shown, [(line, secret, form)]), (name, line, shown)


def test_a_password_with_a_slash_and_digits_first_is_no_port() -> None:
    # libpq reads "5437" as the port of host "app": no target says so.
    for line in ("postgresql://app:5437/XqzQ@127.0.0.1/db", "postgresql://app:5437,q/XqzQ@db.test"):
        with pytest.raises(UsageError) as refused:
            read_targets([line], None, TargetDefaults(), {})
        assert "5437" not in str(refused.value)
        assert "from what looks like a password" in str(refused.value)


# --- every output of the plugin -----------------------------------------------------

#: Secrets with each character that means something in a connection string.
PICKED = [
    "Xq/zQxZ",
    "Xq#zQxZ",
    "Xq?zQxZ",
    "Xq@zQxZ",
    "Xq&zQxZ",
    "Xq=zQxZ",
    "Xq zQxZ",
    "Xq zQ=Zx",
    "Xq #zQxZ",
    "Xq'zQxZ",
    "Xq\\zQxZ",
    "Xq%zzQxZ",
    "Xq%2FzQxZ",
    "Xq:zQxZ",
    "Xq,zQ[x]Z",
    "X/q?z#Q@x&Z=x",
]

FORMATS = {
    "nagios": [],
    "verbose": ["-v"],
    "json": ["--json"],
    "tap": ["--tap"],
    "quiet": ["--quiet"],
    "openmetrics": ["--openmetrics"],
    "openmetrics-file": ["--openmetrics", "--output", "{file}"],
}


def _shown(run: Run, file: Path | None) -> str:
    text = run.stdout + run.stderr
    if file is not None and file.exists():
        text += file.read_text()
    return text


def test_a_targets_file_shows_no_part_of_a_secret_in_any_format(
    server: Callable[[str], Cluster], ca: Pki, tmp_path: Path
) -> None:
    port = server("valid").port
    placed = [
        (*_place(name, secret, port, str(ca.root_file)), secret)
        for name in PLACES
        for secret in PICKED
    ]
    listed = tmp_path / "targets"
    listed.write_text("\n".join(line for line, _, _ in placed) + "\n")
    checks = [(line, secret, form) for line, form, secret in placed]

    def run(name: str) -> tuple[str, Run, Path]:
        file = tmp_path / f"{name}.prom"
        args = [arg.format(file=file) for arg in FORMATS[name]]
        return name, run_plugin("--targets-file", str(listed), *args), file

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(run, FORMATS))
    for name, result, file in runs:
        shown = _shown(result, file)
        # Some lines are checked (those without the test root are CRITICAL),
        # the refused ones are UNKNOWN: the run is real.
        assert result.returncode == 2, (name, shown[:2000])
        assert not _leaks(shown, checks), (name, _leaks(shown, checks)[:5])
    document = json.loads(next(r for n, r, _ in runs if n == "json").stdout)
    states = {target["state"] for target in document["targets"]}
    assert {"OK", "UNKNOWN"} <= states, states


def test_the_command_line_shows_no_part_of_a_secret(
    server: Callable[[str], Cluster], ca: Pki, tmp_path: Path
) -> None:
    port = server("valid").port
    formats = list(FORMATS)
    jobs: list[tuple[str, str, str, str]] = []
    places = ("uri-user-info", "keywords-first", "uri-query-first", "keywords-blanks")
    for index, secret in enumerate(PICKED):
        # Each secret once, in a place and a format of its own: the targets
        # file above has every pair.
        line, form = _place(places[index % len(places)], secret, port, str(ca.root_file))
        jobs.append((line, secret, form, formats[index % len(formats)]))

    def run(job: tuple[str, str, str, str]) -> tuple[tuple[str, str, str, str], Run, Path]:
        line, _, _, output = job
        file = tmp_path / f"{abs(hash(line))}.prom"
        args = [arg.format(file=file) for arg in FORMATS[output]]
        return job, run_plugin(line, *args), file

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(run, jobs))
    for (line, secret, form, output), result, file in runs:
        shown = _shown(result, file)
        assert result.returncode in (0, 3), (line, output, shown[:2000])
        assert not _leaks(shown, [(line, secret, form)]), (line, output, shown[:2000])


def test_the_reported_strings_show_no_part_of_their_secrets(
    server: Callable[[str], Cluster], ca: Pki, tmp_path: Path
) -> None:
    strings = {
        "postgresql://app:s3cr3tPW/xyz@db.example.com:5432/app": "s3cr3tPW/xyz",
        "host=db password=s3cr3t PW=tail": "s3cr3t PW=tail",
        "postgresql://app:5433/rest-of-pw@127.0.0.1/app": "5433/rest-of-pw",
    }
    for line, secret in strings.items():
        for output in ("--json", "--openmetrics"):
            result = run_plugin(line, output, "-t", "2")
            assert result.returncode == 3, result.stdout
            shown = result.stdout + result.stderr
            for part in (secret, *secret.replace("/", " ").split()):
                if len(part) >= 4:
                    assert part not in shown, (line, part, shown)
    # '#' in a URI's password, in a targets file: no comment, no port read from it.
    listed = tmp_path / "targets"
    port = server("valid").port
    listed.write_text(
        f"postgresql://app:s3cr3t#PW@db.test:{port}/app?hostaddr=127.0.0.1"
        f"&sslrootcert={ca.root_file}  # production\n"
    )
    result = run_plugin("--targets-file", str(listed), "--json")
    document = json.loads(result.stdout)
    (target,) = document["targets"]
    assert (target["target"], target["state"]) == (f"127.0.0.1(db.test):{port}", "OK"), target
    assert "s3cr3t" not in result.stdout


# --- pg_tls_exporter ----------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter(ca: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    path = tmp_path_factory.mktemp("exporter-secrets")
    config = path / "pg_tls_exporter.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {"default": {"sslrootcert": str(ca.root_file), "timeout": 5}},
                "allowed_targets": ["127.0.0.1/32", "*.test"],
            }
        )
    )
    process = ExporterProcess(path, config, "--log.level=debug").start()
    yield process
    process.stop()


_EXPORTER_PLACES = {
    "uri-user-info": "postgresql://app:{s}@db.test:{port}/postgres?hostaddr=127.0.0.1",
    "uri-query": "postgresql://db.test:{port}/postgres?password={s}&hostaddr=127.0.0.1",
    "keywords": "host=db.test hostaddr=127.0.0.1 port={port} password={s} user=x",
}


def test_the_exporter_shows_no_part_of_a_secret(
    exporter: ExporterProcess, server: Callable[[str], Cluster]
) -> None:
    port = server("valid").port
    checks = []
    bodies = []
    for secret in PICKED:
        for template in _EXPORTER_PLACES.values():
            line = template.replace("{port}", str(port)).replace("{s}", secret)
            checks.append((line, secret, secret))
            for debug in ("", "&debug=true"):
                answer = exporter.get(f"/probe?target={urllib.parse.quote(line)}{debug}")
                assert answer.status in (200, 400), (line, answer)
                bodies.append(answer.body)
    shown = "\n".join(bodies) + exporter.log()
    assert "probe_success 1" in shown  # strings that are read are probed
    assert not _leaks(shown, checks), _leaks(shown, checks)[:5]
