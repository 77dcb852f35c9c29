"""``--openmetrics``: every target's certificate as Prometheus metrics.

Names are blackbox_exporter's where the meaning is the same, so that
dashboards and alert rules written for it work unchanged; what is
PostgreSQL's own is prefixed ``pg_tls_``. Unlike blackbox_exporter, the
expiry metrics are written whenever a certificate was obtained, trusted or
not, expired or not: that is when they matter most.

:func:`families` is pure: outcomes in, metric families out. The
official client library, prometheus_client, writes the exposition format and
does the escaping; it is imported only here, only for ``--openmetrics``, so
that a plain Nagios check does not pay for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .model import TLS_VERSIONS, Check, State
from .record import Record

if TYPE_CHECKING:
    import argparse

    from .model import Outcome

__all__ = ["INSTALL", "Family", "MetricsSink", "failure_families", "families", "render"]

INSTALL = "pip install 'check_pg_tls[prometheus]'"

#: The checks that decide whether a client with the sslmode would connect,
#: which is what blackbox_exporter's probe_success means; when the chain is
#: verified, its dates decide too.
_CLIENT_CONNECTS = frozenset({Check.TRUST, Check.NAME, Check.HANDSHAKE})

#: blackbox_exporter's spelling of the versions: TLS 1.0 to TLS 1.3.
_TLS_VERSIONS = {
    name: "TLS " + (name.removeprefix("TLSv") if "." in name else "1.0") for name in TLS_VERSIONS
}

Labels = dict[str, str]


class Family(Record):
    """One metric family: a name, its help and its samples, as labels and value."""

    name: str
    help: str
    samples: tuple[tuple[Labels, float], ...]
    #: ``gauge``, or ``info`` for a ``..._info`` family whose samples are all 1.
    kind: str = "gauge"
    #: OpenMetrics' unit, when the name ends in it.
    unit: str = ""


_HELP = {
    "probe_success": "1 if a client with this sslmode would connect: a certificate was "
    "obtained, and its chain, dates and name pass as far as the sslmode verifies them",
    "probe_duration_seconds": "Seconds from start to the end of the TLS handshake, or to "
    "the failure",
    "probe_ssl_earliest_cert_expiry": "Expiry of the first certificate to expire among all "
    "the server presented, Unix seconds; also when untrusted or expired",
    "probe_ssl_last_chain_expiry_timestamp_seconds": "Expiry of the first certificate to "
    "expire in the chain clients use (the verified path up to the root, or what was "
    "presented when it is not verified), Unix seconds",
    "probe_ssl_last_chain": "The server's certificate: SHA-256 fingerprint, subject, issuer, "
    "DNS names, serial number",
    "probe_tls_version": "The negotiated TLS version",
    "pg_tls_state": "The check's state for the target: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    "pg_tls_check_state": "Each check's state for the target: 0 OK, 1 WARNING, 2 CRITICAL, "
    "3 UNKNOWN",
    "pg_tls_negotiation": "How TLS was negotiated (postgres: SSLRequest first; direct: TLS at "
    "once) and the ALPN protocol the server selected",
    "pg_tls_error": "Why no certificate was obtained from the target, or why the run failed",
}


def families(outcomes: Sequence[Outcome], labelled: bool = True) -> list[Family]:
    """The metric families of a finished run: a sample set per target.

    ``labelled``: every sample names its target (``target``); without, as
    pg_tls_exporter answers a probe of one target, Prometheus adds the
    ``instance`` label itself.
    """
    samples: dict[str, list[tuple[Labels, float]]] = {name: [] for name in _HELP}
    for outcome in outcomes:
        for name, labels, value in _target_samples(outcome, labelled):
            samples[name].append((labels, value))
    return [_family(name, found) for name, found in samples.items() if found]


# The perfdata name of the expiry check is its unit: a metric label says what it is.
_CHECK_NAMES = {Check.DAYS_LEFT: "expiry"}


def _target_samples(outcome: Outcome, labelled: bool) -> Iterator[tuple[str, Labels, float]]:
    target = {"target": str(outcome.target)} if labelled else {}
    checks = {
        _CHECK_NAMES.get(result.check, str(result.check)): result.state
        for result in outcome.results
        if result.check is not Check.TIME
    }
    connects = outcome.error is None and all(
        checks.get(check, State.OK) is State.OK for check in _CLIENT_CONNECTS
    )
    if connects and outcome.days_left is not None and outcome.checked_as.verifies_chain:
        connects = outcome.days_left >= 0 and checks.get(Check.VALIDITY, State.OK) is State.OK
    yield "probe_success", target, float(connects)
    yield "probe_duration_seconds", target, outcome.seconds
    yield "pg_tls_state", target, float(outcome.state)
    for check, state in checks.items():
        yield "pg_tls_check_state", {**target, "check": check}, float(state)
    if outcome.error is not None:
        yield "pg_tls_error", {**target, "reason": outcome.error}, 1.0
    session = outcome.session
    if session is not None:
        version = _TLS_VERSIONS.get(session.tls_version, session.tls_version)
        yield "probe_tls_version", {**target, "version": version}, 1.0
        negotiation = outcome.checked_as.negotiation or ""
        alpn = {"negotiation": negotiation, "alpn": session.alpn or ""}
        yield "pg_tls_negotiation", {**target, **alpn}, 1.0
    if outcome.days_left is None:
        return
    earliest = min(cert.not_after for cert in outcome.chain)
    yield "probe_ssl_earliest_cert_expiry", target, earliest.timestamp()
    if outcome.chain_expiry is not None:
        expiry = outcome.chain_expiry.timestamp()
        yield "probe_ssl_last_chain_expiry_timestamp_seconds", target, expiry
    leaf = outcome.leaf
    info = {
        "fingerprint_sha256": leaf.sha256,
        "subject": leaf.subject,
        "issuer": leaf.issuer,
        "subjectalternative": ",".join(leaf.dns_names),
        "serialnumber": leaf.serial,
    }
    yield "probe_ssl_last_chain", {**target, **info}, 1.0


def failure_families(state: int, reason: str) -> list[Family]:
    """What a run that failed as a whole knows: it failed, and why."""
    return [
        _family("probe_success", [({}, 0.0)]),
        _family("pg_tls_state", [({}, float(state))]),
        _family("pg_tls_error", [({"reason": reason}, 1.0)]),
    ]


#: Families whose samples carry their facts as labels, with the value 1.
_INFO = frozenset(
    {"probe_ssl_last_chain", "probe_tls_version", "pg_tls_negotiation", "pg_tls_error"}
)


def _family(name: str, samples: list[tuple[Labels, float]]) -> Family:
    kind = "info" if name in _INFO else "gauge"
    unit = "seconds" if name.endswith("_seconds") else ""
    return Family(name, _HELP[name], tuple(samples), kind, unit)


def render(found: Sequence[Family], openmetrics: bool = False) -> bytes:
    """The families in the Prometheus text format, or in OpenMetrics (ending ``# EOF``).

    Raises:
        ImportError: prometheus_client is not installed.
    """
    from prometheus_client import exposition
    from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
    from prometheus_client.openmetrics import exposition as openmetrics_exposition

    metrics: list[Any] = []
    for family in found:
        labels = sorted({key for labels, _ in family.samples for key in labels})
        if family.kind == "info":
            metric: Any = InfoMetricFamily(family.name, family.help, labels=labels)
            for sample, _ in family.samples:
                metric.add_metric([], sample)
        else:
            metric = GaugeMetricFamily(family.name, family.help, labels=labels, unit=family.unit)
            for sample, value in family.samples:
                metric.add_metric([sample.get(key, "") for key in labels], value)
        metrics.append(metric)

    class _Collected:
        def collect(self) -> list[Any]:
            return metrics

    if openmetrics:
        return bytes(openmetrics_exposition.generate_latest(_Collected()))  # type: ignore[no-untyped-call]
    return bytes(exposition.generate_latest(_Collected()))


class MetricsSink:
    """Where ``--openmetrics`` writes: stdout, or ``--output FILE`` replaced atomically.

    Raises:
        UsageError: ``--output`` or ``--metrics-format`` without ``--openmetrics``.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        if not args.openmetrics:
            given = "--output" if args.output else "--metrics-format"
            raise UsageError(f"{given} needs --openmetrics")
        self.output: str | None = args.output
        self.openmetrics = args.metrics_format == "openmetrics"

    def load_library(self) -> None:
        """Fail early, before any server is probed, when prometheus_client is missing.

        Raises:
            UsageError: it is not installed; the message says how to install it.
        """
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise UsageError(f"--openmetrics needs prometheus_client: {INSTALL}") from None

    def write(self, outcomes: Sequence[Outcome]) -> None:
        """Write a finished run's metrics.

        Raises:
            OSError: ``--output`` cannot be written.
        """
        self._put(render(families(outcomes), self.openmetrics))

    def failed(self, state: int, reason: str) -> bool:
        """Write what a run that failed as a whole knows; True if a status line
        should still be printed (the metrics went to a file, or nowhere)."""
        found = failure_families(state, reason)
        try:
            data = render(found, self.openmetrics)
        except ImportError:
            data = _render_without_library(found, self.openmetrics)
        try:
            self._put(data)
        except OSError:
            return True
        return self.output is not None

    def _put(self, data: bytes) -> None:
        if self.output is None:
            sys.stdout.write(data.decode())
            sys.stdout.flush()
        else:
            replace_file(Path(self.output), data)


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: written beside it, then renamed.

    A reader (node_exporter's textfile collector) sees the old file or the
    new one, never half of one. The temporary name does not end in ``.prom``,
    so the collector ignores it; its mode follows the umask, as the file's
    would with a shell redirect.

    Raises:
        OSError: the directory cannot be written.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _render_without_library(found: Sequence[Family], openmetrics: bool) -> bytes:
    # Only for telling, without prometheus_client, that it is missing: the
    # failure samples' few label values need only the format's three escapes.
    lines = []
    for family in found:
        name = f"{family.name}_info" if family.kind == "info" else family.name
        lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in family.samples:
            pairs = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
            lines.append(f"{name}{{{pairs}}} {value:g}" if pairs else f"{name} {value:g}")
    if openmetrics:
        lines.append("# EOF")
    return ("\n".join(lines) + "\n").encode()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
