"""No output ever shows a password from a connection string.

Secrets sit in every place libpq reads one (a URI's user info, plain or
percent-encoded; ``password=`` and the other secret keywords, in a URI's
query or as ``key=value``, quoted, escaped, broken by a blank, an ``&`` or
an ``@``), in strings libpq refuses and in strings that are checked. Each
is given on the command line and in a targets file, and every output
format is read whole: stdout, stderr and the metrics file.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.pgcluster import Cluster

from .conftest import Pki, Run, run_plugin

#: A connection string (``{port}``, ``{root}`` filled in) and the texts of
#: its secret that must never be shown.
BAD = {
    "uri-user-info": ("postgresql://app:Hunter2userinfo@db.test/x?bogus=1", ["Hunter2userinfo"]),
    "uri-user-info-encoded": (
        "postgresql://app:Hun%74er2encoded@db.test/x?bogus=1",
        ["Hunter2encoded", "Hun%74er2encoded"],
    ),
    "uri-query": ("postgresql://db.test/x?password=Hunter2query&bogus=1", ["Hunter2query"]),
    "uri-query-encoded-keyword": (
        "postgresql://db.test/x?pass%77ord=Hunter2keyword&bogus=1",
        ["Hunter2keyword"],
    ),
    "uri-sslpassword": ("postgresql://db.test/x?sslpassword=Hunter2ssl", ["Hunter2ssl"]),
    "keywords": ("password=Hunter2plain bogus=1", ["Hunter2plain"]),
    "keywords-quoted": (
        "host=db.test password='Hun ter\\'2quoted' bogus=1",
        ["Hun ter'2quoted", "ter\\'2quoted", "ter'2quoted"],
    ),
    "keywords-escaped": ("password=Hun\\ ter2escaped bogus=1", ["Hun ter2escaped", "ter2escaped"]),
    "keywords-unquoted-blank": ("password=Hunter2 BlankTail host=db.test", ["BlankTail"]),
    "uri-bad-encoding-in-password": (
        "postgresql://app:Hunter2%zzbad@db.test/x",
        ["Hunter2", "zzbad"],
    ),
    "uri-nul-in-password": ("postgresql://db.test/x?password=Hunter2nul%00", ["Hunter2nul"]),
    "uri-ampersand-in-password": (
        "postgresql://db.test/x?password=Hunter2amp&AmpTail",
        ["Hunter2amp", "AmpTail"],
    ),
    "uri-at-in-password": (
        "postgresql://app:Hunter2at@AtTail@db.test/x",
        ["Hunter2at", "AtTail"],
    ),
    "oauth-client-secret": (
        "host=db.test oauth_client_secret=Hunter2oauth bogus=1",
        ["Hunter2oauth"],
    ),
    "misspelt-keyword": ("host=db.test pasword=Hunter2misspelt", ["Hunter2misspelt"]),
    "not-a-uri": ("postgre://app:Hunter2typo@db.test", ["Hunter2typo"]),
    "no-scheme": ("app:Hunter2noscheme@db.test", ["Hunter2noscheme"]),
}

#: Strings that are checked: their secrets are never used, nor shown.
GOOD = {
    "keywords": (
        "host=db.test hostaddr=127.0.0.1 port={port} sslrootcert={root} password=Hunter2good",
        ["Hunter2good"],
    ),
    "uri": (
        "postgresql://app:Hunter2gooduri@db.test:{port}/x?hostaddr=127.0.0.1&sslrootcert={root}",
        ["Hunter2gooduri"],
    ),
}

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


def _secrets(table: dict[str, tuple[str, list[str]]]) -> list[str]:
    return [secret for _, secrets in table.values() for secret in secrets]


def test_a_targets_file_shows_no_secret_in_any_format(
    server: Callable[[str], Cluster], ca: Pki, tmp_path: Path
) -> None:
    port = server("valid").port
    lines = [text for text, _ in [*BAD.values(), *GOOD.values()]]
    listed = tmp_path / "targets"
    listed.write_bytes(
        "\n".join(line.format(port=port, root=ca.root_file) for line in lines).encode()
        # A line that is not UTF-8 is quoted too.
        + b"\npassword=Hunter2bytes\xff bogus=1\n"
    )
    secrets = [*_secrets(BAD), *_secrets(GOOD), "Hunter2bytes"]

    def run(name: str) -> tuple[str, Run, Path]:
        file = tmp_path / f"{name}.prom"
        args = [arg.format(file=file) for arg in FORMATS[name]]
        return name, run_plugin("--targets-file", str(listed), *args), file

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(run, FORMATS))
    for name, result, file in runs:
        shown = _shown(result, file)
        # Every line was judged (the bad ones UNKNOWN), so the check is real.
        assert result.returncode == 3, (name, shown)
        assert "***" in shown or name in ("openmetrics", "openmetrics-file"), (name, shown)
        for secret in secrets:
            assert secret not in shown, (name, secret, shown)


def test_a_bad_connection_string_on_the_command_line_shows_no_secret(tmp_path: Path) -> None:
    # With --output, a run that fails as a whole prints its UNKNOWN line and
    # writes the reason into the metrics file: both outputs at once.
    def run(text: str) -> tuple[str, Run, Path]:
        file = tmp_path / f"{abs(hash(text))}.prom"
        return text, run_plugin(text, "--openmetrics", "--output", str(file)), file

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(run, [text for text, _ in BAD.values()]))
    for (text, result, file), (_, secrets) in zip(runs, BAD.values(), strict=True):
        shown = _shown(result, file)
        assert result.returncode == 3, shown
        assert result.status_line.startswith("PG_TLS UNKNOWN - invalid "), shown
        assert "pg_tls_error_info{reason=" in file.read_text()
        for secret in secrets:
            assert secret not in shown, (text, secret, shown)
