"""States, check names and findings: the vocabulary of every judgement.

A state is one type from option parsing to the exit code: :class:`State`
carries the plugin API's numbers, and only the nagiosplugin adapter turns it
into nagiosplugin's objects. Check names are :class:`Check` members, which
are their own spelling in JSON keys, perfdata labels and metric labels.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from ..record import Record

__all__ = ["Check", "Finding", "State", "worst"]


class State(enum.IntEnum):
    """A monitoring state, numbered as the plugin API numbers exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @classmethod
    def from_name(cls, name: str) -> State:
        """``ok``, ``warning``, ``critical`` or ``unknown`` (as options spell them).

        Raises:
            ValueError: no such state.
        """
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"no state named {name!r}") from None

    @property
    def label(self) -> str:
        """``OK``, ``WARNING``, ...: as the status line and JSON's ``state`` write it."""
        return self.name

    @property
    def text(self) -> str:
        """``ok``, ``warning``, ...: as options, counts and JSON's ``severity`` write it."""
        return self.name.lower()

    @property
    def rank(self) -> int:
        """How much a state weighs: CRITICAL, WARNING, then UNKNOWN, then OK.

        UNKNOWN is a check that could not be made (DANE without an answer, an
        auxiliary check that failed, a server that could not be checked): it
        must not hide a problem that was found, such as an expired
        certificate. The monitoring plugins rank states so when they combine
        several checks.
        """
        return _RANK[self]


_RANK = {State.OK: 0, State.UNKNOWN: 1, State.WARNING: 2, State.CRITICAL: 3}


def worst(states: Iterable[State], default: State = State.UNKNOWN) -> State:
    """The weightiest of ``states`` (see :attr:`State.rank`); ``default`` when there are none."""
    return max(states, key=_RANK.__getitem__, default=default)


class Check(str, enum.Enum):
    """The name of a check: a finding's, or one of the other results of a target.

    A member is a ``str`` whose value is the name as every output spells it.
    """

    # The chain, the name and the dates, as libpq judges them.
    TRUST = "trust"
    NAME = "name"
    VALIDITY = "validity"
    HANDSHAKE = "handshake"
    SSLMODE = "sslmode"
    # What only a PostgreSQL-aware checker sees (see posture).
    INTERMEDIATES = "intermediates"
    TLS_VERSION = "tls_version"
    KEY_STRENGTH = "key_strength"
    SIGNATURE = "signature"
    RELOAD = "reload"
    KEY_PERMISSIONS = "key_permissions"
    KEY_MATCH = "key_match"
    CLIENT_CERTIFICATE = "client_certificate"
    CLIENT_KEY_PERMISSIONS = "client_key_permissions"
    CHANNEL_BINDING = "channel_binding"
    AUTH = "auth"
    PLAINTEXT = "plaintext"
    # Revocation and DANE.
    CRL = "crl"
    REVOCATION = "revocation"
    DANE = "dane"
    DANE_RESOLVER = "dane_resolver"
    DANE_RENEWAL = "dane_renewal"
    # The other results of a target: no finding, a number or a failure.
    #: Days left against -w/-c (``expiry`` as a metric label).
    DAYS_LEFT = "days_left"
    CLIENT_DAYS_LEFT = "client_days_left"
    CRL_DAYS_LEFT = "crl_days_left"
    #: Why no certificate was obtained.
    CONNECTION = "connection"
    #: Seconds to the end of the handshake, or to the failure.
    TIME = "time"

    def __str__(self) -> str:
        return self.value


class Finding(Record):
    """One judgement. ``problem`` is None when all is well."""

    check: Check
    problem: str | None
    #: What was judged, for the verbose output.
    detail: str
    #: The state when there is a problem; required, so that no finding is
    #: CRITICAL by omission.
    severity: State

    @classmethod
    def ok(cls, check: Check, detail: str) -> Finding:
        """A finding without a problem."""
        return cls(check, None, detail, State.OK)

    @property
    def state(self) -> State:
        return State.OK if self.problem is None else self.severity
