"""Output formats besides the Nagios status line: TAP, JSON and cron's quiet mode.

Each takes the evaluated per-target reports and returns the whole text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import nagiosplugin

from .plugin import TargetReport

__all__ = ["fleet_lines", "json_document", "quiet", "tap"]


def _state(report: TargetReport) -> str:
    return str(report.state).upper()


def fleet_lines(reports: Sequence[TargetReport]) -> list[str]:
    """The long-output lines of the Nagios fleet format: one per target."""
    return [f"{_state(r)} {r.target}: {r.text}" for r in reports]


def quiet(reports: Sequence[TargetReport]) -> str:
    """Cron mode: nothing when all is well, else one line per target that needs a hand."""
    return "".join(f"{r.target}: {r.text}\n" for r in reports if r.state != nagiosplugin.Ok)


def tap(reports: Sequence[TargetReport]) -> str:
    """TAP version 13: a plan, one test line per target, YAML diagnostics on failures."""
    lines = ["TAP version 13", f"1..{len(reports)}"]
    for number, report in enumerate(reports, 1):
        # '#' starts a TAP directive: keep it out of descriptions.
        text = report.text.replace("#", "%23")
        if report.state == nagiosplugin.Ok:
            lines.append(f"ok {number} - {report.target} {text}")
            continue
        lines.append(f"not ok {number} - {report.target} {text}")
        lines.append("  ---")
        lines.append(f"  severity: {str(report.state).lower()}")
        lines.append("  problems:")
        lines.extend(f"    - {_yaml_string(p)}" for p in report.problems)
        verdict = report.resource.verdict
        if verdict is not None:
            lines.append(f"  days_left: {verdict.days_left:.2f}")
            lines.append(f"  not_after: {verdict.limiting_cert.not_after:%Y-%m-%dT%H:%M:%SZ}")
        lines.append("  ...")
    return "\n".join(lines) + "\n"


def _yaml_string(text: str) -> str:
    # Double-quoted YAML scalar; the text is already printable ASCII.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def json_document(reports: Sequence[TargetReport], state: nagiosplugin.state.ServiceState) -> str:
    """One JSON document describing every target."""
    import json

    counts = {name: 0 for name in ("ok", "warning", "critical", "unknown")}
    for report in reports:
        counts[str(report.state).lower()] += 1
    document = {
        "check_pg_tls": 1,
        "checked_at": _time(dt.datetime.now(dt.timezone.utc)),
        "state": str(state).upper(),
        "exit_code": int(state),
        "counts": counts,
        "targets": [_target(r) for r in reports],
    }
    return json.dumps(document, indent=2) + "\n"


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _target(report: TargetReport) -> dict[str, Any]:
    resource = report.resource
    target, observation, verdict = resource.target, resource.observation, resource.verdict
    entry: dict[str, Any] = {
        "target": str(target),
        "host": target.host,
        "port": target.port,
        "servername": target.checked_name,
        "sslmode": resource.policy.sslmode,
        "state": _state(report),
        "problems": list(report.problems),
        "summary": report.text,
        "error": str(resource.error) if resource.error else None,
        "address": observation.address if observation else None,
        "tls": None,
        "days_left": None,
        "not_after": None,
        "expires_first": None,
        "checks": {},
        "openssl": [],
        "chain": [],
    }
    if observation is not None:
        entry["tls"] = {
            "version": observation.tls_version,
            "cipher": observation.cipher,
            "alpn": observation.alpn,
            "connect_ms": round(observation.connect_seconds * 1000, 3),
            "handshake_ms": round(observation.handshake_seconds * 1000, 3),
            "legacy_handshake": observation.legacy_reason,
        }
    if verdict is not None:
        now = resource.checked_at or dt.datetime.now(dt.timezone.utc)
        entry["days_left"] = round(verdict.days_left, 4)
        entry["not_after"] = _time(verdict.limiting_cert.not_after)
        entry["expires_first"] = verdict.limiting
        entry["checks"] = {
            f.check: {
                "ok": f.problem is None,
                "severity": f.severity if f.problem else "ok",
                "message": f.problem or f.detail,
            }
            for f in resource.findings
        }
        entry["openssl"] = list(verdict.complaints)
        entry["chain"] = [
            {
                "subject": cert.subject,
                "issuer": cert.issuer,
                "serial": cert.serial,
                "not_before": _time(cert.not_before),
                "not_after": _time(cert.not_after),
                "days_left": round(cert.days_left(now), 4),
                "dns_names": list(cert.dns_names),
                "ip_addresses": list(cert.ip_addresses),
                "sha256": cert.sha256,
                "used_by_clients": index in verdict.relevant,
            }
            for index, cert in enumerate(verdict.chain)
        ]
    return entry
