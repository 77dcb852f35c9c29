"""The HTTP side: ``/probe``, ``/metrics``, ``/-/healthy``, ``/-/reload`` and a landing page.

The server is the standard library's ``ThreadingHTTPServer``: one thread
per connection, HTTP/1.1 keep-alive as Prometheus uses it, and nothing to
install. Its weak points are covered here: the TLS handshake runs in the
connection's own thread (a slow client never holds up ``accept``), idle
connections are closed after :data:`IDLE_TIMEOUT`, connections are capped,
and probes run in the bounded :class:`.pool.ProbePool`, not in the
connection threads' own time.
"""

from __future__ import annotations

import html
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .. import __version__
from . import probing
from .auth import BasicAuth
from .config import DEFAULT_MODULE, Config, FileError, load
from .metrics import ExporterMetrics
from .pool import NotStarted, Overran, ProbePool
from .probing import mask_secrets
from .webconfig import WebConfig, WebConfigSource, client_sans

__all__ = ["IDLE_TIMEOUT", "Exporter", "HttpServer", "mask_secrets"]

_log = logging.getLogger("pg_tls_exporter")

#: Seconds an idle keep-alive connection (or a slow client) is kept.
IDLE_TIMEOUT = 120.0
#: Seconds for a client's TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Largest request body read (only /-/reload takes a POST).
MAX_BODY = 65536
#: Seconds SIGTERM waits for running requests.
DRAIN_SECONDS = 5.0

_TEXT = "text/plain; charset=utf-8"
_ROUTES = ("/", "/probe", "/metrics", "/-/healthy", "/-/reload")


class Exporter:
    """The exporter's state: the loaded configuration, the pool, the metrics."""

    def __init__(
        self,
        config_path: str,
        web: WebConfigSource,
        pool: ProbePool,
        timeout_offset: float,
        max_connections: int,
    ) -> None:
        self.config_path = config_path
        self.web = web
        self.pool = pool
        self.timeout_offset = timeout_offset
        self.metrics = ExporterMetrics(lambda: float(pool.running), pool.size)
        self.auth = BasicAuth()
        self.connections = threading.BoundedSemaphore(max_connections)
        self.stopping = threading.Event()
        self._active = 0
        self._idle = threading.Condition()
        self._reload_lock = threading.Lock()
        self._tokens: tuple[float, float] | None = None
        self._rate_lock = threading.Lock()
        self.config: Config = load(config_path)
        self._loaded(self.config)

    def _loaded(self, config: Config) -> None:
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(config.loaded_at)
        self.metrics.new_modules(sorted(config.modules))

    def reload(self) -> str | None:
        """Load the file again; None, or why the old configuration stays."""
        with self._reload_lock:
            try:
                config = load(self.config_path)
            except FileError as exc:
                self.metrics.reload_ok.set(0)
                _log.error("configuration not reloaded, the old one stays: %s", exc)
                return str(exc)
            self.config = config
            self._loaded(config)
            _log.info("configuration reloaded: modules %s", ", ".join(sorted(config.modules)))
            return None

    def drain(self, seconds: float) -> bool:
        """Wait until no request is being answered; False if some still were."""
        end = time.monotonic() + seconds
        with self._idle:
            while self._active:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def handle(self, request: Handler) -> None:
        with self._idle:
            self._active += 1
        try:
            _Exchange(self, request).answer()
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def allow_rate(self, web: WebConfig) -> bool:
        limit = web.rate_limit
        if limit is None:
            return True
        with self._rate_lock:
            now = time.monotonic()
            tokens, last = self._tokens or (float(limit.burst), now)
            tokens = min(float(limit.burst), tokens + (now - last) / limit.interval)
            if tokens < 1:
                self._tokens = (tokens, now)
                return False
            self._tokens = (tokens - 1, now)
            return True


