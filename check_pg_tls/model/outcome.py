"""One checked target as a value: what every output reads.

:func:`check_pg_tls.check.check` returns an :class:`Outcome`; the status
line, the perfdata, ``-v``, TAP, JSON, the metrics and pg_tls_exporter read
it and nothing else. It keeps what they print, as text, numbers and dates:
no certificate objects, no DER, no sockets, so that thousands of outcomes
stay small.
"""

from __future__ import annotations

import datetime as dt
import re

from ..record import Record
from .records import CertificateHash, LoginAnswer, Target
from .state import Check, Finding, State

__all__ = [
    "CertSummary",
    "CheckResult",
    "CheckedAs",
    "ClientCertSummary",
    "CrlSummary",
    "Outcome",
    "Perfdata",
    "Session",
]

_PLAIN_LABEL = re.compile(r"^\w+$")


class Perfdata(Record):
    """One perfdata item, every number already written as the plugin API reads it."""

    name: str
    value: str
    uom: str = ""
    warn: str = ""
    crit: str = ""
    min: str = ""
    max: str = ""

    def text(self, prefix: str = "") -> str:
        """``label=value[uom];warn;crit;min;max``, empty fields at the end left out."""
        label = f"{prefix}{self.name}"
        if not _PLAIN_LABEL.match(label):
            label = f"'{label}'"
        fields = [f"{label}={self.value}{self.uom}", self.warn, self.crit, self.min, self.max]
        while fields[-1] == "":
            fields.pop()
        return ";".join(fields)


class CheckResult(Record):
    """One judged item of a target: a finding, the days left, the connection, the time."""

    check: Check
    state: State
    #: What the status line says of it when it is a problem (the finding's
    #: problem, or what was judged); None: nothing to say.
    text: str | None
    perfdata: Perfdata | None = None


class CheckedAs(Record):
    """How the target was checked: its own settings, after a connection string's."""

    #: The sslmode judged (verify-full, verify-ca, require).
    sslmode: str
    #: The servername checked under verify-full (libpq's host).
    servername: str
    verifies_chain: bool = False
    verifies_name: bool = False
    #: A connection string's sslmode that lets a client run without TLS.
    client_sslmode: str | None = None
    #: The roots loaded: a file, ``system``, or None.
    sslrootcert: str | None = None
    #: ``postgres`` or ``direct``; None for a target never tried.
    negotiation: str | None = None
    #: The OpenSSL that made the handshake and decided.
    openssl_version: str | None = None


class Session(Record):
    """What the handshake showed."""

    address: str
    tls_version: str
    cipher: str
    alpn: str | None
    connect_seconds: float
    handshake_seconds: float
    #: Why a handshake as libpq makes it failed, when only a legacy one succeeded.
    legacy_reason: str | None = None
    #: ``--check-auth``: what the server asked of the user.
    login: LoginAnswer | None = None


class CertSummary(Record):
    """One presented certificate, as the outputs show it (text made safe to print)."""

    subject: str
    issuer: str
    #: Hexadecimal, as blackbox_exporter writes it.
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    #: The names a client could match, in the order a user expects.
    names: tuple[str, ...]
    sha256: str
    #: Whether clients use it (part of the verified path, or not verified).
    used_by_clients: bool

    @property
    def lifetime_days(self) -> float:
        return (self.not_after - self.not_before).total_seconds() / 86400

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


class CrlSummary(Record):
    """One CRL judged."""

    issuer: str
    #: Where it came from, made safe to print.
    source: str
    next_update: dt.datetime | None
    days_left: float | None
    problem: str | None
    in_use: bool
    note: str | None


class ClientCertSummary(Record):
    """``--sslcert``: the client certificate presented when asked."""

    subject: str
    not_after: dt.datetime
    #: At the time of the check.
    days_left: float


class Outcome(Record):
    """Everything the outputs need about one checked target."""

    target: Target
    #: How it was checked; for a target never checked, a stand-in (sslmode
    #: require, nothing verified), as the outputs have always shown one.
    checked_as: CheckedAs
    #: The worst state of the results (see :attr:`State.rank`).
    state: State
    #: Every result in order: the time, then the connection's failure, or the
    #: days left, every finding, the client certificate's and the CRLs' days.
    results: tuple[CheckResult, ...]
    #: The findings among them, as judged (for JSON's ``checks`` and ``-v``).
    findings: tuple[Finding, ...] = ()
    #: Why no certificate was judged, when none was.
    error: str | None = None
    session: Session | None = None
    #: The presented chain, leaf first (empty when none was judged).
    chain: tuple[CertSummary, ...] = ()
    #: Days left of the certificate clients use that expires first, and its index.
    days_left: float | None = None
    limiting: int = 0
    #: When the chain clients use expires first, the verified path's root and
    #: the intermediates it took from the root file included.
    chain_expiry: dt.datetime | None = None
    #: OpenSSL's complaints, worded.
    complaints: tuple[str, ...] = ()
    crls: tuple[CrlSummary, ...] = ()
    client_certificate: ClientCertSummary | None = None
    channel_binding: CertificateHash | None = None
    #: Seconds to the end of the handshake, or to the failure.
    seconds: float = 0.0
    checked_at: dt.datetime | None = None
    #: The texts of the results that are not OK, worst first.
    problems: tuple[str, ...] = ()
    #: ``certificate expires in 84 days (2027-02-21)``, when a chain was judged.
    days_text: str | None = None
    #: The target's line: every problem and the days left, or what was verified.
    summary: str = ""

    @property
    def limiting_cert(self) -> CertSummary:
        return self.chain[self.limiting]

    @property
    def leaf(self) -> CertSummary:
        return self.chain[0]
