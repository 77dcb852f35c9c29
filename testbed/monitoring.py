"""The monitoring systems our configurations are written for, run for real.

Icinga 2, Nagios 4 and NRPE as Debian packages them, each in a throwaway
directory of its own, on loopback only. Nothing here reads or writes /etc,
/var or anything a previous run left: every path a daemon uses is given to
it explicitly.

A missing daemon is an error, not a reason to skip: CI installs them
(``scripts/setup-env --test``), and a test that silently skips proves nothing.
"""

from __future__ import annotations

import atexit
import datetime as dt
import fcntl
import functools
import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .pgcluster import (
    PORT_ATTEMPTS,
    ServerProcess,
    free_port,
    owned_by_this_process,
    port_taken,
    spawn_as,
)

__all__ = [
    "CONF",
    "IcingaDaemon",
    "IcingaTree",
    "NagiosTree",
    "Nrpe",
    "PluginOutput",
    "check_nrpe",
    "icinga_cluster_pki",
    "install_plugin",
    "installed_plugin",
    "perfdata_fields",
    "program",
    "read_netstrings",
    "shared_dir",
]

REPO = Path(__file__).resolve().parent.parent
#: The configurations we ship.
CONF = REPO / "icinga-conf"

# Daemons live in sbin, which a non-root PATH often lacks; check_nrpe lives
# with the plugins.
_SEARCH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/lib/nagios/plugins")
_PACKAGES = {
    "icinga2": "icinga2-bin",
    "nagios4": "nagios4-core",
    "nrpe": "nagios-nrpe-server",
    "check_nrpe": "nagios-nrpe-plugin",
}