class _Exchange:
    """One request and its answer."""

    def __init__(self, exporter: Exporter, request: Handler) -> None:
        self.exporter = exporter
        self.request = request
        self.started = time.monotonic()
        self.web: WebConfig | None = None
        self.handler = "other"

    def answer(self) -> None:
        request = self.request
        url = urllib.parse.urlsplit(request.path)
        if url.path in _ROUTES:
            self.handler = url.path
        if not self._read_body():
            return
        web = self.exporter.web.current()
        if web is None:
            self.send(500, "the web configuration cannot be loaded; see the exporter's log\n")
            return
        self.web = web
        if not self.exporter.allow_rate(web):
            self.send(429, "Too Many Requests\n")
            return
        if web.users and not self.exporter.auth.check(
            web.users, request.headers.get("Authorization")
        ):
            self.send(401, "Unauthorized\n", {"WWW-Authenticate": 'Basic realm="pg_tls_exporter"'})
            return
        routes = {
            "/": (("GET", "HEAD"), self.landing),
            "/probe": (("GET",), lambda: self.probe(url.query)),
            "/metrics": (("GET", "HEAD"), self.own_metrics),
            "/-/healthy": (("GET", "HEAD"), lambda: self.send(200, "Healthy\n")),
            "/-/reload": (("POST",), self.reload),
        }
        if url.path not in routes:
            self.send(404, "Not Found\n")
            return
        methods, action = routes[url.path]
        if request.command not in methods:
            self.send(
                405,
                f"{url.path} answers {' and '.join(methods)} only\n",
                {"Allow": ", ".join(methods)},
            )
            return
        action()

    def _read_body(self) -> bool:
        request = self.request
        if request.headers.get("Transfer-Encoding"):
            request.close_connection = True
            self.send(411, "a request body needs Content-Length\n")
            return False
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            request.close_connection = True
            self.send(413, "request body too large\n")
            return False
        if length:
            request.rfile.read(length)
        return True

    def send(
        self,
        code: int,
        body: str | bytes,
        headers: dict[str, str] | None = None,
        content_type: str = _TEXT,
    ) -> None:
        request = self.request
        data = body.encode() if isinstance(body, str) else body
        request.send_response(code)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        for name, text in {**(self.web.headers if self.web else {}), **(headers or {})}.items():
            request.send_header(name, text)
        if self.exporter.stopping.is_set():
            request.close_connection = True
        if request.close_connection:
            request.send_header("Connection", "close")
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)
        self.exporter.metrics.requests.labels(self.handler, str(code)).inc()
        _log.debug(
            "%s %s %d %.3fs from %s",
            request.command,
            self.handler,
            code,
            time.monotonic() - self.started,
            request.client_address[0],
        )

    def landing(self) -> None:
        config = self.exporter.config
        modules = "".join(
            f'<li><code>{html.escape(name)}</code>: <a href="probe?target=&amp;module='
            f'{urllib.parse.quote(name)}&amp;debug=true">probe?target=...&amp;module='
            f"{html.escape(name)}</a></li>\n"
            for name in sorted(config.modules)
        )
        page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>pg_tls_exporter</title></head>
