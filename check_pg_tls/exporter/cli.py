"""``pg_tls_exporter``: flags, logging, listening sockets, signals.

Flags follow the Prometheus exporters' conventions (``--config.file``,
``--web.listen-address``, ``--web.config.file``, ``--log.level``). A
configuration that does not load at start is one line on stderr and exit
code 1; at run time SIGHUP reloads it (a bad file leaves the old one
serving), and SIGTERM or SIGINT stops accepting connections, lets running
requests finish for up to a few seconds, and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import socket
import sys
import time
import warnings
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__

__all__ = ["DEFAULT_PORT", "main", "run"]

#: Not taken in Prometheus' list of default ports, whose range 9100-9999
#: has been full since 2023 (new exporters take ports above 10000); its
#: last digits are PostgreSQL's 5432.
DEFAULT_PORT = 10432
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(message)


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: 1 to 4096")
    return value


def _offset(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid offset {text!r}") from None
    if not 0 <= value < 60:
        raise argparse.ArgumentTypeError(f"invalid offset {text!r}: 0 to 60 seconds")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: 0.1 to 3600")
    return value


def _connections(text: str) -> int:
    value = int(text)
    if not 2 <= value <= 65536:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: 2 to 65536")
    return value


def parser() -> _Parser:
    from .pool import DEFAULT_SIZE

    parser = _Parser(
        prog="pg_tls_exporter",
        description="Prometheus exporter for the TLS of PostgreSQL servers: "
        "/probe?target=HOST:PORT&module=NAME answers with check_pg_tls's metrics.",
    )
    add = parser.add_argument
    add(
        "--config.file",
        dest="config_file",
        default="pg_tls_exporter.yml",
        metavar="FILE",
        help="the modules and allowed targets (default: %(default)s)",
    )
    add(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="load the configuration (and the web configuration), say whether it is valid, exit",
    )
    add(
        "--web.listen-address",
        dest="listen",
        action="append",
        metavar="[HOST]:PORT",
        help="address to listen on, repeatable; :PORT for every interface "
        f"(default: :{DEFAULT_PORT})",
    )
    add(
        "--web.config.file",
        dest="web_config",
        default="",
        metavar="FILE",
        help="TLS and basic authentication, in exporter-toolkit's format (default: none)",
    )
    add(
        "--log.level",
        dest="log_level",
        default="info",
        choices=tuple(_LEVELS),
        help="least important messages logged (default: %(default)s)",
    )
    add(
        "--timeout-offset",
        dest="timeout_offset",
        type=_offset,
        default=0.5,
        metavar="SECONDS",
        help="subtracted from Prometheus' scrape timeout to give a probe's deadline "
        "(default: %(default)g)",
    )
    add(
        "--probe.concurrency",
        dest="concurrency",
        type=_positive,
        default=DEFAULT_SIZE,
        metavar="N",
        help="probes running at once; more requests wait within their deadline "
        "(default: %(default)s)",
    )
    add(
        "--web.max-connections",
        dest="max_connections",
        type=_connections,
        metavar="N",
        help="client connections open at once; beyond it the one longest without a request "
        "is closed (default: 4 per probe slot, at least 256)",
    )
    add(
        "--web.request-timeout",
        dest="request_timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="a client's time to connect (TLS handshake included) and send a request's "
        "headers, again for its body, and again to take the answer (default: %(default)g)",
    )
    add(
        "--web.idle-timeout",
        dest="idle_timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="how long a keep-alive connection may wait for its next request "
        "(default: %(default)g)",
    )
    add("--version", action="version", version=f"pg_tls_exporter {__version__}")
    return parser


def listen_address(text: str) -> tuple[str, int, socket.AddressFamily]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` as a bindable address.

    Raises:
        ValueError: with the reason.
    """
    host, colon, port_text = text.rpartition(":")
    if not colon or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {text!r}: expected [HOST]:PORT")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        if socket.has_ipv6:
            try:
                with socket.socket(socket.AF_INET6):
                    return "::", port, socket.AF_INET6
            except OSError:
                pass
        return "0.0.0.0", port, socket.AF_INET  # noqa: S104 - what ":PORT" means
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"invalid listen address {text!r}: {exc.strerror}") from None
    family, _, _, _, address = found[0]
    return str(address[0]), port, family


