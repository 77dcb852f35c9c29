"""pg_tls_exporter's configuration: errors with file and line, reloads, and stopping.

A file that does not load at start is one line on stderr and a non-zero
exit; at run time SIGHUP and POST /-/reload load it again, and a file that
does not load leaves the old configuration serving. SIGTERM lets a running
probe finish and exits 0.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from check_pg_tls.exporter.allowlist import AllowList, parse_entry
from check_pg_tls.exporter.config import FileError, load
from check_pg_tls.exporter.probing import shown_spec
from testbed.exporter import Answer, ExporterProcess, exporter_argv
from testbed.faults import FaultServer, silent
from testbed.pgcluster import Cluster

from .conftest import Pki

ServerFactory = Callable[[str], Cluster]


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise KeyError(name)


GOOD = """\
modules:
  default:
    sslrootcert: {root}
    timeout: 3
allowed_targets:
  - 127.0.0.1/32
  - "*.test"
"""


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("modules: {default: {}}\nallowed_targets: []\nextra: 1\n", 3, "unknown key 'extra'"),
        (
            "modules:\n  default:\n    sslmode: verify-full\n    sslmdoe: require\n"
            "allowed_targets: []\n",
            4,
            "module 'default': unknown setting 'sslmdoe' (did you mean sslmode?)",
        ),
        (
            "modules:\n  default:\n    json: true\nallowed_targets: []\n",
            3,
            "module 'default': json cannot be set in a module: an output format",
        ),
        (
            "modules:\n  default:\n    targets_file: /etc/x\nallowed_targets: []\n",
            3,
            "targets_file cannot be set in a module",
        ),
        (
            "modules:\n  default:\n\n    sslmode: verify-none\nallowed_targets: []\n",
            4,
            "module 'default': argument --sslmode: invalid choice: 'verify-none'",
        ),
        (
            "modules:\n  default:\n    timeout: 5\n    sslrootcert: /nonexistent/root.crt\n"
            "allowed_targets: []\n",
            4,
            "cannot read root certificate file /nonexistent/root.crt",
        ),
        (
            "modules:\n  default:\n    check_revocation: yes please\nallowed_targets: []\n",
            3,
            "check_revocation: expected true or false",
        ),
        (
            "modules:\n  default:\n    warning: bogus\nallowed_targets: []\n",
            3,
            "invalid threshold",
        ),
        (
            "modules:\n  default:\n    sslkey: /etc/key.pem\nallowed_targets: []\n",
            2,
            "--sslkey needs --sslcert",
        ),
        (
            "modules:\n  default: {}\n  default: {}\nallowed_targets: []\n",
            3,
            "duplicate key 'default' in modules",
        ),
        ("modules:\n  bad/name: {}\nallowed_targets: []\n", 2, "invalid module name 'bad/name'"),
        ("modules: {default: {}}\nallowed_targets:\n  - 10.0.0.1/8\n", 3, "has host bits set"),
        ("modules: {default: {}}\nallowed_targets:\n  - 'db$.example'\n", 3, "host-name pattern"),
        ("modules: {default: {}}\nallowed_targets: 10.0.0.0/8\n", 2, "must be a list"),
        ("modules: {default: {}}\n", None, "no allowed_targets"),
        (
            "allowed_targets: []\n",
            None,
            "no modules: define at least one (the module 'default' answers probes that name none)",
        ),
        (
            "modules: {}\nallowed_targets: []\n",
            1,
            "no modules: define at least one (the module 'default' answers probes that name none)",
        ),
        ("modules: {default: {}\nallowed_targets: []\n", 2, "expected ',' or '}'"),
    ],
)
def test_config_errors_name_file_line_and_reason(
    tmp_path: Path, text: str, line: int | None, reason: str
) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(FileError) as caught:
        load(path)
    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(caught.value).startswith(where), str(caught.value)
    assert reason in str(caught.value)


def test_merge_keys_and_every_kind_of_setting(tmp_path: Path, ca: Pki) -> None:
    path = tmp_path / "good.yml"
    path.write_text(
        f"""
