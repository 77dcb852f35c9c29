"""How to check: the settings of a run (or of a connection string, or of an
exporter's module), and what libpq would demand of one target.

:class:`Settings` is built at the edge from option values
(:mod:`check_pg_tls.settings`) and read by the one-target function, which
derives each target's :class:`Policy` from it. Nothing here reads a file or
the network: what the settings name is loaded before a record is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..record import Record
from .state import State

if TYPE_CHECKING:
    from cryptography import x509

    from ..certs import CertFacts
    from ..crls import CrlFacts
    from ..libpq_openssl import LibpqStore
    from ..openssl_client import ClientContexts
    from ..thresholds import Range, Threshold
    from .records import KeyFile, Login

__all__ = [
    "DaneSettings",
    "LoginRules",
    "PlaintextCheck",
    "Policy",
    "PostureLimits",
    "RevocationCheck",
    "Settings",
    "TargetDefaults",
    "TcpSettings",
    "Thresholds",
    "TlsFiles",
    "TrustStore",
]


class LoginRules(Record):
    """A connection string's demands on the login, which libpq enforces whatever
    the server: its channel_binding and require_auth."""

    #: ``disable``, ``prefer`` (libpq's default) or ``require``.
    channel_binding: str = "prefer"
    #: libpq's require_auth as written (``scram-sha-256,md5``, ``!password``);
    #: None: any method.
    require_auth: str | None = None


class Policy(Record):
    """What the client would demand of one target, in libpq's terms."""

    sslmode: str
    #: The name checked under verify-full (libpq's ``host``).
    servername: str
    #: libpq's ``sslrootcert`` when roots are loaded (a file or ``system``);
    #: None when nothing is verified.
    sslrootcert: str | None = None
    #: Oldest acceptable protocol (libpq's default ssl_min_protocol_version).
    min_tls_version: str = "TLSv1.2"
    min_rsa_bits: int = 2048
    min_ec_bits: int = 256
    #: State of a SHA-1 or MD5 signature in the chain.
    weak_signature: State = State.CRITICAL
    #: ``--cert-file``: its path and the leaf certificate in it.
    cert_file: tuple[str, x509.Certificate] | None = None
    #: ``--key-file``: what was learnt about it.
    key_file: KeyFile | None = None
    #: Every CRL to judge: those OpenSSL checks against (``--sslcrl``,
    #: ``--sslcrldir``), and those given only for their freshness.
    crls: tuple[CrlFacts, ...] = ()
    #: Whether OpenSSL checks revocation against the loaded CRLs.
    checks_crls: bool = False
    #: Certificates that may have signed a CRL besides the presented chain
    #: (the root certificate file's).
    crl_issuers: tuple[CertFacts, ...] = ()
    #: Why CRLs given on the command line do not count, as for libpq.
    crls_ignored: str | None = None
    #: ``--sslcert``: the client certificate presented when asked.
    client_cert: CertFacts | None = None
    #: ``--sslkey``: its path, mode and whether root owns it (libpq's rule).
    client_key_mode: tuple[str, int, bool] | None = None
    #: A connection string's sslmode that lets a client run without TLS
    #: (disable, allow, prefer); the check judges the TLS offered as require.
    client_sslmode: str | None = None
    #: State of a certificate SCRAM channel binding cannot use, when no
    #: login showed whether the server offers it.
    channel_binding: State = State.WARNING
    #: State of a login the server lets in without a password
    #: (``--check-auth``).
    passwordless: State = State.WARNING
    #: libpq's own store, in the system's libcrypto: the second opinion on
    #: every chain the verdict's OpenSSL accepts (None: nothing is verified).
    libpq: LibpqStore | None = None
    #: A connection string's channel_binding and require_auth.
    login_rules: LoginRules = LoginRules()

    @property
    def verifies_chain(self) -> bool:
        # libpq: "if a root CA file exists, the behavior of sslmode=require
        # will be the same as that of verify-ca". Roots given with require
        # therefore mean verify-ca, as they do to psql.
        return self.sslmode != "require" or self.sslrootcert is not None

    @property
    def verifies_name(self) -> bool:
        return self.sslmode == "verify-full"


class DaneSettings(Record):
    """``--dane`` and its companions."""

    #: ``--dns-server``: (address, port); None for the system's resolvers.
    server: tuple[str, int] | None = None
    #: State when DNSSEC proves there are no TLSA records.
    missing_state: State = State.WARNING
    #: State when the records are not DNSSEC-validated (AD=0).
    insecure_state: State = State.WARNING
    #: ``--cert-file``: its path and every certificate in it, leaf first.
    renewed: tuple[str, tuple[x509.Certificate, ...]] | None = None


class PlaintextCheck(Record):
    """``--check-plaintext``: whom to ask about, and the state of a yes."""

    user: str
    database: str
    state: State = State.WARNING


class RevocationCheck(Record):
    """``--check-revocation``: the state of "cannot tell"."""

    unknown_state: State = State.WARNING


class Thresholds(Record):
    """``-w``/``-c`` (also for the client certificate) and ``--crl-warning``/``--crl-critical``."""

    warning: Threshold
    critical: Threshold
    #: Days before a CRL's nextUpdate: ``N:``.
    crl_warning: Range
    crl_critical: Range


