"""The outputs read from outcomes, besides the status line and the metrics:
the Nagios long output (``-v`` lines, a fleet's lines and perfdata), TAP,
JSON and cron's quiet mode.

Each takes the targets' outcomes and returns text; a run that fails as a
whole (a bad option, no result within -t) is printed in the same format by
:func:`failed_run`, so that whoever reads the format is never handed a
Nagios line instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .model import LoginAnswer, Outcome, State, Target
from .targets import Unparsed
from .text import days_down

__all__ = [
    "PERFDATA_TARGETS",
    "details",
    "failed_run",
    "fleet_lines",
    "fleet_perfdata",
    "json_document",
    "quiet",
    "quiet_line",
    "tap",
]


def fleet_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """The long-output lines of the Nagios fleet format: one per target."""
    return [f"{o.state.label} {o.target}: {o.summary}" for o in outcomes]


#: Fleet runs up to this size write every server's perfdata; larger ones only
#: the aggregates, so that the status line stays within what monitoring
#: systems pass on (and a grapher is not handed thousands of series per run).
PERFDATA_TARGETS = 20


def fleet_perfdata(outcomes: Sequence[Outcome], per_target: Sequence[str]) -> list[str]:
    """The fleet's perfdata: every server's up to PERFDATA_TARGETS, then the aggregates.

    The aggregates are always there: the fewest days left over all servers,
    the slowest probe, and the number of servers in each state.
    """
    from .perfdata import number

    days = [o.days_left for o in outcomes if o.days_left is not None]
    times = [o.seconds for o in outcomes]
    aggregates = []
    if days:
        aggregates.append(f"min_days_left={number(days_down(min(days), 2))}")
    if times:
        aggregates.append(f"max_time={number(round(max(times), 6))}s;;;0")
    for state in State:
        count = sum(1 for o in outcomes if o.state is state)
        aggregates.append(f"servers_{state.text}={count};;;0")
    kept = list(per_target) if len(outcomes) <= PERFDATA_TARGETS else []
    return [*kept, *aggregates]


def details(outcome: Outcome) -> list[str]:
    """The -v lines: the chain, the names, the TLS session, every finding."""
    session = outcome.session
    if session is None or not outcome.chain:
        return []
    lines: list[str] = []
    now = outcome.checked_at or dt.datetime.now(dt.timezone.utc)
    for index, cert in enumerate(outcome.chain):
        role = "leaf" if index == 0 else f"chain[{index}]"
        unused = "" if cert.used_by_clients else " (not used by clients)"
        lines.append(
            f"{role}: subject {cert.subject}; issuer {cert.issuer}; "
            f"not after {cert.not_after:%Y-%m-%d %H:%M:%S} UTC "
            # Rounded down, as the status line's whole days are.
            f"({days_down(cert.days_left(now), 1):.1f} days left){unused}"
        )
    lines.append(f"names: {', '.join(outcome.leaf.names) or '(none)'}")
    lines.append(
        f"tls: {session.tls_version} {session.cipher}; "
        f"alpn {session.alpn or 'none'}; address {session.address}; "
        f"connected in {session.connect_seconds * 1000:.1f} ms, "
        f"handshake done in {session.handshake_seconds * 1000:.1f} ms"
    )
    checked = outcome.checked_as
    mode = checked.sslmode
    if mode == "require" and checked.verifies_chain:
        mode = "require (as verify-ca, because a root certificate file is given)"
    lines.append(f"sslmode: {mode}")
    lines += [f"openssl: {complaint}" for complaint in outcome.complaints]
    for finding in outcome.findings:
        text = finding.problem or finding.detail
        # A failed check already names itself ("dane: check failed: ...").
        lines.append(text if text.startswith(f"{finding.check}: ") else f"{finding.check}: {text}")
    lines += [f"crl: {crl.note}" for crl in outcome.crls if crl.note]
    lines.append(
        f"openssl version: {checked.openssl_version} (the verdict's; libpq may use another)"
    )
    return lines


def quiet(outcomes: Sequence[Outcome]) -> str:
    """Cron mode: nothing when all is well, else one line per target that needs a hand."""
    return "".join(quiet_line(outcome) for outcome in outcomes)


def quiet_line(outcome: Outcome) -> str:
    """One target's part of :func:`quiet`: its line, or nothing when it is OK."""
    return "" if outcome.state is State.OK else f"{outcome.target}: {outcome.summary}\n"