<body>
<h1>pg_tls_exporter {html.escape(__version__)}</h1>
<p>Checks the TLS certificate a PostgreSQL server presents, as libpq clients judge it.</p>
<ul>
<li><a href="metrics">metrics</a>: the exporter's own metrics</li>
<li><a href="-/healthy">-/healthy</a></li>
<li><code>probe?target=HOST:PORT&amp;module=NAME</code>
(add <code>&amp;debug=true</code> for the check's -v text)</li>
</ul>
<h2>Modules</h2>
<ul>
{modules}</ul>
</body></html>
"""
        self.send(200, page, content_type="text/html; charset=utf-8")

    def own_metrics(self) -> None:
        body, content_type = self.exporter.metrics.render(self.request.headers.get("Accept", ""))
        self.send(200, body, content_type=content_type)

    def reload(self) -> None:
        problem = self.exporter.reload()
        if problem is None:
            self.send(200, "configuration reloaded\n")
        else:
            self.send(500, f"configuration not reloaded: {problem}\n")

    def probe(self, query: str) -> None:
        exporter = self.exporter
        try:
            params = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False)
        except ValueError:
            self.send(400, "the query string cannot be read\n")
            return
        for name in ("target", "module", "debug"):
            if len(params.get(name, [])) > 1:
                self.send(400, f"{name} given more than once\n")
                return
        spec = params.get("target", [""])[0]
        if not spec.strip():
            self.send(400, "the target parameter is missing: probe?target=HOST:PORT\n")
            return
        config = exporter.config
        name = params.get("module", [""])[0] or DEFAULT_MODULE
        module = config.modules.get(name)
        if module is None:
            shown = name if re.fullmatch(r"[\w.-]{1,64}", name) else "(not a module name)"
            self.send(
                400, f"unknown module {shown!r}: modules are {', '.join(sorted(config.modules))}\n"
            )
            return
        debug = params.get("debug", ["false"])[0].lower() in ("true", "1", "yes")
        timeout = self._timeout(module.timeout)
        if timeout is None:
            return
        try:
            parsed = probing.parse_target(spec, module)
        except probing.BadTarget as exc:
            self.send(400, mask_secrets(str(exc), spec) + "\n")
            return
        if parsed.local_files:
            self.send(
                400,
                "a probe's connection string may not name files on the exporter's host "
                f"({', '.join(parsed.local_files)}): set them in a module\n",
            )
            return
        refused = config.allowed.refused(parsed.names)
        if refused is not None:
            _log.warning("probe refused: %r is not in allowed_targets", refused)
            self.send(403, f"{refused!r} is not in allowed_targets\n")
            return
        openmetrics = not debug and _wants_openmetrics(self.request.headers.get("Accept", ""))
        deadline = self.started + timeout
        result = "error"
        try:
            answer = exporter.pool.run(
                lambda budget: probing.run(parsed, module, budget, openmetrics), deadline
            )
            result = "success" if answer.success else "failure"
        except NotStarted:
            result = "not_started"
            self.send(
                503,
                f"no probe slot free within {timeout:g} seconds: {exporter.pool.size} probes "
                "running (--probe.concurrency)\n",
            )
            return
        except Overran:
            result = "overran"
            answer = probing.failure(2, f"no result within {timeout:g} seconds", openmetrics)
        except Exception:  # noqa: BLE001 - one probe's bug must not end the exporter
            _log.exception("probe of %s failed", mask_secrets(spec, spec))
            self.send(500, "internal error; see the exporter's log\n")
            return
        finally:
            exporter.metrics.probes.labels(name, result).inc()
            exporter.metrics.duration.labels(name).observe(time.monotonic() - self.started)
        _log.debug("probe of %s with module %s: %s", mask_secrets(spec, spec), name, result)
        if debug:
            text = (
                answer.debug + "\nMetrics that would have been returned:\n" + answer.body.decode()
            )
            self.send(200, text)
            return
        self.send(200, answer.body, content_type=_content_type(openmetrics))

    def _timeout(self, module_timeout: float) -> float | None:
        """The probe's time: the module's, shortened to Prometheus' scrape timeout."""
        header = self.request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
        if header is None:
            return module_timeout
        try:
            scrape = float(header)
            if not 0 < scrape < 1e6:
                raise ValueError
        except ValueError:
            self.send(400, "X-Prometheus-Scrape-Timeout-Seconds is not a number of seconds\n")
            return None
        left = scrape - self.exporter.timeout_offset
        # An offset as long as the scrape timeout itself would leave nothing.
        return min(module_timeout, left if left > 0 else scrape / 2)


def _wants_openmetrics(accept: str) -> bool:
    return any(
        part.split(";", 1)[0].strip().lower() == "application/openmetrics-text"
        for part in accept.split(",")
    )


def _content_type(openmetrics: bool) -> str:
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

    return str(OPENMETRICS if openmetrics else CONTENT_TYPE_LATEST)


class Handler(BaseHTTPRequestHandler):
    """Reads requests; the exporter answers them."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    server: HttpServer

    def version_string(self) -> str:
        return f"pg_tls_exporter/{__version__}"

    def _dispatch(self) -> None:
        self.server.exporter.handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        # Requests are logged by the exporter, without query strings (a
        # connection string may hold a password) or headers.
        pass


class HttpServer(ThreadingHTTPServer):
    """One listening socket; TLS and the connection cap per connection."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, exporter: Exporter
    ) -> None:
        self.address_family = family
        self.exporter = exporter
        super().__init__(address, Handler, bind_and_activate=False)
        try:
            if family == socket.AF_INET6 and address[0] == "::":
                # ":PORT" means every interface, IPv4 too.
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def server_bind(self) -> None:
        # HTTPServer's own looks up the host's FQDN, which may wait on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.exporter.stopping.is_set() or not self.exporter.connections.acquire(blocking=False):
            _log.warning("connection from %s dropped: too many connections", client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.exporter.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.exporter.connections.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        web = self.exporter.web.current()
        if web is None:
            # A web configuration that no longer loads: serve nothing.
            return
        if web.context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = web.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            _log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            if web.allowed_sans is not None and not _san_allowed(conn, web.allowed_sans):
                _log.warning(
                    "client certificate of %s has none of client_allowed_sans", client_address[0]
                )
                return
            super().finish_request(conn, client_address)
        finally:
            conn.close()


def _san_allowed(conn: ssl.SSLSocket, allowed: tuple[str, ...]) -> bool:
    certificate = conn.getpeercert()
    if not certificate:
        return False
    return any(name in allowed for name in client_sans(dict(certificate)))
