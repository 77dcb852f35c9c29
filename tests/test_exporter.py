"""pg_tls_exporter as Prometheus meets it: /probe, /metrics and the rest, on real servers.

One exporter process serves the module's tests; real PostgreSQL 15 servers
(good, expiring, untrusted) and a closed port are probed through it, and
what comes back is compared with what ``check_pg_tls --openmetrics`` says
about the same servers.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testbed import pki
from testbed.exporter import Answer, ExporterProcess
from testbed.faults import Behaviour, FaultServer, RefusedPort, scripted, silent
from testbed.pgcluster import Cluster, Workspace
from testbed.prometheus import promtool

from .conftest import Pki, run_plugin

ServerFactory = Callable[[str], Cluster]
DAY = 86400


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(text: str, name: str, **labels: str) -> float:
    matching = [v for found, v in samples(text).get(name, []) if labels.items() <= found.items()]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0]


@dataclass
class Setup:
    exporter: ExporterProcess
    #: Target spec by role: good, expiring, untrusted, dead.
    targets: dict[str, str]
    #: A cluster of this module's own, for counting what probes leave in its log.
    own: Cluster
    root_file: Path


@pytest.fixture(scope="module")
def setup(
    server: ServerFactory,
    ca: Pki,
    workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    path = tmp_path_factory.mktemp("exporter")
    leaf = pki.make_leaf(ca.intermediate, dns=("db.test",))
    own = workspace.cluster([leaf, ca.intermediate], leaf, name="exporter").start()
    config = path / "pg_tls_exporter.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {
                    "default": {"sslrootcert": str(ca.root_file), "timeout": 5},
                    "require": {"sslmode": "require", "timeout": 5},
                    "slow": {"sslrootcert": str(ca.root_file), "timeout": 20},
                },
                "allowed_targets": ["127.0.0.1/32", "::1", "*.test"],
            }
        )
    )
    with RefusedPort() as dead:
        targets = {
            "good": f"127.0.0.1(db.test):{server('valid').port}",
            "expiring": f"127.0.0.1(db.test):{server('expiring_warn').port}",
            "untrusted": f"127.0.0.1(db.test):{server('unknown_ca').port}",
            "dead": f"127.0.0.1:{dead.port}",
        }
        exporter = ExporterProcess(path, config, "--log.level=debug").start()
        yield Setup(exporter, targets, own, ca.root_file)
        exporter.stop()
    own.stop()


def probe(setup: Setup, target: str, *extra: str, **headers: str) -> Answer:
    query = "&".join([f"target={quote(target)}", *extra])
    return setup.exporter.get(f"/probe?{query}", headers=headers)


def test_probes_answer_as_the_check_does(setup: Setup, ca: Pki) -> None:
    answers = {role: probe(setup, target) for role, target in setup.targets.items()}
    assert {role: a.status for role, a in answers.items()} == dict.fromkeys(answers, 200)
    assert all(a.headers["Content-Type"].startswith("text/plain") for a in answers.values())
    text = {role: a.body for role, a in answers.items()}
    assert {r: value(t, "probe_success") for r, t in text.items()} == {
        "good": 1,
        "expiring": 1,
        "untrusted": 0,
        "dead": 0,
    }
    assert {r: value(t, "pg_tls_state") for r, t in text.items()} == {
        "good": 0,
        "expiring": 1,
        "untrusted": 2,
        "dead": 2,
    }
    assert value(text["dead"], "pg_tls_error_info", reason="connection refused") == 1
    assert value(text["untrusted"], "pg_tls_check_state", check="trust") == 2
    # No target label: Prometheus adds the instance.
    for body in text.values():
        assert all(
            "target" not in labels for found in samples(body).values() for labels, _ in found
        )
    now = time.time()
    days = {
        role: (value(text[role], "probe_ssl_last_chain_expiry_timestamp_seconds") - now) / DAY
        for role in ("good", "expiring", "untrusted")
    }
    assert 89 < days["good"] < 90.1
    assert 18 < days["expiring"] < 18.6
    assert 89 < days["untrusted"] < 90.1
    # The same families and values as check_pg_tls --openmetrics for the same
    # servers, but for the target label and the probe's own duration.
    listed = setup.exporter.path / "targets"
    listed.write_text("\n".join(setup.targets.values()) + "\n")
    cli = run_plugin(
        "--targets-file", str(listed), "--sslrootcert", str(ca.root_file), "--openmetrics"
    )
    assert cli.returncode == 2, cli.stdout
    for role, target in setup.targets.items():
        expected = {
            (
                name,
                json.dumps({k: v for k, v in labels.items() if k != "target"}, sort_keys=True),
            ): v
            for name, found in samples(cli.stdout).items()
            for labels, v in found
            if labels.get("target") == target and name != "probe_duration_seconds"
        }
        served = {
            (name, json.dumps(labels, sort_keys=True)): v
            for name, found in samples(text[role]).items()
            for labels, v in found
            if name != "probe_duration_seconds"
        }
        assert served == expected, role
        assert 0 < value(text[role], "probe_duration_seconds") < 5


def test_promtool_accepts_probe_and_metrics(setup: Setup) -> None:
    for role in ("good", "dead"):
        assert promtool("check", "metrics", stdin=probe(setup, setup.targets[role]).body) == (0, "")
    own = setup.exporter.get("/metrics")
    assert own.status == 200
    assert promtool("check", "metrics", stdin=own.body) == (0, "")


def test_openmetrics_when_prometheus_asks_for_it(setup: Setup) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    answer = probe(setup, setup.targets["good"], Accept=accept)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    assert answer.body.endswith("# EOF\n")
    assert "# TYPE probe_ssl_last_chain info" in answer.body


def test_debug_gives_the_verbose_text(setup: Setup) -> None:
    answer = probe(setup, setup.targets["untrusted"], "debug=true")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    lines = answer.body.splitlines()
    assert lines[0].startswith(f"PG_TLS CRITICAL - {setup.targets['untrusted']}: ")
    assert "chain does not reach a trusted root" in lines[0]
    assert any(line.startswith("leaf: subject ") for line in lines)
    assert any(line.startswith("trust: ") for line in lines)
    assert "Metrics that would have been returned:" in lines
    assert "probe_success 0.0" in lines


def test_a_module_is_chosen_by_name(setup: Setup) -> None:
    # Without the test root, only the require module accepts the chain.
    untrusted = setup.targets["untrusted"]
    assert value(probe(setup, untrusted, "module=require").body, "probe_success") == 1
    assert value(probe(setup, untrusted, "module=default").body, "probe_success") == 0


def test_connection_strings_are_targets(setup: Setup, server: ServerFactory) -> None:
    port = server("valid").port
    for spec in (
        f"host=db.test hostaddr=127.0.0.1 port={port}",
        f"postgresql://db.test:{port}/postgres?hostaddr=127.0.0.1&sslmode=verify-full",
        f"postgresql://monitor:s3cret@db.test:{port}/postgres?hostaddr=127.0.0.1",
    ):
        answer = probe(setup, spec)
        assert (answer.status, value(answer.body, "probe_success")) == (200, 1), spec


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "the target parameter is missing"),
        ("target=", "the target parameter is missing"),
        ("target=db.test&module=nope", "unknown module 'nope': modules are default, require, slow"),
        ("target=db..test", "invalid target 'db..test': empty label in host name"),
        ("target=db.test:99999", "port must be 1-65535"),
        ("target=db.test&target=db2.test", "target given more than once"),
        (
            "target=" + quote("host=127.0.0.1,db.test port=5432,5433"),
            "the connection string names 2 servers: probe one server per target",
        ),
        (
            "target=" + quote("host=db.test sslrootcert=/etc/shadow"),
            "may not name files on the exporter's host (sslrootcert)",
        ),
        (
            "target=" + quote("host=db.test password=hunter2 service=x"),
            "service= connection string",
        ),
    ],
)
def test_bad_requests_are_400_with_a_reason(setup: Setup, query: str, reason: str) -> None:
    answer = setup.exporter.get(f"/probe?{query}")
    assert answer.status == 400
    assert reason in answer.body
    assert answer.body.count("\n") == 1 and answer.body.endswith("\n")
    assert "hunter2" not in answer.body


def test_a_bad_scrape_timeout_header_is_400(setup: Setup) -> None:
    answer = probe(setup, setup.targets["good"], **{"X-Prometheus-Scrape-Timeout-Seconds": "soon"})
    assert answer.status == 400
    assert "X-Prometheus-Scrape-Timeout-Seconds" in answer.body


def test_targets_outside_the_allowlist_are_403_and_never_contacted(setup: Setup) -> None:
    with FaultServer(scripted(b"N")) as listener:
        port = listener.port
        refused = {
            f"localhost:{port}": "'localhost'",
            f"127.0.0.1(localhost):{port}": "'localhost'",
            f"host=localhost hostaddr=127.0.0.1 port={port}": "'localhost'",
            f"host=db.test hostaddr=127.0.0.2 port={port}": "'127.0.0.2'",
            f"postgresql://localhost:{port}/db": "'localhost'",
            f"[::2]:{port}": "'::2'",
        }
        for spec, named in refused.items():
            answer = probe(setup, spec)
            assert (answer.status, answer.body) == (403, f"{named} is not in allowed_targets\n")
        assert listener._conns == []
        # The listener would have seen a probe: an allowed one reaches it.
        answer = probe(setup, f"127.0.0.1:{port}")
        assert value(answer.body, "probe_success") == 0
        assert len(listener._conns) == 1


@pytest.mark.serial
def test_the_scrape_timeout_header_shortens_the_deadline(setup: Setup) -> None:
    with FaultServer(silent()) as mute:
        started = time.monotonic()
        # The module allows 20 seconds; Prometheus gives up after 2.
        answer = probe(
            setup,
            f"127.0.0.1:{mute.port}",
            "module=slow",
            **{"X-Prometheus-Scrape-Timeout-Seconds": "2"},
        )
        elapsed = time.monotonic() - started
    assert answer.status == 200
    assert elapsed < 2.0, elapsed
    assert elapsed > 1.0, elapsed
    assert value(answer.body, "probe_success") == 0
    [(labels, _)] = samples(answer.body)["pg_tls_error_info"]
    assert "1.5 seconds" in labels["reason"], labels


def test_own_metrics(setup: Setup) -> None:
    probe(setup, setup.targets["good"])
    probe(setup, setup.targets["dead"])
    text = setup.exporter.get("/metrics").body
    assert value(text, "pg_tls_exporter_config_last_reload_successful") == 1
    loaded = value(text, "pg_tls_exporter_config_last_reload_success_timestamp_seconds")
    assert time.time() - 600 < loaded <= time.time()
    assert value(text, "pg_tls_exporter_probes_total", module="default", result="success") >= 1
    assert value(text, "pg_tls_exporter_probes_total", module="default", result="failure") >= 1
    assert value(text, "pg_tls_exporter_probes_total", module="require", result="not_started") == 0
    assert value(text, "pg_tls_exporter_probe_duration_seconds_count", module="default") >= 2
    assert value(text, "pg_tls_exporter_probe_concurrency") == 32
    assert value(text, "process_open_fds") > 0
    assert value(text, "pg_tls_exporter_build_info", version="0.1.0") == 1


def test_health_landing_page_and_wrong_paths(setup: Setup) -> None:
    exporter = setup.exporter
    assert (exporter.get("/-/healthy").status, exporter.get("/-/healthy").body) == (
        200,
        "Healthy\n",
    )
    page = exporter.get("/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    links = re.findall(r'href="([^"]*)"', page.body)
    assert links == ["metrics", "-/healthy"]
    # Every link answers 200: a probe needs a target, so it is a form.
    assert all(exporter.get(f"/{link}").status == 200 for link in links)
    for module in ("default", "require", "slow"):
        assert f"<code>{module}</code>" in page.body
        assert f'<input type="hidden" name="module" value="{module}">' in page.body
    assert exporter.get("/nope").status == 404
    assert exporter.get("/probe/").status == 404
    wrong = exporter.request("POST", "/probe?target=db.test")
    assert (wrong.status, wrong.headers["Allow"]) == (405, "GET")
    assert exporter.get("/-/reload").status == 405
    assert exporter.request("DELETE", "/metrics").status == 405


def test_many_probes_keep_memory_and_descriptors_bounded(setup: Setup) -> None:
    exporter = setup.exporter
    target = f"127.0.0.1(db.test):{setup.own.port}"

    def one(_: int) -> float:
        return value(probe(setup, target).body, "probe_success")

    with ThreadPoolExecutor(32) as pool:
        assert set(pool.map(one, range(32))) == {1}  # warm: every pool thread started
        fds, rss = _settled_fds(exporter), exporter.rss_kib()
        assert set(pool.map(one, range(256))) == {1}
    after = _settled_fds(exporter, at_most=fds)
    assert after <= fds, (fds, after)
    grown = exporter.rss_kib() - rss
    assert grown < 20 * 1024, f"{grown} KiB more after 256 probes"
    # A thread per probe slot, one per request answered at once (32 here),
    # the reception and the main thread: none per probe made.
    assert exporter.threads() < 32 + 32 + 8


def _settled_fds(exporter: ExporterProcess, at_most: int | None = None) -> int:
    # Connection threads close their sockets just after the client does.
    deadline = time.monotonic() + 10
    count = exporter.fd_count()
    while time.monotonic() < deadline and (at_most is not None and count > at_most):
        time.sleep(0.05)
        count = exporter.fd_count()
    return count


def test_probes_leave_no_error_lines_in_the_server_log(setup: Setup) -> None:
    cluster = setup.own
    target = f"127.0.0.1(db.test):{cluster.port}"
    for extra in ((), ("module=require",), ("debug=true",)):
        assert probe(setup, target, *extra).status == 200
    cluster.wait_for_backends()
    log = cluster.log()
    assert log.count("connection received") >= 3
    for line in log.splitlines():
        assert not re.search(r"\b(ERROR|FATAL|PANIC|WARNING)\b", line), line
        assert "could not" not in line, line


def test_the_log_holds_no_password(setup: Setup, server: ServerFactory) -> None:
    port = server("valid").port
    probe(setup, f"postgresql://monitor:pa55word@db.test:{port}/db?hostaddr=127.0.0.1")
    probe(setup, f"host=db.test hostaddr=127.0.0.1 port={port} password=pa55word")
    log = setup.exporter.log()
    assert "probe of" in log
    assert "pa55word" not in log


def test_a_plain_check_imports_nothing_of_the_exporter(server: ServerFactory, ca: Pki) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "check_pg_tls",
            f"127.0.0.1(db.test):{server('valid').port}",
            "--sslrootcert",
            str(ca.root_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "check_pg_tls.cli" in imported and "nagiosplugin" in imported
    for name in imported:
        top = name.split(".")[0]
        assert top not in ("prometheus_client", "yaml", "_yaml", "bcrypt"), name
        assert not name.startswith("check_pg_tls.exporter"), name


@pytest.fixture
def one_slot(tmp_path: Path, ca: Pki) -> Iterator[ExporterProcess]:
    config = tmp_path / "one.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {"default": {"sslrootcert": str(ca.root_file), "timeout": 1}},
                "allowed_targets": ["127.0.0.1", "*.test"],
            }
        )
    )
    exporter = ExporterProcess(tmp_path, config, "--probe.concurrency=1").start()
    yield exporter
    exporter.stop()


def _relay(upstream: int, delay: float) -> Behaviour:
    """A healthy server far away: each chunk forwarded ``delay`` seconds late."""

    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def behaviour(conn: socket.socket, stopping: threading.Event) -> None:
        with socket.create_connection(("127.0.0.1", upstream), 5) as up:
            back = threading.Thread(target=pump, args=(up, conn), daemon=True)
            back.start()
            pump(conn, up)
            back.join(10)

    return behaviour


def _holding(
    exporter: ExporterProcess, mute: FaultServer, answers: list[Answer]
) -> threading.Thread:
    """A probe of a silent server that holds the one slot for its whole second."""
    count = len(mute._conns)
    holder = threading.Thread(
        target=lambda: answers.append(exporter.get(f"/probe?target=127.0.0.1:{mute.port}"))
    )
    holder.start()
    _wait_for(lambda: len(mute._conns) == count + 1)
    return holder


@pytest.mark.serial
def test_a_probe_that_waited_for_a_slot_gets_its_whole_time_or_503(
    one_slot: ExporterProcess, server: ServerFactory
) -> None:
    far_server = FaultServer(_relay(server("valid").port, 0.1))
    with FaultServer(silent()) as mute, far_server as far:
        far_target = f"/probe?target={quote(f'127.0.0.1(db.test):{far.port}')}"
        # Alone, a healthy server 0.1 s per exchange away is well within 1 s.
        assert value(one_slot.get(far_target).body, "probe_success") == 1
        # Behind a probe that holds the slot for its second, with a scrape
        # timeout that leaves room to wait: it waits, then has its whole second.
        held: list[Answer] = []
        holder = _holding(one_slot, mute, held)
        started = time.monotonic()
        waited = one_slot.get(far_target, headers={"X-Prometheus-Scrape-Timeout-Seconds": "3"})
        elapsed = time.monotonic() - started
        holder.join()
        assert elapsed > 0.7, elapsed
        assert (waited.status, value(waited.body, "probe_success")) == (200, 1), waited.body
        # A silent server that waited says the module's second, as one that did
        # not: the reason label stays the same from scrape to scrape.
        holder = _holding(one_slot, mute, held)
        late = one_slot.get(
            f"/probe?target=127.0.0.1:{mute.port}",
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "3"},
        )
        holder.join()
        reasons = {
            labels["reason"]
            for answer in (*held, late)
            for labels, _ in samples(answer.body)["pg_tls_error_info"]
        }
        assert reasons == {
            "server accepted the connection but did not answer the SSLRequest within 1 seconds"
        }
        # No room to wait (0.7 s of a 1.2 s scrape timeout is the probe's
        # whole time): at once, the exporter says it is busy, not the server.
        holder = _holding(one_slot, mute, held)
        started = time.monotonic()
        busy = one_slot.get(far_target, headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.2"})
        elapsed = time.monotonic() - started
        holder.join()
    assert (busy.status, busy.body) == (
        503,
        "exporter busy: no probe slot free in time for a 0.7-second probe "
        "(--probe.concurrency 1)\n",
    )
    assert elapsed < 0.5, elapsed
    text = one_slot.get("/metrics").body
    assert value(text, "pg_tls_exporter_probes_total", module="default", result="not_started") == 1


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def test_port_is_free_after_stop(tmp_path: Path, ca: Pki) -> None:
    config = tmp_path / "c.yml"
    config.write_text(json.dumps({"modules": {"default": {}}, "allowed_targets": []}))
    exporter = ExporterProcess(tmp_path, config).start()
    assert exporter.terminate() == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", exporter.port))


def test_targets_in_the_log_are_masked_at_every_level(setup: Setup, server: ServerFactory) -> None:
    port = server("valid").port
    secrets = ["SECRETPW1", "SECRETPW2", "SECRETPW3", "SECRET PW4", "SECRETPW5"]
    for spec in (
        f"host=127.0.0.1 port={port} password=SECRETPW1 sslmode=require",
        f"host=127.0.0.1 port={port} oauth_client_secret=SECRETPW2 sslmode=require",
        f"postgresql://u:SECRETPW3@127.0.0.1:{port}/?sslmode=require",
        f"host=127.0.0.1 port={port} password='SECRET PW4' sslmode=require",
        f"host=127.0.0.1 port={port} sslpassword=SECRETPW5",
    ):
        for extra in ((), ("debug=true",)):
            assert probe(setup, spec, *extra).status in (200, 400), spec
    log = setup.exporter.log()
    assert "probe of host=127.0.0.1" in log  # the debug lines are there
    for secret in secrets:
        assert secret not in log, secret


@pytest.mark.parametrize(
    ("header", "status", "within"),
    [
        # As blackbox_exporter: 0 is no header (120 s), at most the module's 5.
        ("0", 200, "5"),
        ("", 200, "5"),
        ("1e9", 200, "5"),
        ("999999", 200, "5"),
        ("3", 200, "2.5"),
        # An offset as long as the scrape timeout: half of it, never less
        # for a longer header.
        ("1", 200, "0.5"),
        ("0.6", 200, "0.3"),
        ("0.51", 200, "0.255"),
        ("0.5", 200, "0.25"),
        ("0.1", 200, "0.05"),
        # Too short for any probe: said so, never "no probe slot free".
        ("0.09", 400, "raise the scrape timeout"),
        ("1e-300", 400, "raise the scrape timeout"),
        ("-1", 400, "not a number of seconds"),
        ("nan", 400, "not a number of seconds"),
        ("inf", 400, "not a number of seconds"),
        ("soon", 400, "not a number of seconds"),
    ],
)
def test_the_scrape_timeout_header_edge_values(
    setup: Setup, header: str, status: int, within: str
) -> None:
    with FaultServer(silent()) as mute:
        started = time.monotonic()
        answer = probe(
            setup,
            f"127.0.0.1:{mute.port}",
            **{"X-Prometheus-Scrape-Timeout-Seconds": header},
        )
        elapsed = time.monotonic() - started
    assert answer.status == status, answer.body
    if status == 400:
        assert within in answer.body
        assert answer.body.count("\n") == 1
        return
    [(labels, _)] = samples(answer.body)["pg_tls_error_info"]
    assert labels["reason"].endswith(f"within {within} seconds"), labels
    assert elapsed < float(within) + 0.2, elapsed


def test_without_a_default_module_a_probe_must_name_one(
    tmp_path: Path, ca: Pki, server: ServerFactory
) -> None:
    config = tmp_path / "c.yml"
    config.write_text(
        json.dumps(
            {
                "modules": {"main": {"sslrootcert": str(ca.root_file)}},
                "allowed_targets": ["127.0.0.1", "*.test"],
            }
        )
    )
    exporter = ExporterProcess(tmp_path, config).start()
    try:
        target = f"/probe?target=127.0.0.1(db.test):{server('valid').port}"
        named = exporter.get(f"{target}&module=main")
        unnamed = exporter.get(target)
    finally:
        exporter.stop()
    assert (named.status, value(named.body, "probe_success")) == (200, 1)
    assert (unnamed.status, unnamed.body) == (
        400,
        "no module given and no module 'default': modules are main\n",
    )
