"""Output formats besides the Nagios status line: TAP, JSON and cron's quiet mode.

Each takes the evaluated per-target reports and returns the whole text; a
run that fails as a whole (a bad option, no result within -t) is printed in
the same format by :func:`failed_run`, so that whoever reads the format is
never handed a Nagios line instead.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import nagiosplugin

from .model import LoginAnswer, Target
from .openssl_client import openssl_version
from .plugin import TargetReport
from .targets import Unparsed
from .text import safe

__all__ = [
    "PERFDATA_TARGETS",
    "failed_run",
    "fleet_lines",
    "fleet_perfdata",
    "json_document",
    "quiet",
    "tap",
]


def _state(report: TargetReport) -> str:
    return str(report.state).upper()


def fleet_lines(reports: Sequence[TargetReport]) -> list[str]:
    """The long-output lines of the Nagios fleet format: one per target."""
    return [f"{_state(r)} {r.target}: {r.text}" for r in reports]


#: Fleet runs up to this size write every server's perfdata; larger ones only
#: the aggregates, so that the status line stays within what monitoring
#: systems pass on (and a grapher is not handed thousands of series per run).
PERFDATA_TARGETS = 20


def fleet_perfdata(reports: Sequence[TargetReport], per_target: Sequence[str]) -> list[str]:
    """The fleet's perfdata: every server's up to PERFDATA_TARGETS, then the aggregates.

    The aggregates are always there: the fewest days left over all servers,
    the slowest probe, and the number of servers in each state.
    """
    from .perfdata import number

    days = [r.resource.verdict.days_left for r in reports if r.resource.verdict is not None]
    times = [r.resource.seconds for r in reports]
    aggregates = []
    if days:
        aggregates.append(f"min_days_left={number(math.floor(min(days) * 100) / 100)}")
    if times:
        aggregates.append(f"max_time={number(round(max(times), 6))}s;;;0")
    for name in ("ok", "warning", "critical", "unknown"):
        count = sum(1 for r in reports if str(r.state).lower() == name)
        aggregates.append(f"servers_{name}={count};;;0")
    kept = list(per_target) if len(reports) <= PERFDATA_TARGETS else []
    return [*kept, *aggregates]


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
        lines += _tap_diagnostics(str(report.state).lower(), report.problems)
        verdict = report.resource.verdict
        if verdict is not None:
            lines.append(f"  days_left: {_floor(verdict.days_left, 2):.2f}")
            lines.append(f"  not_after: {verdict.limiting_cert.not_after:%Y-%m-%dT%H:%M:%SZ}")
        lines.append("  ...")
    return "\n".join(lines) + "\n"


def _tap_diagnostics(severity: str, problems: Sequence[str]) -> list[str]:
    return [
        "  ---",
        f"  severity: {severity}",
        "  problems:",
        *(f"    - {_yaml_string(p)}" for p in problems),
    ]


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
        "error": None,
        "targets": [_target(r) for r in reports],
    }
    return json.dumps(document, indent=2) + "\n"


def failed_run(kind: str, state: str, text: str, targets: Sequence[Target]) -> str:
    """A run that failed as a whole, in format ``kind`` (json, tap or quiet).

    ``state`` is the run's state (lower case), ``text`` why it failed, and
    ``targets`` those it was to check (none when the options did not parse):
    each gets the run's state and reason.
    """
    if kind == "json":
        import json

        counts = {name: 0 for name in ("ok", "warning", "critical", "unknown")}
        counts[state] = len(targets)
        document = {
            "check_pg_tls": 1,
            "checked_at": _time(dt.datetime.now(dt.timezone.utc)),
            "state": state.upper(),
            "exit_code": _EXIT_CODES[state],
            "counts": counts,
            "error": text,
            "targets": [
                {
                    **_blank(target),
                    "state": state.upper(),
                    "problems": [text],
                    "summary": text,
                    "error": text,
                }
                for target in targets
            ],
        }
        return json.dumps(document, indent=2) + "\n"
    if kind == "tap":
        if not targets:
            return f"TAP version 13\nBail out! {text}\n"
        lines = ["TAP version 13", f"1..{len(targets)}"]
        for number, target in enumerate(targets, 1):
            lines.append(f"not ok {number} - {target} {text.replace('#', '%23')}")
            lines += [*_tap_diagnostics(state, [text]), "  ..."]
        return "\n".join(lines) + "\n"
    if not targets:
        return f"{text}\n"
    return "".join(f"{target}: {text}\n" for target in targets)


_EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


def _floor(days: float, places: int) -> float:
    # Days are rounded down everywhere, so that no output says a day more
    # than the status line.
    scale = 10.0**places
    return math.floor(days * scale) / scale


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _blank(target: Target) -> dict[str, Any]:
    """A target's entry before anything is known of it."""
    entry: dict[str, Any] = {
        "target": str(target),
        "host": target.host,
        "port": target.port,
        "servername": target.checked_name,
        "sslmode": target.setting("sslmode"),
        "state": None,
        "problems": [],
        "summary": "",
        "error": None,
        "address": None,
        "tls": None,
        "openssl_version": None,
        "days_left": None,
        "not_after": None,
        "expires_first": None,
        "checks": {},
        "openssl": [],
        "crls": [],
        "client_certificate": None,
        "channel_binding": None,
        "auth": None,
        "chain": [],
    }
    if isinstance(target, Unparsed):
        # A line of the targets file that names no server.
        entry.update(host=None, port=None, servername=None, sslmode=None)
    return entry


