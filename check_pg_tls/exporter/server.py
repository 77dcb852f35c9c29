"""The HTTP side: ``/probe``, ``/metrics``, ``/-/healthy``, ``/-/reload`` and a landing page.

:mod:`.connections` accepts, handshakes and reads each request's head
within its limits; this module answers: it authenticates, routes, runs
probes in the bounded :class:`.pool.ProbePool`, and writes the answer
within a deadline. Every answer, errors included, is plain text (or the
metrics) with the web configuration's headers, and is counted in
``pg_tls_exporter_http_requests_total``; a client that goes away is a
debug line, never a traceback.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse

from .. import __version__
from . import probing
from .auth import BasicAuth, Verdict
from .config import DEFAULT_MODULE, Config, FileError, load
from .connections import Conn, Limits, Reception
from .httpwire import BadRequest, Request, answer, interim_continue, parse_head
from .metrics import ExporterMetrics
from .pool import MIN_BUDGET, NotStarted, Overran, ProbePool, Stopped
from .webconfig import WebConfig, WebConfigSource

__all__ = [
    "DRAIN_SECONDS",
    "SCRAPE_TIMEOUT",
    "Exporter",
    "ListenError",
    "Server",
    "default_limits",
]

_log = logging.getLogger("pg_tls_exporter")

#: Seconds SIGTERM waits for running requests.
DRAIN_SECONDS = 5.0
#: Prometheus' scrape timeout when a request does not say (blackbox_exporter's 120 s).
SCRAPE_TIMEOUT = 120.0
#: The longest scrape timeout taken from the header: a request may wait
#: that long for a probe slot, and no longer.
_MAX_SCRAPE_TIMEOUT = 3600.0

_TEXT = "text/plain; charset=utf-8"
_ROUTES = ("/", "/probe", "/metrics", "/-/healthy", "/-/reload")


def default_limits(concurrency: int, request_timeout: float, idle_timeout: float) -> Limits:
    """Connections: four per probe slot, at least 256; half of them may be answered at once."""
    connections = max(256, 4 * concurrency)
    return Limits(connections, connections // 2, request_timeout, idle_timeout)


class ListenError(Exception):
    """An address cannot be listened on: the message says which and why."""


class _Client(Exception):
    """The client went away, or did not send or take its part in time."""


class Exporter:
    """The exporter's state: the loaded configuration, the pool, the metrics."""

    def __init__(
        self,
        config_path: str,
        web: WebConfigSource,
        pool: ProbePool,
        timeout_offset: float,
        request_timeout: float = 10.0,
    ) -> None:
        self.config_path = config_path
        self.web = web
        self.pool = pool
        self.timeout_offset = timeout_offset
        self.request_timeout = request_timeout
        self.metrics = ExporterMetrics(lambda: float(pool.running), pool.size)
        self.auth = BasicAuth()
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

    def serve(self, conn: Conn, head: bytes) -> None:
        """Answer the request whose head is ``head`` (a worker thread)."""
        with self._idle:
            self._active += 1
        conn.keep = False
        try:
            _Exchange(self, conn).run(head)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def count_refusal(self, status: int, head: bytes) -> None:
        """An answer the reception gave itself, counted as every other."""
        self.metrics.requests.labels(_handler(_target(head)), str(status)).inc()

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


def _target(head: bytes) -> str:
    parts = head.lstrip(b"\r\n").split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) > 1 else ""


def _handler(target: str) -> str:
    try:
        path = urllib.parse.urlsplit(target).path
    except ValueError:
        return "other"
    return path if path in _ROUTES else "other"


