"""The command line's options: names, defaults, help, and value types.

argparse's own error exit (2, which means CRITICAL to a monitoring system)
is replaced by :class:`UsageError`, which the CLI turns into UNKNOWN.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import UsageError
from .model import TLS_VERSIONS

__all__ = ["UsageError", "parser"]


_NEGATIVE = re.compile(r"-\.?\d")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(self._attach_negative_values(args), namespace)

    def _attach_negative_values(self, args: Sequence[str] | None) -> list[str]:
        """``-t -1`` as ``-t=-1``, so that the value's own check says what is wrong.

        With options such as -4 and -6 defined, argparse takes anything that
        looks like a negative number for an option, and would only say that
        -t "expected one argument".
        """
        argv = list(sys.argv[1:] if args is None else args)
        # Options whose values are numbers or thresholds (a host is never "-1").
        takes_number = {
            option
            for action in self._actions
            if action.type is not None or action.dest in ("warning", "critical")
            for option in action.option_strings
        }
        out: list[str] = []
        index = 0
        while index < len(argv):
            arg = argv[index]
            if arg == "--":
                out += argv[index:]
                break
            following = argv[index + 1] if index + 1 < len(argv) else ""
            if arg in takes_number and _NEGATIVE.match(following):
                out.append(f"{arg}={following}")
                index += 2
                continue
            out.append(arg)
            index += 1
        return out


def parser() -> _Parser:
    parser = _Parser(
        prog="check_pg_tls",
        usage="%(prog)s [options] -H HOST | TARGET... | --targets-file FILE",
        description=(
            "Check the TLS certificate a PostgreSQL server presents: would a client "
            "with the given sslmode accept it, and how many days are left? "
            "The check sends an SSLRequest, completes a TLS handshake without "
            "sending any credentials, and closes cleanly."
        ),
        epilog=(
            "Targets: host, host:port, host(servername):port, [ipv6]:port. "
            "Thresholds: a number N means fewer than N days left; Nagios ranges "
            "(10:, @0:30) are accepted; N% is a share of the lifetime of the "
            "certificate that expires first. Exit codes, in every output format: "
            "the worst state over all targets, 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
        ),
    )
    add = parser.add_argument
    add("targets", nargs="*", metavar="TARGET", help="servers to check, as host[:port]")
    add(
        "-H",
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="server name or address to connect to (repeatable; may be a target spec)",
    )
    add(
        "--targets-file",
        metavar="FILE",
        help="read targets from FILE, one a line; # starts a comment",
    )
    add(
        "-p",
        "--port",
        type=_port,
        default=5432,
        help="TCP port for targets that name none (default: %(default)s)",
    )
    add(
        "--servername",
        metavar="NAME",
        help="name the certificate must carry and SNI to send, when it differs from "
        "the host (libpq's host, with the host as hostaddr)",
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
        "--min-days",
        dest="critical",
        metavar="DAYS",
        help="the same as -c, spelt as in the cron tool this plugin grew out of",
    )
    add(
        "--sslmode",
        default="verify-full",
        choices=("require", "verify-ca", "verify-full"),
        help="what a client demands, as in libpq (default: %(default)s)",
    )
    add(
        "--sslrootcert",
        metavar="FILE|system",
        help="trusted root certificates: a PEM file, or 'system' for the system "
        "trust store (default: system, for verify-full; none for require)",
    )
    add(
        "-t",
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up on a server after this many seconds (default: %(default)g)",
    )
    add(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="servers checked at once (default: 16)",
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
        help="state when a server cannot be reached or does not answer in time "
        "(default: %(default)s)",
    )
    add(
        "--negotiation",
        default="postgres",
        choices=("postgres", "direct"),
        help="postgres: SSLRequest first (every version); direct: TLS at once with ALPN "
        "postgresql, as libpq's sslnegotiation=direct (PostgreSQL 17+) "
        "(default: %(default)s)",
    )
    client = parser.add_argument_group("client certificate")
    client.add_argument(
        "--sslcert",
        metavar="FILE",
        help="client certificate (PEM, may hold its chain) to present when the server "
        "asks, as libpq's sslcert; its days left are judged with -w/-c too. Without it, "
        "no client certificate is ever sent",
    )
    client.add_argument(
        "--sslkey",
        metavar="FILE",
        help="the client certificate's private key (PEM, not encrypted), as libpq's sslkey "
        "(default: the --sslcert file)",
    )
    revocation = parser.add_argument_group("revocation")
    revocation.add_argument(
        "--sslcrl",
        metavar="FILE",
        help="CRLs in PEM, as libpq's sslcrl: OpenSSL then requires a current CRL from "
        "every CA in the chain (libpq uses CRLs only with a root certificate file)",
    )
    revocation.add_argument(
        "--sslcrldir",
        metavar="DIR",
        help="a directory of CRLs prepared with openssl rehash, as libpq's sslcrldir",
    )
    revocation.add_argument(
        "--audit-crl",
        action="append",
        default=[],
        metavar="FILE",
        help="a CRL file (PEM or DER) to judge for its signature and freshness only, "
        "e.g. the server's own ssl_crl_file (repeatable)",
    )
    revocation.add_argument(
        "--check-revocation",
        action="store_true",
        help="fetch each certificate's CRL from its CRL Distribution Point (http only, "
        "within -t) and check its signature, freshness and entries: CRITICAL when revoked",
    )
    revocation.add_argument(
        "--revocation-unknown-state",
        default="warning",
        choices=("ok", "warning", "critical", "unknown"),
        help="state when --check-revocation cannot fetch or believe a CRL (default: %(default)s)",
    )
    revocation.add_argument(
        "--crl-warning",
        type=_days,
        default=2.0,
        metavar="DAYS",
        help="WARNING when a CRL's nextUpdate is fewer days away (default: %(default)g)",
    )
    revocation.add_argument(
        "--crl-critical",
        type=_days,
        default=1.0,
        metavar="DAYS",
        help="CRITICAL when a CRL's nextUpdate is fewer days away (default: %(default)g)",
    )
    posture = parser.add_argument_group("posture checks")
    posture.add_argument(
        "--min-tls-version",
        default="TLSv1.2",
        choices=TLS_VERSIONS,
        help="CRITICAL below this protocol version (default: %(default)s)",
    )
    posture.add_argument(
        "--min-rsa-bits",
        type=_bits,
        default=2048,
        metavar="BITS",
        help="WARNING for a smaller RSA key (default: %(default)s)",
    )
    posture.add_argument(
        "--min-ec-bits",
        type=_bits,
        default=256,
        metavar="BITS",
        help="WARNING for a smaller EC key (default: %(default)s)",
    )
    posture.add_argument(
        "--weak-signature-state",
        default="critical",
        choices=("critical", "warning", "ok"),
        help="state for a SHA-1 or MD5 signature on the leaf or an "
        "intermediate (default: %(default)s)",
    )
    posture.add_argument(
        "--cert-file",
        metavar="FILE",
        help="the certificate file the server should serve (e.g. a "
        "fullchain.pem): WARNING when the server still serves another "
        "one, i.e. was not reloaded",
    )
    posture.add_argument(
        "--key-file",
        metavar="FILE",
        help="the server's private key file: WARNING when group-writable or "
        "readable/writable by others, CRITICAL when it does not match the "
        "served certificate, UNKNOWN when unreadable; never printed",
    )
    posture.add_argument(
        "--check-plaintext",
        metavar="USER[@DATABASE]",
        help="also send an unencrypted StartupMessage for USER and report "
        "whether the server would proceed to authentication; never sends "
        "a password, but leaves a line in the server's log",
    )
    posture.add_argument(
        "--plaintext-state",
        default="warning",
        choices=("warning", "critical"),
        help="state when unencrypted logins are possible (default: %(default)s)",
    )
    posture.add_argument(
        "--check-auth",
        metavar="USER[@DATABASE]",
        help="after the TLS handshake, send a StartupMessage for USER and report what the "
        "server asks for (SCRAM and its mechanisms, MD5, a client certificate, nothing at "
        "all); never sends a password; a refusal is CRITICAL",
    )
    posture.add_argument(
        "--passwordless-state",
        default="warning",
        choices=("ok", "warning", "critical"),
        help="state when --check-auth finds that the server lets USER in over TLS without "
        "a password or client certificate (default: %(default)s)",
    )
    posture.add_argument(
        "--channel-binding-state",
        default="warning",
        choices=("ok", "warning", "critical"),
        help="state for a certificate libpq cannot use for SCRAM channel binding (signed "
        "with Ed25519 or Ed448), unless --check-auth shows whether the server offers it "
        "(default: %(default)s)",
    )
    dane = parser.add_argument_group("DANE (TLSA records in DNS; needs check_pg_tls[dane])")
    dane.add_argument(
        "--dane",
        action="store_true",
        help="also check that a DNSSEC-validated TLSA record at _PORT._tcp.SERVERNAME "
        "matches the served certificate (and, with --cert-file, the renewed one on disk); "
        "trusts the AD bit of the resolver",
    )
    dane.add_argument(
        "--dns-server",
        metavar="ADDR[:PORT]",
        help="the DNSSEC-validating resolver to ask (default: those in /etc/resolv.conf)",
    )
    dane.add_argument(
        "--dane-missing-state",
        default="warning",
        choices=("ok", "warning", "critical"),
        help="state when DNSSEC proves there are no TLSA records (default: %(default)s)",
    )
    dane.add_argument(
        "--dane-insecure-state",
        default="warning",
        choices=("warning", "critical"),
        help="state when the TLSA answer is not DNSSEC-validated (AD=0): DANE clients "
        "ignore such records (default: %(default)s)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--tap", action="store_true", help="print a TAP version 13 report")
    output.add_argument("--json", action="store_true", help="print one JSON document")
    output.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="cron mode: print nothing when all is well, else one line "
        "per server that needs attention",
    )
    output.add_argument(
        "--openmetrics",
        action="store_true",
        help="print Prometheus metrics, blackbox_exporter's names where they mean the "
        "same (needs the prometheus extra: pip install 'check_pg_tls[prometheus]')",
    )
    metrics = parser.add_argument_group("Prometheus (with --openmetrics)")
    metrics.add_argument(
        "--metrics-format",
        choices=("prometheus", "openmetrics"),
        default=None,
        help="prometheus: the text format node_exporter's textfile collector reads; "
        "openmetrics: OpenMetrics 1.0, ending in '# EOF' (default: prometheus)",
    )
    metrics.add_argument(
        "--output",
        metavar="FILE",
        help="write the metrics to FILE, replaced atomically, instead of stdout; also "
        "when the run fails (probe_success 0 and the reason); e.g. a .prom file in "
        "node_exporter's textfile directory",
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


def _bounded(
    what: str, cast: Callable[[str], float], low: float, high: float
) -> Callable[[str], Any]:
    """An argparse type: a number of ``cast``'s kind within [low, high]."""

    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: must be {low:g} to {high:g}"
            )
        return value

    return parse


_port = _bounded("port", int, 1, 65535)
_bits = _bounded("number of bits", int, 0, 65536)
_workers = _bounded("number of workers", int, 1, 256)
_days = _bounded("number of days", float, 0, 3650)
# Float seconds; a zero timeout would give up before starting.
_seconds = _bounded("timeout", float, 0.001, 3600)
