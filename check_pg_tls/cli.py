"""Command line: options in, status line (or TAP, JSON, cron text) out, exit code 0-3.

argparse and nagiosplugin both have exits that do not fit a monitoring
plugin (argparse exits 2, which means CRITICAL; nagiosplugin's guard prints
tracebacks), so this module owns the process's output and exit code.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from .options import UsageError, parser
from .text import printable

if TYPE_CHECKING:
    from cryptography import x509

    from .model import Target
    from .openmetrics import MetricsSink
    from .openssl_client import ClientContexts
    from .plugin import CertificateResource, Plaintext
    from .posture import KeyFile

__all__ = ["main", "run"]

PREFIX = "PG_TLS"
_STATES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
#: Time left, after the probe, to judge, print and exit.
_RESERVE = 0.03

_IMPORTED = time.monotonic()
_output_claimed = False


def _claim_output() -> bool:
    """Whether the caller is the one to print the result; disarms the backstop.

    The backstop's handler runs between two steps of the main code: whoever
    claims first prints, the other stays silent, and no alarm is left to kill
    the process (signal 14, exit 142) once the result is out.
    """
    global _output_claimed
    if _output_claimed:
        return False
    _output_claimed = True
    signal.setitimer(signal.ITIMER_REAL, 0)
    return True


#: --openmetrics: where the metrics go, also those of a run that fails as a whole.
_metrics: MetricsSink | None = None


def _emit(state: str, text: str, lines: Sequence[str] = (), perfdata: str = "") -> int:
    if not _claim_output():
        return _STATES[state]
    # With --openmetrics, the finished run's metrics never come this way: what
    # does is a run that failed as a whole, and the metrics must say so.
    if _metrics is not None and not _metrics.failed(_STATES[state], text):
        return _STATES[state]
    status = f"{PREFIX} {state.upper()} - {text}".replace("|", "!").replace("\n", " ")
    if perfdata:
        status += f" | {perfdata}"
    out = "\n".join(printable(line) for line in [status, *(ln.replace("|", "!") for ln in lines)])
    out += "\n"
    sys.stdout.write(out)
    sys.stdout.flush()
    return _STATES[state]


def _arm_backstop(seconds: float, left: float, state: str, what: str) -> None:
    # Every network step has its own deadline; this alarm only guards against
    # anything else that might hang, so the run always ends in time.
    def fire(signum: int, frame: FrameType | None) -> None:
        if _output_claimed:
            return
        code = _emit(state, f"{what}: no result within {seconds:g} seconds")
        os._exit(code)

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(0.001, left))


def _process_age() -> float:
    """Seconds since this process started, start-up and imports included.

    A monitoring system times the plugin from fork to exit; the kernel's
    record of the process's start (in clock ticks since boot) says how much
    of -t the interpreter has already spent. Without /proc, the time since
    this module was imported.
    """
    since_import = time.monotonic() - _IMPORTED
    try:
        with open("/proc/self/stat", "rb") as stat:
            # The command name may hold spaces and parentheses: count the
            # fields after its closing one (starttime is field 22).
            fields = stat.read().rpartition(b")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return since_import
    # A start-up longer than a minute is a clock that cannot be trusted.
    return age if since_import <= age <= since_import + 60 else since_import


class _Budget(float):
    """Seconds left of -t for a probe, worded as the user's -t in messages.

    The probe names its timeout in what it reports ("did not answer within
    5 seconds"); the user should read the number they set, not what was left
    of it after start-up.
    """

    shown: float

    def __new__(cls, left: float, shown: float) -> _Budget:
        budget = super().__new__(cls, left)
        budget.shown = shown
        return budget

    def __format__(self, spec: str) -> str:
        return format(self.shown, spec)


def main(argv: Sequence[str] | None = None, age: float = 0.0) -> int:
    """Run the plugin; ``age``: seconds of -t already spent when it was called."""
    global _output_claimed
    _output_claimed = False
    # A monitoring system reads stdout and the exit code only; a library's
    # deprecation warning about an odd certificate (a zero serial number, say)
    # on stderr would only confuse it.
    warnings.simplefilter("ignore")
    global _metrics
    _metrics = None
    verbose = 0
    try:
        try:
            args = parser().parse_args(argv)
        except UsageError as exc:
            return _emit("unknown", f"{exc} (see --help)")
        verbose = args.verbose
        if args.openmetrics or args.output or args.metrics_format:
            try:
                _use_metrics(args)
            except UsageError as exc:
                return _emit("unknown", str(exc))
        return _run(args, time.monotonic() - age)
    except KeyboardInterrupt:
        return _emit("unknown", "interrupted")
    except Exception as exc:  # noqa: BLE001 - the last guard: never a traceback, never exit 1
        lines: list[str] = []
        if verbose >= 3:
            import traceback

            lines = traceback.format_exc().splitlines()
        return _emit("unknown", f"internal error: {type(exc).__name__}: {exc}", lines)


def run() -> NoReturn:
    """Console-script entry point."""
    raise SystemExit(main(age=_process_age()))


def _use_metrics(args: argparse.Namespace) -> None:
    global _metrics
    from .openmetrics import MetricsSink

    # Options that make no sense are only an UNKNOWN line; a missing library
    # is a failed run, which the sink reports in the metrics too.
    _metrics = MetricsSink(args)
    _metrics.load_library()


def _targets(args: argparse.Namespace) -> list[tuple[Target, str | None]]:
    """Each target, and None; a line of the targets file that names none: a stand-in and why."""
    from .targets import Line, Unparsed, name_problem, parse_target, read_targets_file
    from .text import safe

    lines: list[Line] = []
    if args.targets_file:
        try:
            lines = read_targets_file(args.targets_file)
        except OSError as exc:
            raise UsageError(
                f"cannot read targets file {args.targets_file}: {exc.strerror}"
            ) from None
    if not (args.host or args.targets or lines):
        raise UsageError("no server to check: give -H HOST, TARGET or --targets-file FILE")
    problem = args.servername is not None and name_problem(args.servername)
    if problem:
        raise UsageError(f"invalid --servername '{safe(args.servername, 100)}': {problem}")
    targets: list[tuple[Target, str | None]] = []
    try:
        for spec in [*args.host, *args.targets]:
            targets.append((parse_target(spec, args.port, args.servername, args.family), None))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # One bad line of a list is that line's own UNKNOWN; the others are checked.
    for line in lines:
        try:
            if line.problem:
                raise ValueError(f"invalid target '{safe(line.text, 100)}': {line.problem}")
            target = parse_target(line.text, args.port, args.servername, args.family)
            targets.append((target, None))
        except ValueError as exc:
            targets.append((Unparsed(f"line {line.number}"), str(exc)))
    return targets


def _label(target: Target, seen: set[str]) -> str:
    # Perfdata labels: stable (derived from the target), unique, and plain
    # word characters, which no grapher or perfdata parser needs quoted.
    base = re.sub(r"\W", "_", f"{target.checked_name}_{target.port}", flags=re.ASCII)
    label, n = base, 1
    while label in seen:
        n += 1
        label = f"{base}_{n}"
    seen.add(label)
    return f"{label}_"


def _local_files(
    args: argparse.Namespace, single: bool
) -> tuple[tuple[str, x509.Certificate] | None, KeyFile | None]:
    if not (args.cert_file or args.key_file):
        return None, None
    if not single:
        raise UsageError("--cert-file and --key-file check one server's files: give one target")
    from .local_files import inspect_key_file, read_cert_file

    cert = (args.cert_file, read_cert_file(args.cert_file)) if args.cert_file else None
    key = inspect_key_file(args.key_file) if args.key_file else None
    return cert, key


def _crls(args: argparse.Namespace, contexts: ClientContexts) -> dict[str, Any]:
    """The CRL part of the policy: what to judge, and what libpq would ignore."""
    if not (args.sslcrl or args.sslcrldir or args.audit_crl):
        return {}
    from .certs import facts
    from .errors import LocalFileError
    from .local_files import read_certificates, read_crl_dir, read_crls

    crls = [crl for path in args.audit_crl for crl in read_crls(path)]
    ignored = None
    if contexts.checks_crls:
        if args.sslcrl:
            crls += read_crls(args.sslcrl)
        if args.sslcrldir:
            crls += read_crl_dir(args.sslcrldir)
    elif args.sslcrl or args.sslcrldir:
        ignored = (
            "libpq ignores sslcrl and sslcrldir without a root certificate file (here: "
            f"sslrootcert={contexts.sslrootcert or 'none'}): clients set up like this "
            "check no revocation"
        )
    issuers: tuple[Any, ...] = ()
    if contexts.sslrootcert not in (None, "system"):
        # Only to check CRL signatures; OpenSSL has read the file for trust
        # already, including forms cryptography does not read.
        try:
            roots = read_certificates(contexts.sslrootcert, "root certificate file")
        except LocalFileError:
            roots = ()
        issuers = tuple(facts(cert) for cert in roots)
    return {
        "crls": tuple(crls),
        "checks_crls": contexts.checks_crls,
        "crl_issuers": issuers,
        "crls_ignored": ignored,
    }


def _client_certificate(args: argparse.Namespace) -> dict[str, Any]:
    """The client certificate to judge, and its key file's mode (libpq's rule)."""
    if not args.sslcert:
        return {}
    from .certs import facts
    from .local_files import read_certificates

    key = args.sslkey or args.sslcert
    status = os.stat(key)
    return {
        "client_cert": facts(read_certificates(args.sslcert, "client certificate file")[0]),
        "client_key_mode": (key, status.st_mode, status.st_uid == 0 and os.geteuid() != 0),
    }


def _plaintext(args: argparse.Namespace) -> Plaintext | None:
    if not args.check_plaintext:
        return None
    from .plugin import Plaintext
    from .protocol import startup_message

    user, _, database = args.check_plaintext.partition("@")
    try:
        # The message is built again when sent; this only proves it can be.
        startup_message(user, database or user)
    except ValueError:
        raise UsageError(
            f"invalid --check-plaintext {args.check_plaintext!r}: give USER[@DATABASE]"
        ) from None
    return Plaintext(user, database or user, args.plaintext_state)


def _run(args: argparse.Namespace, started: float) -> int:
    """The check; ``started``: the monotonic time -t counts from."""
    # Imported here so that --help, --version and bad options stay fast.
    import nagiosplugin

    from .errors import LocalFileError
    from .fleet import DEFAULT_WORKERS, run_all
    from .openssl_client import client_contexts
    from .plugin import (
        CertificateSummary,
        ClientDaysLeftContext,
        ConnectionContext,
        CrlDaysLeftContext,
        DaysLeftContext,
        FindingContext,
        FleetSummary,
        SecondsContext,
    )
    from .thresholds import parse_threshold

    try:
        targets = _targets(args)
    except UsageError as exc:
        return _emit("unknown", f"{exc} (see --help)")
    try:
        warning = parse_threshold(args.warning)
        critical = parse_threshold(args.critical)
    except ValueError as exc:
        return _emit("unknown", str(exc))
    workers = args.workers or DEFAULT_WORKERS
    single = len(targets) == 1
    limit = args.timeout * math.ceil(len(targets) / workers) + (0 if single else 1)
    _arm_backstop(
        limit,
        started + limit - time.monotonic() - _RESERVE / 3,
        args.unreachable_state,
        str(targets[0][0]) if single else f"{len(targets)} servers",
    )
    try:
        # libpq reads a root file only when it exists; with require and the
        # default, nothing is loaded. An explicit file that cannot be read
        # is a configuration error, whatever the sslmode.
        sslrootcert = None
        if args.sslmode != "require" or args.sslrootcert != "system":
            sslrootcert = args.sslrootcert
        if args.sslkey and not args.sslcert:
            raise UsageError("--sslkey needs --sslcert")
        contexts = client_contexts(
            sslrootcert, args.sslcrl, args.sslcrldir, args.sslcert, args.sslkey
        )
        timeout = args.timeout
        if len(targets) <= workers:
            # One round: every probe starts now, so -t holds for the whole
            # process, start-up included. With more rounds, each target has
            # its own -t from the moment its probe starts.
            left = started + args.timeout - time.monotonic() - _RESERVE
            timeout = _Budget(max(0.001, min(left, args.timeout)), args.timeout)
        resources = _resources(args, targets, contexts, timeout)
    except (UsageError, LocalFileError) as exc:
        return _emit("unknown", str(exc))
    if not single:
        # Probe and judge concurrently first; the check then only evaluates.
        run_all([r.collect for r in resources], workers)
    unreachable = {
        "critical": nagiosplugin.Critical,
        "warning": nagiosplugin.Warn,
        "unknown": nagiosplugin.Unknown,
    }[args.unreachable_state]
    check = nagiosplugin.Check(
        *resources,
        DaysLeftContext(warning, critical),
        CrlDaysLeftContext(args.crl_warning, args.crl_critical),
        ClientDaysLeftContext(warning, critical),
        SecondsContext("time"),
        FindingContext(),
        ConnectionContext(unreachable),
        CertificateSummary(resources[0]) if single else FleetSummary(resources),
        name=PREFIX,
    )
    check()
    return _output(args, check, resources)


def _resources(
    args: argparse.Namespace,
    targets: list[tuple[Target, str | None]],
    contexts: ClientContexts,
    timeout: float,
) -> list[CertificateResource]:
    from .plugin import CertificateResource, UncheckedResource
    from .verdict import Policy

    single = len(targets) == 1
    cert_file, key_file = _local_files(args, single)
    crl_policy = _crls(args, contexts)
    client_policy = _client_certificate(args)
    plaintext = _plaintext(args)
    revocation = None
    if args.check_revocation:
        from .crl_fetch import CrlFetcher
        from .plugin import Revocation

        revocation = Revocation(CrlFetcher(), args.revocation_unknown_state)
    seen: set[str] = set()
    return [
        UncheckedResource(target, problem, "" if single else _label(target, seen))
        if problem
        else CertificateResource(
            target,
            Policy(
                sslmode=args.sslmode,
                servername=target.checked_name,
                sslrootcert=contexts.sslrootcert,
                min_tls_version=args.min_tls_version,
                min_rsa_bits=args.min_rsa_bits,
                min_ec_bits=args.min_ec_bits,
                weak_signature=args.weak_signature_state,
                cert_file=cert_file,
                key_file=key_file,
                **crl_policy,
                **client_policy,
            ),
            contexts,
            timeout,
            label="" if single else _label(target, seen),
            direct=args.negotiation == "direct",
            plaintext=plaintext,
            revocation=revocation,
        )
        for target, problem in targets
    ]


def _output(args: argparse.Namespace, check: Any, resources: list[CertificateResource]) -> int:
    """Print the chosen format; the exit code is the worst state in every format."""
    from .plugin import details, reports

    state = check.state
    per_target = reports(check.results, resources)
    if _metrics is not None:
        if not _claim_output():
            return int(state)
        try:
            _metrics.write(per_target, check.results)
        except OSError as exc:
            global _output_claimed
            _output_claimed = False  # nothing was written: the failure is the output
            return _emit("unknown", f"cannot write {args.output}: {exc.strerror or exc}")
        return int(state)
    if args.tap or args.json or args.quiet:
        from . import formats

        if args.tap:
            text = formats.tap(per_target)
        elif args.json:
            text = formats.json_document(per_target, state)
        else:
            text = formats.quiet(per_target)
        if not _claim_output():
            return int(state)
        sys.stdout.write("\n".join(printable(line) for line in text.split("\n")))
        sys.stdout.flush()
        return int(state)
    single = len(resources) == 1
    lines: list[str] = []
    if not single:
        from .formats import fleet_lines

        lines = fleet_lines(per_target)
    if args.verbose >= 1:
        for resource in resources:
            prefix = "" if single else f"{resource.target}: "
            lines += [f"{prefix}{line}" for line in details(resource)]
    return _emit(str(state).lower(), check.summary_str, lines, " ".join(check.perfdata))