class _Exchange:
    """One request and its answer."""

    def __init__(self, exporter: Exporter, conn: Conn) -> None:
        self.exporter = exporter
        self.conn = conn
        self.started = time.monotonic()
        self.web: WebConfig = conn.web
        self.request: Request | None = None
        self.handler = "other"
        self.keep = False

    def run(self, head: bytes) -> None:
        self.handler = _handler(_target(head))
        try:
            try:
                self.request = parse_head(head)
            except BadRequest as bad:
                self.send(bad.status, bad.reason + "\n")
                return
            self.answer(self.request)
        except _Client as gone:
            _log.debug("%s: %s", self.conn.peer, gone)
            self.conn.keep = False

    def answer(self, request: Request) -> None:
        exporter = self.exporter
        self.keep = request.keep_alive and not exporter.stopping.is_set()
        web = exporter.web.current()
        if web is None:
            self.keep = False
            self.send(500, "the web configuration cannot be loaded; see the exporter's log\n")
            return
        self.web = web
        if not exporter.allow_rate(web):
            self.send(429, "Too Many Requests\n")
            return
        if web.users:
            verdict = exporter.auth.check(web.users, request.header("authorization"))
            if verdict is not Verdict.OK:
                # Its body, if any, is never read: the connection ends here.
                self.keep = False
                if verdict is Verdict.BUSY:
                    self.send(503, "too many password checks at once; try again\n")
                else:
                    self.send(
                        401,
                        "Unauthorized\n",
                        {"WWW-Authenticate": 'Basic realm="pg_tls_exporter"'},
                    )
                return
        self.conn.proven = True
        try:
            length = request.body_length()
        except BadRequest as bad:
            self.keep = False
            self.send(bad.status, bad.reason + "\n")
            return
        if length:
            self._body(request, length)
        try:
            url = urllib.parse.urlsplit(request.target)
        except ValueError:
            self.send(400, "invalid request target\n")
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
        if request.method not in methods:
            self.send(
                405,
                f"{url.path} answers {' and '.join(methods)} only\n",
                {"Allow": ", ".join(methods)},
            )
            return
        action()

    def _body(self, request: Request, length: int) -> bytes:
        conn = self.conn
        data = bytes(conn.buffer[:length])
        del conn.buffer[:length]
        if len(data) < length and (request.header("expect") or "").lower() == "100-continue":
            self._write(interim_continue())
        end = time.monotonic() + self.exporter.request_timeout
        while len(data) < length:
            try:
                conn.sock.settimeout(max(0.001, end - time.monotonic()))
                chunk = conn.sock.recv(min(65536, length - len(data)))
            except TimeoutError:
                self.keep = False
                self.send(408, "request body not read in time\n")
                raise _Client("request body not read in time") from None
            except (OSError, ssl.SSLError) as exc:
                raise _Client(f"client went away: {exc}") from None
            if not chunk:
                raise _Client("client went away before its request body")
            data += chunk
        return data

    def _write(self, data: bytes) -> None:
        """Send what the socket takes now; the rest is the reception's to send.

        A worker never waits for a client to read: clients that pipeline
        requests and never read their answers would otherwise hold every
        worker, and keep out the scrapers.
        """
        conn = self.conn
        if conn.output:
            conn.output += data
            return
        view = memoryview(data)
        try:
            conn.sock.setblocking(False)
            while view:
                view = view[conn.sock.send(view) :]
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            conn.output += view
        except (OSError, ssl.SSLError) as exc:
            raise _Client(f"client went away: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                conn.sock.setblocking(True)

    def send(
        self,
        code: int,
        body: str | bytes,
        headers: dict[str, str] | None = None,
        content_type: str = _TEXT,
    ) -> None:
        request = self.request
        data = body.encode() if isinstance(body, str) else body
        if request is None or self.exporter.stopping.is_set():
            self.keep = False
        self.exporter.metrics.requests.labels(self.handler, str(code)).inc()
        _log.debug(
            "%s %s %d %.3fs from %s",
            request.method if request else "-",
            self.handler,
            code,
            time.monotonic() - self.started,
            self.conn.peer,
        )
        self._write(
            answer(
                code,
                data,
                {"Content-Type": content_type, **self.web.headers, **(headers or {})},
                head_only=request is not None and request.method == "HEAD",
                close=not self.keep,
            )
        )
        self.conn.keep = self.keep

    def landing(self) -> None:
        config = self.exporter.config
        # A form, not a link: a probe needs a target, and a link without one
        # would only lead to a 400.
        modules = "".join(
            f'<li><form action="probe"><code>{html.escape(name)}</code>: '
            '<input name="target" required placeholder="HOST:PORT"> '
            f'<input type="hidden" name="module" value="{html.escape(name)}">'
            '<input type="hidden" name="debug" value="true">'
            '<button type="submit">probe with debug=true</button></form></li>\n'
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
        assert self.request is not None
        body, content_type = self.exporter.metrics.render(self.request.header("accept") or "")
        self.send(200, body, content_type=content_type)

    def reload(self) -> None:
        problem = self.exporter.reload()
        if problem is None:
            self.send(200, "configuration reloaded\n")
        else:
            self.send(500, f"configuration not reloaded: {problem}\n")

    def probe(self, query: str) -> None:
        exporter, request = self.exporter, self.request
        assert request is not None
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
        named = params.get("module", [""])[0]
        name = named or DEFAULT_MODULE
        module = config.modules.get(name)
        if module is None:
            shown = name if re.fullmatch(r"[\w.-]{1,64}", name) else "(not a module name)"
            known = ", ".join(sorted(config.modules))
            why = (
                f"unknown module {shown!r}"
                if named
                else f"no module given and no module {DEFAULT_MODULE!r}"
            )
            self.send(400, f"{why}: modules are {known}\n")
            return
        debug = params.get("debug", ["false"])[0].lower() in ("true", "1", "yes")
        times = self._times(module.timeout)
        if times is None:
            return
        share, within = times
        try:
            parsed = probing.parse_target(spec, module)
        except probing.BadTarget as exc:
            # The check's own message: a password in the spec is masked there.
            self.send(400, f"{exc}\n")
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
        openmetrics = not debug and _wants_openmetrics(request.header("accept") or "")
        deadline = self.started + within
        shown = probing.shown_spec(spec)
        result = "error"
        try:
            answer = exporter.pool.run(
                lambda budget: probing.run(parsed, module, budget, share, openmetrics),
                share,
                deadline,
            )
            result = "success" if answer.success else "failure"
        except NotStarted:
            result = "not_started"
            self.send(
                503,
                f"exporter busy: no probe slot free in time for a {share:g}-second probe "
                f"(--probe.concurrency {exporter.pool.size})\n",
            )
            return
        except Stopped:
            result = "not_started"
            self.keep = False
            self.send(503, "the exporter is stopping: the probe was not finished\n")
            return
        except Overran:
            result = "overran"
            answer = probing.failure(2, f"no result within {share:g} seconds", openmetrics)
        except Exception:  # noqa: BLE001 - one probe's bug must not end the exporter
            _log.exception("probe of %s failed", shown)
            self.send(500, "internal error; see the exporter's log\n")
            return
        finally:
            exporter.metrics.probes.labels(name, result).inc()
            exporter.metrics.duration.labels(name).observe(time.monotonic() - self.started)
        _log.debug("probe of %s with module %s: %s", shown, name, result)
        if debug:
            text = (
                answer.debug + "\nMetrics that would have been returned:\n" + answer.body.decode()
            )
            self.send(200, text)
            return
        self.send(200, answer.body, content_type=_content_type(openmetrics))

    def _times(self, module_timeout: float) -> tuple[float, float] | None:
        """The probe's share of time, and the seconds from arrival its answer must come within.

        As blackbox_exporter: Prometheus' scrape timeout (120 s when the
        header is absent or 0) less ``--timeout-offset``, at most the
        module's timeout, is the probe's; the rest of the scrape timeout is
        what it may wait for a slot. An offset as long as the scrape
        timeout itself would leave nothing: half of it then.
        """
        assert self.request is not None
        header = self.request.header("x-prometheus-scrape-timeout-seconds")
        scrape = SCRAPE_TIMEOUT
        if header:
            try:
                value = float(header)
            except ValueError:
                value = -1.0
            if not 0 <= value < float("inf"):
                self.send(400, "X-Prometheus-Scrape-Timeout-Seconds is not a number of seconds\n")
                return None
            scrape = min(value, _MAX_SCRAPE_TIMEOUT) if value > 0 else SCRAPE_TIMEOUT
        within = max(scrape - self.exporter.timeout_offset, scrape / 2)
        share = min(module_timeout, within)
        if share < MIN_BUDGET:
            self.send(
                400,
                f"X-Prometheus-Scrape-Timeout-Seconds {header} leaves a probe {share:.3g} "
                f"seconds, less than {MIN_BUDGET:g}: raise the scrape timeout\n",
            )
            return None
        return share, within


def _wants_openmetrics(accept: str) -> bool:
    return any(
        part.split(";", 1)[0].strip().lower() == "application/openmetrics-text"
        for part in accept.split(",")
    )


def _content_type(openmetrics: bool) -> str:
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

    return str(OPENMETRICS if openmetrics else CONTENT_TYPE_LATEST)


class Server:
    """The listening sockets and the reception that serves them."""

    def __init__(
        self,
        addresses: list[tuple[str, int, socket.AddressFamily]],
        exporter: Exporter,
        limits: Limits,
    ) -> None:
        self.exporter = exporter
        self.sockets: list[socket.socket] = []
        try:
            for host, port, family in addresses:
                self.sockets.append(_listen(host, port, family))
        except BaseException:
            for sock in self.sockets:
                sock.close()
            raise
        self.addresses = [sock.getsockname()[:2] for sock in self.sockets]
        self.reception = Reception(
            self.sockets,
            exporter.web,
            limits,
            exporter.serve,
            exporter.count_refusal,
            lambda reason: exporter.metrics.closed.labels(reason).inc(),
        )
        exporter.metrics.connections.set_function(lambda: self.reception.open_connections)

    def start(self) -> None:
        threading.Thread(target=self.reception.serve, name="reception", daemon=True).start()

    def stop(self) -> None:
        self.reception.stop()


def _listen(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            # ":PORT" means every interface, IPv4 too.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
