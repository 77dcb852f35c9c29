"""Command line: options in, one Nagios status line out, exit code 0-3.

argparse and nagiosplugin both have exits that do not fit a monitoring
plugin (argparse exits 2, which means CRITICAL; nagiosplugin's guard prints
tracebacks), so this module owns the process's output and exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from . import __version__

__all__ = ["main"]

PREFIX = "PG_TLS"
_STATES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


class UsageError(Exception):
    """A bad option: UNKNOWN, with a one-line reason."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(
        prog="check_pg_tls",
        description=(
            "Check the TLS certificate a PostgreSQL server presents: would a client "
            "with the given sslmode accept it, and how many days are left? "
            "The check sends an SSLRequest, completes a TLS handshake without "
            "sending any credentials, and closes cleanly."
        ),
        epilog=(
            "Thresholds: a number N means fewer than N days left; Nagios ranges "
            "(10:, @0:30) are accepted; N%% is a share of the leaf certificate's "
            "lifetime. Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
        ),
    )
    add = parser.add_argument
    add("-H", "--host", required=True, help="server name or address to connect to")
    add("-p", "--port", type=_port, default=5432, help="TCP port (default: %(default)s)")
    add(
        "--servername",
        metavar="NAME",
        help="name the certificate must carry and SNI to send, when it differs from "
        "--host (libpq's host, with --host as hostaddr)",
    )
    add(
        "-w",
        "--warning",
        default="20",
        metavar="THRESHOLD",
        help="warn below this many days left (default: %(default)s)",
    )
    add(
        "-c",
        "--critical",
        default="15",
        metavar="THRESHOLD",
        help="critical below this many days left (default: %(default)s)",
    )
    add(
        "--sslmode",
        default="verify-full",
        choices=("require", "verify-ca", "verify-full"),
        help="what a client demands, as in libpq (default: %(default)s)",
    )
    add(
        "--sslrootcert",
        default="system",
        metavar="FILE|system",
        help="trusted root certificates: a PEM file, or 'system' for the system "
        "trust store (default: %(default)s)",
    )
    add(
        "-t",
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up after this many seconds (default: %(default)g)",
    )
    family = parser.add_mutually_exclusive_group()
    family.add_argument(
        "-4", dest="family", action="store_const", const=4, default=0, help="connect over IPv4 only"
    )
    family.add_argument(
        "-6", dest="family", action="store_const", const=6, help="connect over IPv6 only"
    )
    add(
        "--unreachable-state",
        default="critical",
        choices=("critical", "warning", "unknown"),
        help="state when the server cannot be reached or does not answer in time "
        "(default: %(default)s)",
    )
    add(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more output: -v lists the chain and the TLS session; -vvv shows tracebacks",
    )
    add("-V", "--version", action="version", version=f"check_pg_tls {__version__}")
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: must be 1-65535")
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(
            f"invalid timeout {text!r}: must be between 0 and 3600 seconds"
        )
    return seconds


def _emit(state: str, text: str, lines: Sequence[str] = (), perfdata: str = "") -> int:
    status = f"{PREFIX} {state.upper()} - {text}".replace("|", "!").replace("\n", " ")
    if perfdata:
        status += f" | {perfdata}"
    out = "\n".join([status, *(line.replace("|", "!") for line in lines)]) + "\n"
    sys.stdout.write(out)
    sys.stdout.flush()
    return _STATES[state]


def _arm_backstop(seconds: float, state: str, target: str) -> None:
    # Every network step has its own deadline shorter than -t; this alarm only
    # guards against anything else that might hang, so -t always holds.
    def fire(signum: int, frame: FrameType | None) -> None:
        code = _emit(state, f"{target}: no result within {seconds:g} seconds")
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
            args = _parser().parse_args(argv)
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


def _run(args: argparse.Namespace) -> int:
    # Imported here so that --help, --version and bad options stay fast.
    import nagiosplugin

    from .plugin import (
        CertificateResource,
        CertificateSummary,
        ConnectionContext,
        DaysLeftContext,
        FindingContext,
    )
    from .probe import Target
    from .thresholds import parse_threshold
    from .trust import RootsError, load_roots
    from .verdict import Policy

    if not args.host.strip():
        return _emit("unknown", "empty --host (see --help)")
    target = Target(args.host, args.port, args.servername, args.family)
    unreachable = {
        "critical": nagiosplugin.Critical,
        "warning": nagiosplugin.Warn,
        "unknown": nagiosplugin.Unknown,
    }[args.unreachable_state]
    _arm_backstop(args.timeout, args.unreachable_state, str(target))
    try:
        warning = parse_threshold(args.warning)
        critical = parse_threshold(args.critical)
    except ValueError as exc:
        return _emit("unknown", str(exc))
    # libpq reads a root file only when it exists; with require and the
    # default, nothing is loaded. An explicit file that cannot be read is a
    # configuration error, whatever the sslmode.
    roots = None
    if args.sslmode != "require" or args.sslrootcert != "system":
        try:
            roots = load_roots(args.sslrootcert)
        except RootsError as exc:
            return _emit("unknown", str(exc))
    policy = Policy(args.sslmode, target.checked_name, roots)
    check = nagiosplugin.Check(
        CertificateResource(target, policy, args.timeout),
        DaysLeftContext(warning, critical),
        nagiosplugin.ScalarContext("time"),
        FindingContext(),
        ConnectionContext(unreachable),
        CertificateSummary(target, policy),
        name=PREFIX,
    )
    check()
    state = str(check.state).lower()
    lines = check.verbose_str if args.verbose >= 1 else []
    return _emit(state, check.summary_str, list(lines), " ".join(check.perfdata))


def run() -> NoReturn:
    """Console-script entry point."""
    raise SystemExit(main())
