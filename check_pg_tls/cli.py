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
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from .options import UsageError, parser

if TYPE_CHECKING:
    from cryptography import x509

    from .model import Target
    from .openssl_client import ClientContexts
    from .plugin import CertificateResource, Plaintext
    from .posture import KeyFile

__all__ = ["main", "run"]

PREFIX = "PG_TLS"
_STATES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


def _emit(state: str, text: str, lines: Sequence[str] = (), perfdata: str = "") -> int:
    status = f"{PREFIX} {state.upper()} - {text}".replace("|", "!").replace("\n", " ")
    if perfdata:
        status += f" | {perfdata}"
    out = "\n".join([status, *(line.replace("|", "!") for line in lines)]) + "\n"
    sys.stdout.write(out)
    sys.stdout.flush()
    return _STATES[state]


def _arm_backstop(seconds: float, state: str, what: str) -> None:
    # Every network step has its own deadline; this alarm only guards against
    # anything else that might hang, so the run always ends in time.
    def fire(signum: int, frame: FrameType | None) -> None:
        code = _emit(state, f"{what}: no result within {seconds:g} seconds")
        os._exit(code)

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    # A monitoring system reads stdout and the exit code only; a library's
    # deprecation warning about an odd certificate (a zero serial number, say)
    # on stderr would only confuse it.
    warnings.simplefilter("ignore")
    verbose = 0
    try:
        try:
            args = parser().parse_args(argv)
        except UsageError as exc:
            return _emit("unknown", f"{exc} (see --help)")
        verbose = args.verbose
        return _run(args)
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
    raise SystemExit(main())


def _targets(args: argparse.Namespace) -> list[Target]:
    from .targets import parse_target, read_targets_file

    specs = [*args.host, *args.targets]
    if args.targets_file:
        try:
            specs += read_targets_file(args.targets_file)
        except OSError as exc:
            raise UsageError(
                f"cannot read targets file {args.targets_file}: {exc.strerror}"
            ) from None
    if not specs:
        raise UsageError("no server to check: give -H HOST, TARGET or --targets-file FILE")
    try:
        return [parse_target(s, args.port, args.servername, args.family) for s in specs]
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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


def _run(args: argparse.Namespace) -> int:
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
    _arm_backstop(
        args.timeout * math.ceil(len(targets) / workers) + (0 if single else 1),
        args.unreachable_state,
        str(targets[0]) if single else f"{len(targets)} servers",
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
        resources = _resources(args, targets, contexts)
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
        nagiosplugin.ScalarContext("time"),
        FindingContext(),
        ConnectionContext(unreachable),
        CertificateSummary(resources[0]) if single else FleetSummary(resources),
        name=PREFIX,
    )
    check()
    return _output(args, check, resources)


def _resources(
    args: argparse.Namespace, targets: list[Target], contexts: ClientContexts
) -> list[CertificateResource]:
    from .plugin import CertificateResource
    from .verdict import Policy

    single = len(targets) == 1
    cert_file, key_file = _local_files(args, single)
    crl_policy = _crls(args, contexts)
    client_policy = _client_certificate(args)
    plaintext = _plaintext(args)
    seen: set[str] = set()
    return [
        CertificateResource(
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
            args.timeout,
            label="" if single else _label(target, seen),
            direct=args.negotiation == "direct",
            plaintext=plaintext,
        )
        for target in targets
    ]


def _output(args: argparse.Namespace, check: Any, resources: list[CertificateResource]) -> int:
    """Print the chosen format; the exit code is the worst state in every format."""
    from .plugin import details, reports

    state = check.state
    per_target = reports(check.results, resources)
    if args.tap or args.json or args.quiet:
        from . import formats

        if args.tap:
            text = formats.tap(per_target)
        elif args.json:
            text = formats.json_document(per_target, state)
        else:
            text = formats.quiet(per_target)
        sys.stdout.write(text)
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
