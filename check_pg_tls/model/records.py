"""What to check and what was seen: targets, handshakes, answers, files.

The network modules (probe, tlsa_lookup) produce these, the judgement
modules read them; neither needs the other to do so.
"""

from __future__ import annotations

from ..protocol import StartupReply
from ..record import Record

__all__ = [
    "TLSA_USAGES",
    "TLS_VERSIONS",
    "CertificateHash",
    "KeyFile",
    "Login",
    "LoginAnswer",
    "Observation",
    "PlaintextAnswer",
    "Target",
    "TlsaAnswer",
    "TlsaRecord",
    "VerifyError",
]


#: Protocol versions as OpenSSL (and libpq's ssl_min_protocol_version) name
#: them, oldest first.
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


class Target(Record):
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
    #: for this target (sslmode, sslrootcert, sslnegotiation, ...), and its
    #: TCP and login settings (keepalives_idle, channel_binding, ...).
    settings: tuple[tuple[str, str], ...] = ()
    #: How outputs name this target when its spec form is another check's
    #: too (two connection strings for one server): the form and its settings.
    display: str | None = None

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


class VerifyError(Record):
    """One complaint of OpenSSL's certificate verification, as its callback saw it."""

    #: 0 for the leaf, 1 for its issuer, and so on up the chain OpenSSL built.
    depth: int
    #: OpenSSL's X509_V_ERR_* number.
    code: int
    #: OpenSSL's own words for ``code``.
    message: str
    #: The certificate the complaint is about, as DER.
    certificate: bytes


class Login(Record):
    """``--check-auth``: whom to name in a StartupMessage sent over TLS."""

    user: str
    database: str


class LoginAnswer(Record):
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


class Observation(Record):
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


class PlaintextAnswer(Record):
    """``--check-plaintext``: the answer to an unencrypted StartupMessage, or why there was none."""

    user: str
    database: str
    reply: StartupReply | None
    failure: str | None = None


class KeyFile(Record):
    """What the check learnt about a private key file (never the key itself)."""

    path: str
    mode: int
    #: DER SubjectPublicKeyInfo of the key's public half; None if unreadable.
    public_key: bytes | None
    #: Why the key could not be read, if it could not.
    unreadable: str | None = None
    #: OpenSSL's type of the key (``EVP_PKEY_id``): RSA and RSA-PSS keys
    #: have the same public half, but PostgreSQL takes a pair of one type only.
    openssl_type: int | None = None


class CertificateHash(Record):
    """What libpq makes of a server certificate for SCRAM channel binding."""

    #: OpenSSL's name of the digest libpq hashes the certificate with
    #: (``SHA256``), or None when libpq cannot hash it.
    digest: str | None
    #: libpq's error message when it cannot ("could not find digest for NID UNDEF").
    error: str | None = None
    #: OpenSSL's name of the key type that made the certificate's signature
    #: (``ED25519``): the issuer's key, not the server's.
    signed_with: str | None = None
    #: Who decided: ``openssl`` (libcrypto itself), or why cryptography's
    #: reading of the signature algorithm stood in.
    decided_by: str = "openssl"


#: TLSA certificate usages (RFC 6698, RFC 7218's names).
TLSA_USAGES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}
# Matching type -> length of the association data (None: the full object).
_TLSA_LENGTHS = {0: None, 1: 32, 2: 64}


class TlsaRecord(Record):
    """One TLSA record: certificate usage, selector, matching type, association data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def kind(self) -> str:
        """``3 1 1``: what an admin calls a record."""
        return f"{self.usage} {self.selector} {self.mtype}"

    def __str__(self) -> str:
        """Presentation form, as in a zone file: ``3 1 1 a8aac32c...``."""
        return f"{self.kind} {self.data.hex()}"

    @property
    def usable(self) -> bool:
        # RFC 6698 section 4.1 / RFC 7671 section 4: records with unknown
        # parameters, or a digest of the wrong length, are unusable, and ignored.
        if (
            self.usage not in TLSA_USAGES
            or self.selector not in (0, 1)
            or self.mtype not in _TLSA_LENGTHS
        ):
            return False
        length = _TLSA_LENGTHS[self.mtype]
        return bool(self.data) and (length is None or len(self.data) == length)


class TlsaAnswer(Record):
    """What the resolver said about ``owner``'s TLSA records, or why it said nothing."""

    owner: str
    #: ``address:port`` of the resolver that answered (or was asked last).
    resolver: str
    #: Where that resolver came from: ``--dns-server`` or the system's configuration.
    source: str
    #: ``NOERROR``, ``NXDOMAIN``, ``SERVFAIL``, ...; None when there was no answer.
    rcode: str | None = None
    #: The AD bit: the resolver validated the answer with DNSSEC.
    authenticated: bool = False
    records: tuple[TlsaRecord, ...] = ()
    #: Extended DNS Errors (RFC 8914) the resolver attached, as text.
    extended_errors: tuple[str, ...] = ()
    #: Why there is no answer (timeout, network error), when there is none.
    failure: str | None = None
