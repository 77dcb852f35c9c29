"""The exporter's own metrics, for ``/metrics``: reloads, probes, and the process.

Names follow blackbox_exporter's with this exporter's prefix, so that the
alerts people have for a failed reload carry over. The official client
library adds the process metrics (CPU, memory, open file descriptors) and
Python's own.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from .. import __version__

__all__ = ["RESULTS", "ExporterMetrics"]

#: The values of the ``result`` label of probes_total.
RESULTS = ("success", "failure", "not_started", "overran", "error")


class ExporterMetrics:
    def __init__(self, in_flight: Callable[[], float], pool_size: int) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        prefix = "pg_tls_exporter"
        Gauge(
            f"{prefix}_build_info",
            "The exporter's version; always 1",
            ["version"],
            registry=self.registry,
        ).labels(__version__).set(1)
        self.reload_ok = Gauge(
            f"{prefix}_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful",
            registry=self.registry,
        )
        self.reload_time = Gauge(
            f"{prefix}_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload",
            registry=self.registry,
        )
        self.probes = Counter(
            f"{prefix}_probes",
            "Probes answered, by module and result: success (probe_success 1), failure "
            "(probe_success 0), not_started (no free slot before the deadline), overran "
            "(no result by the deadline), error (an internal error)",
            ["module", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{prefix}_probe_duration_seconds",
            "Seconds from a probe request's arrival to its answer, waiting included",
            ["module"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        running = Gauge(
            f"{prefix}_probes_in_flight",
            "Probes running now",
            registry=self.registry,
        )
        running.set_function(in_flight)
        Gauge(
            f"{prefix}_probe_concurrency",
            "The most probes that run at once (--probe.concurrency)",
            registry=self.registry,
        ).set(pool_size)
        self.requests = Counter(
            f"{prefix}_http_requests",
            "HTTP requests answered, by path and status code",
            ["handler", "code"],
            registry=self.registry,
        )
        self.connections = Gauge(
            f"{prefix}_http_connections",
            "Client connections open now",
            registry=self.registry,
        )
        self.closed = Counter(
            f"{prefix}_http_connections_closed",
            "Client connections the exporter closed before their time: evicted (the "
            "connection limit was reached: the one longest without a request went), timeout "
            "(no whole request in time), tls (a failed handshake or an unwanted client "
            "certificate)",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("evicted", "timeout", "tls"):
            self.closed.labels(reason)

    def new_modules(self, names: list[str]) -> None:
        """Start every module's counters at 0, so that rates work from the first probe."""
        for name in names:
            for result in RESULTS:
                self.probes.labels(name, result)
            self.duration.labels(name)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition, in the format the ``Accept`` header prefers, and its type."""
        encoder, content_type = choose_encoder(accept)
        return bytes(encoder(self.registry)), content_type