class _Formatter(logging.Formatter):
    """logfmt, as Prometheus and its exporters log."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        level = record.levelname.lower()
        line = f'time={stamp}.{int(record.msecs):03d}Z level={level} msg="{message}"'
        if record.exc_info:
            error = self.formatException(record.exc_info).replace("\n", " | ").replace('"', "'")
            line += f' err="{error}"'
        return line


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logger = logging.getLogger("pg_tls_exporter")
    logger.handlers[:] = [handler]
    logger.setLevel(_LEVELS[level])
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter until SIGTERM; the exit code."""
    try:
        args = parser().parse_args(argv)
    except _Usage as exc:
        print(f"pg_tls_exporter: {exc} (see --help)", file=sys.stderr)
        return 2
    _setup_logging(args.log_level)
    # As the plugin: a library's deprecation warning about an odd
    # certificate would only be noise in the log.
    warnings.simplefilter("ignore")
    log = logging.getLogger("pg_tls_exporter")
    # Loaded here: --help and --version stay fast.
    from . import probing
    from .config import FileError
    from .config import load as load_config
    from .connections import Limits
    from .pool import ProbePool
    from .server import DRAIN_SECONDS, Exporter, ListenError, Server, default_limits
    from .webconfig import WebConfigSource

    try:
        addresses = [listen_address(text) for text in args.listen or [f":{DEFAULT_PORT}"]]
        web = WebConfigSource(args.web_config or None)
        if args.config_check:
            load_config(args.config_file)
            print(f"{args.config_file}: valid", file=sys.stderr)
            return 0
        pool = ProbePool(args.concurrency)
        exporter = Exporter(args.config_file, web, pool, args.timeout_offset, args.request_timeout)
    except (FileError, ValueError) as exc:
        print(f"pg_tls_exporter: {exc}", file=sys.stderr)
        return 1
    # Signals go to this thread only, which waits for them; the serving
    # threads started below inherit the mask.
    wanted = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    limits = default_limits(args.concurrency, args.request_timeout, args.idle_timeout)
    if args.max_connections:
        limits = Limits(
            args.max_connections,
            max(1, args.max_connections // 2),
            args.request_timeout,
            args.idle_timeout,
        )
    try:
        server = Server(addresses, exporter, limits)
    except ListenError as exc:
        print(f"pg_tls_exporter: {exc}", file=sys.stderr)
        return 1
    # What start-up made, and what every probe imports, lives as long as the
    # process: left out of the cyclic collector's rounds, which otherwise go
    # through those tens of thousands of objects again and again and find
    # no garbage there. The probes' own garbage is still collected.
    probing.load_check()
    gc.freeze()
    server.start()
    for host, port in server.addresses:
        log.info(
            "listening on %s:%d, %s, modules %s",
            f"[{host}]" if ":" in host else host,
            port,
            "TLS" if web.current() and web.current().context else "plain HTTP",  # type: ignore[union-attr]
            ", ".join(sorted(exporter.config.modules)),
        )
    while True:
        received = signal.sigwait(wanted)
        if received == signal.SIGHUP:
            exporter.reload()
            continue
        break
    log.info("%s: stopping, letting running requests finish", signal.Signals(received).name)
    exporter.stopping.set()
    # Requests still waiting for a probe at the cutoff are answered 503, in
    # time for their answers to be written before the grace period ends.
    pool.stop(time.monotonic() + DRAIN_SECONDS - 1)
    server.stop()
    if not exporter.drain(DRAIN_SECONDS):
        log.warning("requests still running after the grace period; exiting anyway")
    log.info("stopped")
    return 0


def run() -> NoReturn:
    """Console-script entry point."""
    raise SystemExit(main())