modules:
  default: &base
    sslrootcert: {ca.root_file}
    audit_crl: []
    timeout: 2.5
    warning: 20%
    critical: "10:"
    check_revocation: true
    min_tls_version: TLSv1.3
  pgbouncer:
    <<: *base
    port: 6432
allowed_targets: [127.0.0.1]
"""
    )
    config = load(path)
    assert sorted(config.modules) == ["default", "pgbouncer"]
    pgbouncer = config.modules["pgbouncer"].settings
    assert (pgbouncer.targets.port, pgbouncer.timeout) == (6432, 2.5)
    assert pgbouncer.revocation is not None
    thresholds = pgbouncer.thresholds
    assert (thresholds.warning.text, thresholds.critical.text) == ("20%", "10:")
    assert pgbouncer.posture.min_tls_version == "TLSv1.3"


def test_a_bad_config_at_start_is_one_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(
        "modules:\n  default:\n    sslrootcert: /nonexistent/root.crt\nallowed_targets: []\n"
    )
    done = subprocess.run(
        [*exporter_argv(), f"--config.file={path}", "--web.listen-address=127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"pg_tls_exporter: {path}:3: module 'default': cannot read root certificate file "
        "/nonexistent/root.crt: No such file or directory\n"
    )


def test_config_check_flag(tmp_path: Path, ca: Pki) -> None:
    path = tmp_path / "good.yml"
    path.write_text(GOOD.format(root=ca.root_file))
    done = subprocess.run(
        [*exporter_argv(), f"--config.file={path}", "--config.check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (0, f"{path}: valid\n")


def test_bad_flags_exit_non_zero(tmp_path: Path) -> None:
    for flags, message in (
        (["--web.listen-address=nowhere"], "invalid listen address 'nowhere'"),
        (["--probe.concurrency=0"], "--probe.concurrency"),
        (["--log.level=loud"], "--log.level"),
    ):
        done = subprocess.run(
            [*exporter_argv(), *flags], capture_output=True, text=True, timeout=30
        )
        assert done.returncode != 0 and message in done.stderr, (flags, done.stderr)
        assert done.stderr.count("\n") == 1


def test_version() -> None:
    done = subprocess.run(
        [*exporter_argv(), "--version"], capture_output=True, text=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (0, "pg_tls_exporter 0.1.0\n")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("db1.example.com", True),
        ("DB1.Example.COM.", True),
        ("a.b.example.com", True),
        ("example.com", False),
        ("evilexample.com", False),
        ("db-7.example.org", True),
        ("db7.example.org", False),
        ("10.1.2.3", True),
        ("10.2.0.1", False),
        ("::ffff:10.1.0.9", True),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("fe80::1%eth0", False),
        ("127.1", False),  # glibc reads it as 127.0.0.1: an address, not a name
        ("10.1", False),
        ("0x0a.1.2.3", True),  # 10.1.2.3 too
        ("localhost", False),
        ("xn--bcher-kva.example.com", True),
        ("bücher.example.com", True),  # the same name, as the resolver gets it
    ],
)
def test_allowlist(host: str, allowed: bool) -> None:
    entries = ["*.example.com", "db-?.example.org", "10.1.0.0/16", "2001:db8::/32"]
    assert AllowList([parse_entry(e) for e in entries]).allows(host) is allowed


def test_a_star_alone_allows_everything_and_a_pattern_names_only() -> None:
    # A pattern for every name reaches every address through some name
    # already: '*' alone allows addresses too, as the README says.
    star = AllowList([parse_entry("*")])
    for host in ("db.example.com", "127.0.0.1", "::1", "10.0.0.1", "127.1", "fe80::1%eth0"):
        assert star.allows(host), host
    names = AllowList([parse_entry("*.example.com"), parse_entry("db*")])
    for host in ("127.0.0.1", "::1", "10.0.0.1"):
        assert not names.allows(host), host
    assert names.allows("db1") and names.allows("a.example.com")


def test_targets_are_logged_with_the_checks_own_masking() -> None:
    assert shown_spec("postgresql://monitor:pa%24%24@db.test/x") == (
        "postgresql://monitor:***@db.test/x"
    )
    for spec, secret in (
        ("host=db.test password='se cret' user=x", "se cret"),
        ("postgresql://db.test/x?password=hunter2&sslmode=require", "hunter2"),
        ("host=db.test oauth_client_secret=SECRET6 sslmode=require", "SECRET6"),
        ("host=db.test sslpassword=SECRET7", "SECRET7"),
        ("host=db.test passwrd=SECRET8", "SECRET8"),
    ):
        assert secret not in shown_spec(spec), spec


@pytest.fixture
def reloading(tmp_path: Path, ca: Pki) -> Iterator[ExporterProcess]:
    config = tmp_path / "pg_tls_exporter.yml"
    config.write_text(GOOD.format(root=ca.root_file))
    exporter = ExporterProcess(tmp_path, config).start()
    yield exporter
    exporter.stop()


def _reloads(exporter: ExporterProcess) -> tuple[float, float]:
    text = exporter.get("/metrics").body
    return (
        metric(text, "pg_tls_exporter_config_last_reload_successful"),
        metric(text, "pg_tls_exporter_config_last_reload_success_timestamp_seconds"),
    )


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def test_sighup_and_reload_with_good_and_broken_files(
    reloading: ExporterProcess, ca: Pki, server: ServerFactory
) -> None:
    exporter, config = reloading, reloading.config
    target = f"/probe?target=127.0.0.1(db.test):{server('valid').port}"
    ok, first = _reloads(exporter)
    assert ok == 1
    assert exporter.get(f"{target}&module=other").status == 400
    # A good file with a new module, by SIGHUP.
    config.write_text(_with_other(ca))
    exporter.signal(signal.SIGHUP)
    _wait_for(lambda: exporter.get(f"{target}&module=other").status == 200)
    ok, second = _reloads(exporter)
    assert ok == 1 and second > first
    # A broken file by /-/reload: 500 with the reason; the old one serves on.
    config.write_text(_with_other(ca) + "  - what: is this\n")
    answer = exporter.request("POST", "/-/reload")
    assert answer.status == 500
    assert answer.body.startswith(f"configuration not reloaded: {config}:")
    assert _reloads(exporter) == (0, second)
    assert exporter.get(f"{target}&module=other").status == 200
    assert "configuration not reloaded, the old one stays" in exporter.log()
    # The same by SIGHUP: logged, still serving.
    config.write_text("modules: {default: {sslmode: verify-none}}\nallowed_targets: []\n")
    exporter.signal(signal.SIGHUP)
    _wait_for(lambda: "invalid choice: 'verify-none'" in exporter.log())
    assert exporter.get(f"{target}&module=other").status == 200
    # Fixed: /-/reload answers 200 and the metric is 1 again.
    config.write_text(GOOD.format(root=ca.root_file))
    assert exporter.request("POST", "/-/reload").status == 200
    ok, third = _reloads(exporter)
    assert ok == 1 and third > second
    assert exporter.get(f"{target}&module=other").status == 400


def _with_other(ca: Pki) -> str:
    return GOOD.format(root=ca.root_file).replace(
        "allowed_targets:", f"  other:\n    sslrootcert: {ca.root_file}\nallowed_targets:"
    )


def test_sigterm_lets_the_running_probe_finish_and_exits_0(reloading: ExporterProcess) -> None:
    exporter = reloading
    with FaultServer(silent()) as mute:
        answers: list[Answer] = []
        client = threading.Thread(
            target=lambda: answers.append(exporter.get(f"/probe?target=127.0.0.1:{mute.port}"))
        )
        client.start()
        _wait_for(lambda: len(mute._conns) == 1)
        started = time.monotonic()
        exporter.signal(signal.SIGTERM)
        # It stops accepting at once.
        _wait_for(lambda: not _accepts(exporter.port), timeout=3)
        assert exporter.process is not None
        code = exporter.process.wait(10)
        elapsed = time.monotonic() - started
        client.join()
    assert code == 0
    assert elapsed < 5, elapsed
    [answer] = answers
    assert answer.status == 200
    assert metric(answer.body, "probe_success") == 0
    assert "did not answer the SSLRequest within 3 seconds" in answer.body
    assert "SIGTERM: stopping" in exporter.log()


def test_sigterm_with_long_probes_in_flight_exits_within_seconds(tmp_path: Path, ca: Pki) -> None:
    # A module that gives a probe 30 seconds, three of them waiting on a
    # server that never answers, and a keep-alive connection left idle.
    config = tmp_path / "slow.yml"
    config.write_text(GOOD.format(root=ca.root_file).replace("timeout: 3", "timeout: 30"))
    exporter = ExporterProcess(tmp_path, config).start()
    with FaultServer(silent()) as mute:
        idle = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10)
        idle.request("GET", "/-/healthy")
        assert idle.getresponse().read() == b"Healthy\n"
        answers: list[Answer | str] = []

        def probe() -> None:
            try:
                answers.append(exporter.get(f"/probe?target=127.0.0.1:{mute.port}", timeout=60))
            except OSError as exc:
                answers.append(type(exc).__name__)

        clients = [threading.Thread(target=probe) for _ in range(3)]
        for client in clients:
            client.start()
        _wait_for(lambda: len(mute._conns) == 3)
        started = time.monotonic()
        exporter.signal(signal.SIGTERM)
        # The idle connection is closed at once: no probe starts on it.
        _wait_for(lambda: not _accepts(exporter.port), timeout=3)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            idle.request("GET", f"/probe?target=127.0.0.1:{mute.port}")
            idle.getresponse()
        assert exporter.process is not None
        code = exporter.process.wait(30)
        elapsed = time.monotonic() - started
        for client in clients:
            client.join()
        assert len(mute._conns) == 3
    assert code == 0
    assert elapsed < 6, elapsed
    assert [(a.status, a.body) for a in answers if isinstance(a, Answer)] == [
        (503, "the exporter is stopping: the probe was not finished\n")
    ] * 3, answers


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pyOpenSSL on the client key
def test_the_example_config_is_valid_apart_from_its_files(tmp_path: Path, ca: Pki) -> None:
    # The shipped example, with this machine's files for /etc/pg_tls_exporter.
    example = Path(__file__).parent.parent / "prometheus" / "pg_tls_exporter.yml"
    client = ca.dir / "client-example.crt"
    client_key = ca.dir / "client-example.key"
    if not client.exists():
        from testbed import pki

        leaf = pki.make_leaf(ca.intermediate, server_auth=False)
        pki.write_pem(client, leaf)
        client_key.write_bytes(leaf.key_pem)
        client_key.chmod(0o600)
    text = (
        example.read_text()
        .replace("/etc/pg_tls_exporter/root.crt", str(ca.root_file))
        .replace("/etc/pg_tls_exporter/client.crt", str(client))
        .replace("/etc/pg_tls_exporter/client.key", str(client_key))
    )
    path = tmp_path / "example.yml"
    path.write_text(text)
    config = load(path)
    assert sorted(config.modules) == [
        "default",
        "direct",
        "pgbouncer",
        "verify-ca",
        "with-client-cert",
    ]
    assert config.allowed.allows("db1.db.example.com")
    assert not config.allowed.allows("db1.example.net")
    assert json.dumps(sorted(e.text for e in config.allowed.entries))


def test_the_shipped_systemd_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    shipped = Path(__file__).parent.parent / "prometheus" / "pg_tls_exporter.service"
    text = shipped.read_text()
    for setting in (
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadOnlyPaths=/etc/pg_tls_exporter",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert f"\n{setting}\n" in text, setting
    # The installed script in place of the documented path, which must exist.
    unit = tmp_path / "pg_tls_exporter.service"
    unit.write_text(text.replace("/opt/pg_tls_exporter/bin/pg_tls_exporter", exporter_argv()[0]))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    exposure = re.search(
        r"Overall exposure level for pg_tls_exporter.service: ([\d.]+)", done.stdout
    )
    assert exposure is not None, done.stdout + done.stderr
    assert float(exposure.group(1)) <= 2.0, exposure.group(0)


def test_the_units_proc_keeps_the_process_metrics(tmp_path: Path) -> None:
    # /proc as the shipped unit has systemd mount it (ProtectProc= is hidepid=,
    # ProcSubset= is subset=), in a mount namespace of the exporter's own.
    shipped = Path(__file__).parent.parent / "prometheus" / "pg_tls_exporter.service"
    settings = dict(line.split("=", 1) for line in shipped.read_text().splitlines() if "=" in line)
    options = [f"hidepid={settings.get('ProtectProc', 'default')}"]
    if settings.get("ProcSubset", "all") != "all":
        options.append(f"subset={settings['ProcSubset']}")
    assert options[0] == "hidepid=invisible"  # other processes stay hidden
    config = tmp_path / "c.yml"
    config.write_text(json.dumps({"modules": {"default": {}}, "allowed_targets": []}))
    exporter = ExporterProcess(tmp_path, config)
    script = 'mount -t proc -o "$0" proc /proc && exec "$@"'
    with open(exporter.log_path, "ab") as log:
        exporter.process = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, ",".join(options), *exporter.argv()],
            stdout=log,
            stderr=log,
        )
    try:
        _wait_for(lambda: _accepts(exporter.port))
        text = exporter.get("/metrics").body
    finally:
        exporter.stop()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ):
        assert metric(text, name) > 0, name


def test_the_example_web_config_loads(tmp_path: Path, ca: Pki) -> None:
    from check_pg_tls.exporter import webconfig
    from testbed import pki

    example = Path(__file__).parent.parent / "prometheus" / "web-config.yml"
    leaf = pki.make_leaf(ca.intermediate, dns=("localhost",))
    pki.write_pem(tmp_path / "exporter.crt", leaf, ca.intermediate)
    (tmp_path / "exporter.key").write_bytes(leaf.key_pem)
    pki.write_pem(tmp_path / "prometheus-ca.crt", ca.other_root)
    path = tmp_path / "web-config.yml"
    path.write_text(example.read_text())
    loaded = webconfig.load(path)
    assert loaded.context is not None and list(loaded.users) == ["prometheus"]
    assert loaded.headers == {"X-Content-Type-Options": "nosniff"}
    from testbed.prometheus import promtool

    said = promtool("check", "web-config", str(path))
    assert said[0] == 0, said


def test_only_probing_calls_into_the_check() -> None:
    # The one module to rewrite when the check becomes a plain function:
    # every other module of the exporter takes nothing from the check but
    # its version.
    import ast

    package = Path(__file__).parent.parent / "check_pg_tls" / "exporter"
    for module in sorted(package.glob("*.py")):
        if module.name == "probing.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module is None, (module.name, node.module)
                assert [a.name for a in node.names] == ["__version__"], module.name
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("check_pg_tls"), (module.name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("check_pg_tls") for a in node.names), module.name


def test_a_port_alone_listens_on_ipv4_and_ipv6(tmp_path: Path) -> None:
    from testbed.pgcluster import free_port

    config = tmp_path / "c.yml"
    config.write_text(json.dumps({"modules": {"default": {}}, "allowed_targets": []}))
    port = free_port("::1")
    exporter = ExporterProcess(tmp_path, config, listen=f":{port}").start()
    try:
        for host in ("127.0.0.1", "::1"):
            assert exporter.request("GET", "/-/healthy", host=host).status == 200, host
    finally:
        exporter.stop()