class PostureLimits(Record):
    """The limits and states of the posture checks."""

    min_tls_version: str = "TLSv1.2"
    min_rsa_bits: int = 2048
    min_ec_bits: int = 256
    weak_signature: State = State.CRITICAL
    channel_binding: State = State.WARNING
    passwordless: State = State.WARNING


class TlsFiles(Record):
    """The TLS files as the options (or a connection string) name them, as libpq's keywords."""

    sslrootcert: str = "system"
    sslcrl: str | None = None
    sslcrldir: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    #: ``--audit-crl``: CRL files judged for their own sake.
    audit_crl: tuple[str, ...] = ()
    #: Whether ``sslrootcert`` was given (an option, a connection string), or is
    #: the options' default ``system``, which ``require`` reads as no roots.
    sslrootcert_given: bool = True


class TrustStore(Record):
    """What the TLS files load: OpenSSL's contexts, and the facts the verdict judges."""

    contexts: ClientContexts
    #: Every CRL to judge (see :attr:`Policy.crls`).
    crls: tuple[CrlFacts, ...] = ()
    checks_crls: bool = False
    crl_issuers: tuple[CertFacts, ...] = ()
    crls_ignored: str | None = None
    client_cert: CertFacts | None = None
    client_key_mode: tuple[str, int, bool] | None = None
    #: libpq's own store (see :attr:`Policy.libpq`).
    libpq: LibpqStore | None = None


class TcpSettings(Record):
    """A connection string's TCP keywords: what libpq asks of the kernel for its socket,
    before it connects. None: not given (the kernel's default)."""

    #: libpq's ``keepalives``: 0 sets nothing, not even the other four.
    keepalives: int = 1
    keepalives_idle: int | None = None
    keepalives_interval: int | None = None
    keepalives_count: int | None = None
    tcp_user_timeout: int | None = None


class TargetDefaults(Record):
    """How a target spec that leaves them out is completed."""

    port: int = 5432
    servername: str | None = None
    #: 0 for any address family, 4 or 6.
    family: int = 0


class Settings(Record):
    """Everything a check of one target needs to know besides the target.

    A connection string's own keywords make a derived record (its sslmode,
    files and negotiation, with the files loaded for it); everything else is
    the run's.
    """

    #: The sslmode judged: verify-full, verify-ca or require.
    sslmode: str
    #: A connection string's sslmode that lets a client run without TLS
    #: (disable, allow, prefer), judged as require.
    client_sslmode: str | None
    #: ``postgres`` (SSLRequest first) or ``direct`` (TLS at once, with ALPN).
    negotiation: str
    files: TlsFiles
    trust: TrustStore
    thresholds: Thresholds
    posture: PostureLimits
    #: State of a server that cannot be reached or does not answer in time.
    unreachable: State = State.CRITICAL
    #: ``--cert-file``: its path and the leaf certificate in it.
    cert_file: tuple[str, x509.Certificate] | None = None
    #: ``--key-file``: what was learnt about it.
    key_file: KeyFile | None = None
    plaintext: PlaintextCheck | None = None
    #: ``--check-auth``: the StartupMessage sent after the handshake.
    login: Login | None = None
    revocation: RevocationCheck | None = None
    dane: DaneSettings | None = None
    #: ``-t``: seconds a check may take.
    timeout: float = 10.0
    targets: TargetDefaults = TargetDefaults()
    #: A connection string's TCP keywords; None when it gives none.
    tcp: TcpSettings | None = None
    #: A connection string's channel_binding and require_auth.
    login_rules: LoginRules = LoginRules()

    @property
    def keywords(self) -> dict[str, str | None]:
        """The libpq keywords a connection string may set, with these settings' values."""
        files = self.files
        return {
            "sslmode": self.sslmode,
            "sslrootcert": files.sslrootcert if files.sslrootcert_given else None,
            "sslcrl": files.sslcrl,
            "sslcrldir": files.sslcrldir,
            "sslcert": files.sslcert,
            "sslkey": files.sslkey,
            "sslnegotiation": self.negotiation,
        }

    def policy(self, servername: str) -> Policy:
        """What libpq would demand of a server checked as ``servername``."""
        trust, posture = self.trust, self.posture
        return Policy(
            sslmode=self.sslmode,
            servername=servername,
            sslrootcert=trust.contexts.sslrootcert,
            min_tls_version=posture.min_tls_version,
            min_rsa_bits=posture.min_rsa_bits,
            min_ec_bits=posture.min_ec_bits,
            weak_signature=posture.weak_signature,
            cert_file=self.cert_file,
            key_file=self.key_file,
            crls=trust.crls,
            checks_crls=trust.checks_crls,
            crl_issuers=trust.crl_issuers,
            crls_ignored=trust.crls_ignored,
            client_cert=trust.client_cert,
            client_key_mode=trust.client_key_mode,
            client_sslmode=self.client_sslmode,
            channel_binding=posture.channel_binding,
            passwordless=posture.passwordless,
            libpq=trust.libpq,
            login_rules=self.login_rules,
        )