def program(name: str) -> str:
    """The absolute path of a daemon or tool, or a clear error naming its package."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *_SEARCH]))
    if found is None:
        package = _PACKAGES.get(name, name)
        raise FileNotFoundError(
            f"{name} not found: apt-get install {package} (scripts/setup-env --test does)"
        )
    return found


def _user_and_group() -> tuple[str, str]:
    entry = pwd.getpwuid(os.geteuid())
    return entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name


def shared_dir(prefix: str) -> Path:
    """A fresh directory on tmpfs that daemons running as other users can read.

    mkdtemp makes it 0700 and pytest's tmp_path sits under a 0700 directory;
    NRPE runs its commands as ``nagios``, which must reach the plugin.
    """
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


# --- the plugin, installed as the README says --------------------------------

_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "bench",
)


def install_plugin(target: Path, python: str = "/usr/bin/python3") -> Path:
    """Install this checkout the README's way, for users other than ours.

    A virtualenv of the system Python (the test's own interpreter may live
    where ``nagios`` cannot go, e.g. in root's home) with the plugin
    pip-installed into it, all world-readable. The checkout is copied first
    so that building it writes nothing into the working tree. Returns the
    console script, ``bin/check_pg_tls``.
    """
    source = target / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    venv = target / "venv"
    steps = [
        [python, "-m", "venv", "--without-pip", str(venv)],
        # pip >= 22.3 installs into another interpreter's environment, with
        # that interpreter's wheel tags.
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
    ]
    for argv in steps:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            umask=0o022,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[:4]} failed:\n{done.stdout}\n{done.stderr}")
    shutil.rmtree(source)
    script = venv / "bin" / "check_pg_tls"
    if not script.exists():
        raise RuntimeError(f"pip install made no {script}")
    return script


#: A directory the processes of one test run share (tests/conftest.py sets
#: it for pytest and its xdist workers), made by :func:`run_dir`.
RUN_DIR_ENV = "CHECK_PG_TLS_RUN_DIR"


def run_dir() -> Path:
    """A directory for one test run, readable by the daemons' users; whoever
    made it removes it, or the next workspace once its maker is gone."""
    path = shared_dir("check_pg_tls-run-")
    owned_by_this_process(path)
    return path


@functools.cache
def installed_plugin() -> Path:
    """One installation per test run, shared by every daemon and every
    process of the run (the first installs, under a lock; the others wait
    and use it); without a run directory, one per process, removed at exit."""
    shared = os.environ.get(RUN_DIR_ENV)
    if not shared:
        target = shared_dir("check_pg_tls-plugin-")
        atexit.register(shutil.rmtree, target, ignore_errors=True)
        return install_plugin(target)
    target = Path(shared) / "plugin"
    script = target / "venv" / "bin" / "check_pg_tls"
    with open(Path(shared) / "plugin.lock", "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not script.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            target.chmod(0o755)
            install_plugin(target)
    return script


# --- what a plugin printed ----------------------------------------------------


@dataclass(frozen=True)
class PluginOutput:
    """Nagios plugin output: status text, perfdata by label, long text.

    The plugin API's format: ``TEXT | PERFDATA`` on the first line, then
    optional long output lines.
    """

    text: str
    perfdata: dict[str, list[str]]
    long_output: tuple[str, ...]

    @classmethod
    def parse(cls, output: str) -> PluginOutput:
        first, *rest = output.rstrip("\n").split("\n")
        text, _, perf = first.partition("|")
        return cls(text.strip(), perfdata_fields(perf.split()), tuple(rest))

    def value(self, label: str) -> float:
        return float(re.sub(r"[^-0-9.]", "", self.perfdata[label][0]))


def perfdata_fields(items: Sequence[str]) -> dict[str, list[str]]:
    """``label=value[uom];warn;crit;min;max`` items, by label."""
    fields: dict[str, list[str]] = {}
    for item in items:
        label, sep, rest = item.partition("=")
        if not sep or label in fields:
            raise ValueError(f"bad or duplicate perfdata item {item!r}")
        fields[label] = rest.split(";")
    return fields


# --- Icinga 2 -----------------------------------------------------------------


def read_netstrings(path: Path) -> Iterator[dict[str, Any]]:
    """Icinga's state and debug files: JSON objects framed as netstrings
    (``<byte count>:<json>,``)."""
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        colon = data.index(b":", pos)
        size = int(data[pos:colon])
        start = colon + 1
        record = json.loads(data[start : start + size])
        if data[start + size : start + size + 1] != b",":
            raise ValueError(f"{path}: bad netstring at byte {pos}")
        pos = start + size + 1
        assert isinstance(record, dict)
        yield record


# The directories Icinga would take from /etc, /var and /run, under a tree.
_ICINGA_DIRS = {
    "ConfigDir": ".",
    "DataDir": "lib",
    "LogDir": "log",
    "CacheDir": "cache",
    "SpoolDir": "spool",
    "InitRunDir": "run",
    # Objects under zones.d/<zone>/ belong to that zone, as on a master.
    "ZonesDir": "zones.d",
}


class IcingaTree:
    """A self-contained Icinga 2 configuration and state tree.

    ``top.conf`` plays icinga2.conf: the constants a package would put into
    constants.conf, the whole template library, a master zone, then the
    test's objects and our files. Every directory the daemon would take from
    /etc, /var or /run is overridden with ``-D``.
    """

    def __init__(
        self,
        path: Path,
        plugin_dir: Path,
        node: str = "master.test",
        zone: str = "master",
        parent: str | None = None,
    ) -> None:
        self.path = path
        self.plugin_dir = plugin_dir
        self.node = node
        self.zone = zone
        self.parent = parent
        for sub in _ICINGA_DIRS.values():
            (path / sub).mkdir(parents=True, exist_ok=True)
        self.top = path / "top.conf"
        self.icinga2 = program("icinga2")

    def defines(self) -> list[str]:
        user, group = _user_and_group()
        dirs = [f"-D{name}={(self.path / sub).resolve()}" for name, sub in _ICINGA_DIRS.items()]
        return [*dirs, f"-DRunAsUser={user}", f"-DRunAsGroup={group}"]

    def write(self, body: str, includes: Sequence[Path] = ()) -> None:
        lines = [
            f"const PluginDir = {_icinga_string('/usr/lib/nagios/plugins')}",
            f"const PluginContribDir = {_icinga_string(self.plugin_dir)}",
            f"const ManubulonPluginDir = {_icinga_string('/usr/lib/nagios/plugins')}",
            f"const NodeName = {_icinga_string(self.node)}",
            f"const ZoneName = {_icinga_string(self.zone)}",
            'const TicketSalt = ""',
            "object Endpoint NodeName { }",
            "object Zone ZoneName {",
            "  endpoints = [ NodeName ]",
            *([f"  parent = {_icinga_string(self.parent)}"] if self.parent else []),
            "}",
            # The stock icinga2.conf's includes: ours must not clash with any.
            "include <itl>",
            "include <plugins>",
            "include <plugins-contrib>",
            "include <manubulon>",
            "include <windows-plugins>",
            "include <nscp>",
            body,
            *(f"include {_icinga_string(path)}" for path in includes),
        ]
        self.top.write_text("\n".join(lines) + "\n")

    def _argv(self, *args: str) -> list[str]:
        return [self.icinga2, "daemon", *args, "-c", str(self.top), *self.defines()]

    def validate(self) -> subprocess.CompletedProcess[str]:
        """``icinga2 daemon -C``: compile and validate, then exit."""
        return subprocess.run(
            self._argv("-C"),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def objects(self) -> list[dict[str, Any]]:
        """Every object of the last validation, with its resolved properties."""
        return list(read_netstrings(self.path / "cache" / "icinga2.debug"))

    def start(self) -> IcingaDaemon:
        return IcingaDaemon(self._argv("-x", "notice"), self.path / "daemon.log", self.path)


class IcingaDaemon:
    """A running ``icinga2 daemon``; its console log goes to a file."""

    # Logged at notice level when a processed check result changes a
    # service's state; the first result of a service always does.
    _CHANGE = re.compile(r"State Change: Checkable '([^']+)' \w+ state change from \w+ to (\w+)")

    def __init__(self, argv: list[str], log_path: Path, tree: Path) -> None:
        self.log_path = log_path
        self.tree = tree
        with open(log_path, "wb") as log:
            self.process = _spawn(argv, log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 30) -> None:
        """Wait until the log has a line matching ``pattern``."""
        end = time.monotonic() + timeout
        while not re.search(pattern, self.log()):
            if self.process.poll() is not None:
                raise RuntimeError(f"icinga2 exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > end:
                raise TimeoutError(
                    f"no {pattern!r} in icinga2's log after {timeout} s:\n{self.log()}"
                )
            time.sleep(0.05)

    def wait_for_states(self, expected: Mapping[str, str], timeout: float = 30) -> dict[str, str]:
        """Wait until each service (``host!service``) has reached its
        expected state (``OK``, ``WARNING``, ...), or the timeout.

        Returns the last state seen of each; the caller asserts on the
        results themselves, so that a timeout shows what Icinga did record.
        An intermediate state is fine: a check through an agent is UNKNOWN
        until the agent is connected and knows the command.
        """
        end = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"icinga2 exited with {self.process.returncode}:\n{self.log()}")
            last: dict[str, str] = {}
            reached: set[str] = set()
            for name, state in self._CHANGE.findall(self.log()):
                last[name] = state
                if expected.get(name) == state:
                    reached.add(name)
            if reached >= set(expected) or time.monotonic() > end:
                return last
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> dict[str, dict[str, Any]]:
        """SIGTERM; Icinga then writes its state file. Returns each
        service's last check result, by ``host!service``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise
        results: dict[str, dict[str, Any]] = {}
        for record in read_netstrings(self.tree / "lib" / "icinga2.state"):
            if record.get("type") == "Service":
                result = record.get("update", {}).get("last_check_result")
                if result is not None:
                    results[record["name"]] = result
        return results

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def icinga_cluster_pki(trees: Sequence[IcingaTree]) -> None:
    """A CA and a certificate for each node, where Icinga's ApiListener
    looks for them (DataDir/certs/NodeName.crt and .key, ca.crt), as
    ``icinga2 pki`` would make them but in milliseconds (RSA 2048, not 4096).
    The certificates carry no extended key usage: each node is a TLS server
    and a TLS client of the other."""
    now = dt.datetime.now(dt.timezone.utc)

    def issue(
        name: str, issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer[0].subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if issuer is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
            )
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key

    ca = issue("check_pg_tls test Icinga CA", None)
    pem = serialization.Encoding.PEM
    for tree in trees:
        cert, key = issue(tree.node, ca)
        certs = tree.path / "lib" / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "ca.crt").write_bytes(ca[0].public_bytes(pem))
        (certs / f"{tree.node}.crt").write_bytes(cert.public_bytes(pem))
        key_file = certs / f"{tree.node}.key"
        key_file.write_bytes(
            key.private_bytes(
                pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
        )
        key_file.chmod(0o600)


def _icinga_string(value: object) -> str:
    # Icinga's string literals take the same escapes as JSON's for " and \.
    return json.dumps(str(value))


def _spawn(argv: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    # As the invoking user, in a session of its own (see ServerProcess.stop).
    return spawn_as(None, argv, log)


# --- Nagios 4 -----------------------------------------------------------------


class NagiosTree(ServerProcess):
    """A Nagios Core 4 main config that reads only the given object files and
    keeps every file Nagios writes inside ``path``.

    Timing is set for tests: with ``interval_length=1`` and no inter-check
    delay, every service is checked as soon as the daemon starts, and the
    status file is rewritten every second.
    """

    def __init__(
        self, path: Path, object_files: Sequence[Path], plugin_dir: str = "/usr/lib/nagios/plugins"
    ) -> None:
        self.path = path
        user, group = _user_and_group()
        for sub in ("var", "spool", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        resource = path / "resource.cfg"
        resource.write_text(f"$USER1$={plugin_dir}\n")
        var = path / "var"
        self.status_file = var / "status.dat"
        settings = [
            *(f"cfg_file={file}" for file in object_files),
            f"resource_file={resource}",
            f"log_file={var / 'nagios.log'}",
            f"status_file={self.status_file}",
            f"state_retention_file={var / 'retention.dat'}",
            f"object_cache_file={var / 'objects.cache'}",
            f"precached_object_file={var / 'objects.precache'}",
            f"lock_file={var / 'nagios.lock'}",
            f"temp_file={var / 'nagios.tmp'}",
            f"temp_path={path / 'tmp'}",
            f"check_result_path={path / 'spool'}",
            f"command_file={var / 'nagios.cmd'}",
            f"query_socket={var / 'nagios.qh'}",
            f"nagios_user={user}",
            f"nagios_group={group}",
            "check_external_commands=0",
            "retain_state_information=0",
            "use_retained_program_state=0",
            "use_retained_scheduling_info=0",
            "execute_host_checks=0",
            "enable_notifications=0",
            "interval_length=1",
            "service_inter_check_delay_method=n",
            "host_inter_check_delay_method=n",
            "check_result_reaper_frequency=1",
            "status_update_interval=1",
            # Debian's values: they decide what reaches plugin_output.
            "illegal_object_name_chars=`~!$%^&*|'\"<>?,()=",
            "illegal_macro_output_chars=`~$&|'\"<>",
        ]
        self.main = path / "nagios.cfg"
        self.main.write_text("\n".join(settings) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def verify(self) -> subprocess.CompletedProcess[str]:
        """``nagios4 -v``: read and check the configuration, then exit."""
        return subprocess.run(
            [program("nagios4"), "-v", str(self.main)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> NagiosTree:
        self.log_path = self.path / "daemon.log"
        with open(self.log_path, "wb") as log:
            self.process = _spawn([program("nagios4"), str(self.main)], log)
        return self

    def services(self) -> dict[str, dict[str, str]]:
        """``servicestatus`` blocks of the status file, by ``host!service``."""
        try:
            text = self.status_file.read_text()
        except FileNotFoundError:
            return {}
        found = {}
        for block in re.findall(r"^servicestatus \{\n(.*?)^\t\}", text, re.M | re.S):
            fields = dict(line.strip().split("=", 1) for line in block.splitlines() if "=" in line)
            found[f"{fields['host_name']}!{fields['service_description']}"] = fields
        return found

    def wait_for_results(
        self, names: Collection[str], timeout: float = 30
    ) -> dict[str, dict[str, str]]:
        """The status of each named service once all have been checked (or
        whatever Nagios had at the deadline)."""
        end = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nagios4 exited with {self.process.returncode}:\n{self.log()}")
            services = self.services()
            checked = {n for n, f in services.items() if f.get("has_been_checked") == "1"}
            if checked >= set(names) or time.monotonic() > end:
                return services
            time.sleep(0.05)


# --- NRPE ---------------------------------------------------------------------


class Nrpe(ServerProcess):
    """``nrpe -f`` on 127.0.0.1 with the given ``command[...]`` file.

    Started as root, NRPE drops to ``nrpe_user`` (it refuses to run commands
    as root); as anyone else it stays that user.
    """

    def __init__(self, tree: Path, commands: Path, user: str = "nagios") -> None:
        self.port = free_port()
        if os.geteuid() != 0:
            user = _user_and_group()[0]
        group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        self.config = tree / "nrpe.cfg"
        self.config.write_text(
            "\n".join(
                [
                    f"pid_file={tree / 'nrpe.pid'}",
                    "server_address=127.0.0.1",
                    f"server_port={self.port}",
                    f"nrpe_user={user}",
                    f"nrpe_group={group}",
                    "allowed_hosts=127.0.0.1",
                    "dont_blame_nrpe=0",
                    "allow_bash_command_substitution=0",
                    "debug=0",
                    "command_timeout=60",
                    "connection_timeout=300",
                    "disable_syslog=1",
                    f"include={commands}",
                ]
            )
            + "\n"
        )
        self.log_path = tree / "nrpe.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> Nrpe:
        """Start; if another program took the port meanwhile, start on a new one."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                return self._start(timeout)
            except RuntimeError:
                # NRPE says why only to syslog: see whether the port is taken.
                if attempt == PORT_ATTEMPTS or not port_taken(self.port):
                    raise
                text = self.config.read_text()
                self.port = free_port()
                self.config.write_text(
                    re.sub(r"(?m)^server_port=\d+$", f"server_port={self.port}", text)
                )
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> Nrpe:
        with open(self.log_path, "wb") as log:
            self.process = _spawn([program("nrpe"), "-c", str(self.config), "-f"], log)
        # Ready when it answers a version request (check_nrpe without -c).
        end = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nrpe exited with {self.process.returncode}:\n{self.log()}")
            if check_nrpe(self.port, timeout=2).returncode == 0:
                return self
            if time.monotonic() > end:
                raise TimeoutError(f"nrpe not answering after {timeout} s:\n{self.log()}")
            time.sleep(0.05)


def check_nrpe(
    port: int, command: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Ask NRPE on 127.0.0.1 to run ``command`` (or for its version)."""
    argv = [program("check_nrpe"), "-H", "127.0.0.1", "-p", str(port), "-t", str(int(timeout))]
    if command is not None:
        argv += ["-c", command]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout + 10, stdin=subprocess.DEVNULL
    )