def tap(outcomes: Sequence[Outcome]) -> str:
    """TAP version 13: a plan, one test line per target, YAML diagnostics on failures."""
    lines = ["TAP version 13", f"1..{len(outcomes)}"]
    for number, outcome in enumerate(outcomes, 1):
        # '#' starts a TAP directive: keep it out of descriptions.
        text = outcome.summary.replace("#", "%23")
        if outcome.state is State.OK:
            lines.append(f"ok {number} - {outcome.target} {text}")
            continue
        lines.append(f"not ok {number} - {outcome.target} {text}")
        lines += _tap_diagnostics(outcome.state.text, outcome.problems)
        if outcome.days_left is not None:
            lines.append(f"  days_left: {days_down(outcome.days_left, 2):.2f}")
            lines.append(f"  not_after: {outcome.limiting_cert.not_after:%Y-%m-%dT%H:%M:%SZ}")
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


def json_document(outcomes: Sequence[Outcome], state: State) -> str:
    """One JSON document describing every target."""
    import json

    counts = {s.text: 0 for s in State}
    for outcome in outcomes:
        counts[outcome.state.text] += 1
    document = {
        "check_pg_tls": 1,
        "checked_at": _time(dt.datetime.now(dt.timezone.utc)),
        "state": state.label,
        "exit_code": int(state),
        "counts": counts,
        "error": None,
        "targets": [_target(o) for o in outcomes],
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

        counts = {s.text: 0 for s in State}
        counts[state] = len(targets)
        document = {
            "check_pg_tls": 1,
            "checked_at": _time(dt.datetime.now(dt.timezone.utc)),
            "state": state.upper(),
            "exit_code": int(State.from_name(state)),
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


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _blank(target: Target) -> dict[str, Any]:
    """A target's entry before anything is known of it."""
    entry: dict[str, Any] = {
        "target": str(target),
        "host": target.host,
        "port": target.port,
        "servername": target.checked_name,
        "sslmode": _own(target, "sslmode"),
        "negotiation": _own(target, "sslnegotiation"),
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
        entry.update(host=None, port=None, servername=None, sslmode=None, negotiation=None)
    return entry


def _own(target: Target, keyword: str) -> str | None:
    """A connection string's own setting, if it has one."""
    return next((value for key, value in target.settings if key == keyword), None)


def _target(outcome: Outcome) -> dict[str, Any]:
    target, session, checked = outcome.target, outcome.session, outcome.checked_as
    entry = _blank(target)
    unparsed = isinstance(target, Unparsed)
    entry.update(
        sslmode=None if unparsed else checked.sslmode,
        negotiation=None if unparsed else checked.negotiation,
        state=outcome.state.label,
        problems=list(outcome.problems),
        summary=outcome.summary,
        error=outcome.error,
        address=session.address if session else None,
    )
    if session is not None:
        entry["openssl_version"] = checked.openssl_version
        entry["tls"] = {
            "version": session.tls_version,
            "cipher": session.cipher,
            "alpn": session.alpn,
            "connect_ms": round(session.connect_seconds * 1000, 3),
            "handshake_ms": round(session.handshake_seconds * 1000, 3),
            "legacy_handshake": session.legacy_reason,
        }
        if session.login is not None:
            entry["auth"] = _login(session.login)
    if outcome.days_left is None:
        return entry
    now = outcome.checked_at or dt.datetime.now(dt.timezone.utc)
    entry["days_left"] = days_down(outcome.days_left, 4)
    entry["not_after"] = _time(outcome.limiting_cert.not_after)
    entry["expires_first"] = outcome.limiting
    entry["checks"] = {
        f.check: {
            "ok": f.problem is None,
            "severity": f.severity.text if f.problem else "ok",
            "message": f.problem or f.detail,
        }
        for f in outcome.findings
    }
    entry["openssl"] = list(outcome.complaints)
    entry["crls"] = [
        {
            "issuer": crl.issuer,
            "source": crl.source,
            "next_update": _time(crl.next_update) if crl.next_update else None,
            "days_left": None if crl.days_left is None else days_down(crl.days_left, 4),
            "problem": crl.problem,
            "in_use": crl.in_use,
            "note": crl.note,
        }
        for crl in outcome.crls
    ]
    client = outcome.client_certificate
    if client is not None:
        entry["client_certificate"] = {
            "subject": client.subject,
            "not_after": _time(client.not_after),
            "days_left": days_down(client.days_left, 4),
        }
    binding = outcome.channel_binding
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
            "days_left": days_down(cert.days_left(now), 4),
            "dns_names": list(cert.dns_names),
            "ip_addresses": list(cert.ip_addresses),
            "sha256": cert.sha256,
            "used_by_clients": cert.used_by_clients,
        }
        for cert in outcome.chain
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
