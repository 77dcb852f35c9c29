"""How to check: what libpq would demand of a target, and the checks asked for besides.

Built at the edge from option values (:mod:`..settings`), read by the
one-target function and the judgement; nothing here reads a file or the
network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .state import State

if TYPE_CHECKING:
    from cryptography import x509

    from ..certs import CertFacts
    from ..crls import CrlFacts
    from .records import KeyFile

__all__ = ["DaneSettings", "Policy"]


class Policy(NamedTuple):
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

    @property
    def verifies_chain(self) -> bool:
        # libpq: "if a root CA file exists, the behavior of sslmode=require
        # will be the same as that of verify-ca". Roots given with require
        # therefore mean verify-ca, as they do to psql.
        return self.sslmode != "require" or self.sslrootcert is not None

    @property
    def verifies_name(self) -> bool:
        return self.sslmode == "verify-full"


class DaneSettings(NamedTuple):
    """``--dane`` and its companions."""

    #: ``--dns-server``: (address, port); None for the system's resolvers.
    server: tuple[str, int] | None = None
    #: State when DNSSEC proves there are no TLSA records.
    missing_state: State = State.WARNING
    #: State when the records are not DNSSEC-validated (AD=0).
    insecure_state: State = State.WARNING
    #: ``--cert-file``: its path and every certificate in it, leaf first.
    renewed: tuple[str, tuple[x509.Certificate, ...]] | None = None
