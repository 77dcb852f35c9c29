"""The shared records: what to check, and what one probe saw.

Pure data, no I/O: the probe produces these, the judgement modules read
them, and neither needs to import the other to do so.
"""

from __future__ import annotations

from typing import NamedTuple

from ..protocol import StartupReply

__all__ = ["Login", "LoginAnswer", "Observation", "Target", "VerifyError"]


class Target(NamedTuple):
    """Where to connect and which name the certificate must carry."""

    host: str
    port: int = 5432
    #: The name to verify and send as SNI (libpq's ``host`` when ``hostaddr``
    #: is given); ``None`` means ``host``.
    servername: str | None = None
    #: 0 for any address family, 4 or 6 to insist on one.
    family: int = 0
    #: libpq's sslsni: send the name as SNI (never for an IP literal).
    sni: bool = True
    #: libpq keywords from a connection string that override the options
    #: for this target (sslmode, sslrootcert, sslnegotiation, ...).
    settings: tuple[tuple[str, str], ...] = ()
    #: How outputs name this target when its spec form is another check's
    #: too (two connection strings for one server): the form and its settings.
    display: str | None = None

    def setting(self, key: str) -> str | None:
        return dict(self.settings).get(key)

    @property
    def checked_name(self) -> str:
        return self.servername or self.host

    def __str__(self) -> str:
        """The target in spec form: ``host:port``, ``host(servername):port``, ``[v6]:port``."""
        if self.display is not None:
            return self.display
        host = f"[{self.host}]" if ":" in self.host else self.host
        name = f"({self.servername})" if self.servername and self.servername != self.host else ""
        return f"{host}{name}:{self.port}"


class VerifyError(NamedTuple):
    """One complaint of OpenSSL's certificate verification, as its callback saw it."""

    #: 0 for the leaf, 1 for its issuer, and so on up the chain OpenSSL built.
    depth: int
    #: OpenSSL's X509_V_ERR_* number.
    code: int
    #: OpenSSL's own words for ``code``.
    message: str
    #: The certificate the complaint is about, as DER.
    certificate: bytes


class Login(NamedTuple):
    """``--check-auth``: whom to name in a StartupMessage sent over TLS."""

    user: str
    database: str


class LoginAnswer(NamedTuple):
    """What the server answered a StartupMessage sent over TLS.

    Only what it asks for: no password is ever sent, so this never says
    whether a login would succeed.
    """

    login: Login
    #: The first message: an authentication request or an error; None when
    #: there was none (see ``failure``).
    reply: StartupReply | None
    #: Why there is no reply (no answer in time, a closed connection, a TLS
    #: alert, bytes that are not PostgreSQL's), or, after
    #: AuthenticationOk, why the session did not start.
    failure: str | None = None
    #: After AuthenticationOk: the SQLSTATE of an error that ended the
    #: session before it was ready (a role or database that does not exist);
    #: None when the session became ready.
    session_sqlstate: str | None = None


class Observation(NamedTuple):
    """What one probe saw. DER bytes only: parsing is the caller's business."""

    #: The address actually connected to (one of those ``host`` resolved to).
    address: str
    #: Every certificate the server presented, leaf first, as sent.
    chain: tuple[bytes, ...]
    tls_version: str
    cipher: str
    alpn: str | None
    #: Seconds from start to connected, and from start to handshake done.
    connect_seconds: float
    handshake_seconds: float
    #: What OpenSSL's verification complained about, in the order it did;
    #: empty when the chain is trusted (or was not verified).
    verify_errors: tuple[VerifyError, ...] = ()
    #: The chain OpenSSL built, leaf first: the whole path to the trusted
    #: root when verification succeeded, as far as it got otherwise.
    verified_chain: tuple[bytes, ...] = ()
    #: Why a handshake with libpq's settings (TLS 1.2 or newer, OpenSSL's
    #: default security level) failed, when only a legacy one succeeded.
    legacy_reason: str | None = None
    #: Whether the server asked for a client certificate, whether one was
    #: sent, and the server's refusal (OpenSSL's words for its alert) if it
    #: refused the connection over it: in the handshake (TLS 1.2) or on the
    #: first read after it (TLS 1.3).
    certificate_requested: bool = False
    client_certificate_sent: bool = False
    client_refusal: str | None = None
    #: With ``--check-auth``: the server's answer to a StartupMessage sent
    #: over this connection after the handshake.
    login: LoginAnswer | None = None