def _target(report: TargetReport) -> dict[str, Any]:
    resource = report.resource
    target, observation, verdict = resource.target, resource.observation, resource.verdict
    entry = _blank(target)
    entry.update(
        sslmode=None if isinstance(target, Unparsed) else resource.policy.sslmode,
        state=_state(report),
        problems=list(report.problems),
        summary=report.text,
        error=str(resource.error) if resource.error else None,
        address=observation.address if observation else None,
    )
    if observation is not None:
        entry["openssl_version"] = openssl_version()
        entry["tls"] = {
            "version": observation.tls_version,
            "cipher": observation.cipher,
            "alpn": observation.alpn,
            "connect_ms": round(observation.connect_seconds * 1000, 3),
            "handshake_ms": round(observation.handshake_seconds * 1000, 3),
            "legacy_handshake": observation.legacy_reason,
        }
    if observation is not None and observation.login is not None:
        entry["auth"] = _login(observation.login)
    if verdict is not None:
        now = resource.checked_at or dt.datetime.now(dt.timezone.utc)
        entry["days_left"] = _floor(verdict.days_left, 4)
        entry["not_after"] = _time(verdict.limiting_cert.not_after)
        entry["expires_first"] = verdict.limiting
        entry["checks"] = {
            f.check: {
                "ok": f.problem is None,
                "severity": f.severity.text if f.problem else "ok",
                "message": f.problem or f.detail,
            }
            for f in resource.findings
        }
        entry["openssl"] = list(verdict.complaints)
        entry["crls"] = [
            {
                "issuer": status.crl.issuer,
                "source": safe(status.crl.source),
                "next_update": _time(status.crl.next_update) if status.crl.next_update else None,
                "days_left": None if status.days_left is None else _floor(status.days_left, 4),
                "problem": status.problem,
                "in_use": status.in_use,
                "note": status.note,
            }
            for status in verdict.crls
        ]
        client = resource.policy.client_cert
        if client is not None:
            entry["client_certificate"] = {
                "subject": client.subject,
                "not_after": _time(client.not_after),
                "days_left": _floor(client.days_left(now), 4),
            }
        binding = verdict.channel_binding
        if binding is not None:
            entry["channel_binding"] = {
                "digest": binding.digest,
                "error": binding.error,
                "signed_with": binding.signed_with,
                "decided_by": binding.decided_by,
            }
        entry["chain"] = [
            {
                "subject": cert.subject,
                "issuer": cert.issuer,
                "serial": cert.serial,
                "not_before": _time(cert.not_before),
                "not_after": _time(cert.not_after),
                "days_left": _floor(cert.days_left(now), 4),
                "dns_names": list(cert.dns_names),
                "ip_addresses": list(cert.ip_addresses),
                "sha256": cert.sha256,
                "used_by_clients": index in verdict.relevant,
            }
            for index, cert in enumerate(verdict.chain)
        ]
    return entry


def _login(answer: LoginAnswer) -> dict[str, Any]:
    """``--check-auth``: what the server asked for, in fixed words and codes only."""
    from .posture import known_mechanisms
    from .protocol import AuthCode, StartupReplyKind

    reply = answer.reply
    request = None
    mechanisms: tuple[str, ...] = ()
    others = 0
    if reply is not None and reply.kind is StartupReplyKind.AUTHENTICATION:
        code = reply.auth_code or 0
        known = {c.value: c.name.lower() for c in AuthCode}
        request = known.get(code, f"code {code}")
        mechanisms, others = known_mechanisms(reply)
    return {
        "user": answer.login.user,
        "database": answer.login.database,
        "request": request,
        "mechanisms": list(mechanisms),
        "other_mechanisms": others,
        "sqlstate": reply.sqlstate if reply is not None else None,
        "session_sqlstate": answer.session_sqlstate,
        "failure": answer.failure,
    }
