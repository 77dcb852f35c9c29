"""OpenSSL client contexts, configured the way libpq configures its own.

libpq does not validate certificate chains: it hands the trusted roots to
OpenSSL, turns on peer verification, and lets OpenSSL decide. So does this
module, with one difference: the verify callback records every complaint
and lets the handshake finish. A client that aborted would send an alert
(an error line in the server's log) and would never learn how many days a
bad certificate has left.

Built once per run and shared by every probe: loading a trust store is the
costly part, a handshake only reads it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from OpenSSL import SSL, crypto

from .errors import LocalFileError

__all__ = [
    "ALPN_PROTOCOL",
    "ClientContexts",
    "HandshakeLog",
    "client_contexts",
    "openssl_reason",
    "openssl_version",
    "verify_error_message",
]

#: Offered like libpq 17+ does; older servers ignore it.
ALPN_PROTOCOL = b"postgresql"

# What clients refuse today: libpq's default minimum protocol (its
# ssl_min_protocol_version), and OpenSSL's default security level 2 as
# today's distributions build it (112-bit keys and signatures at least).
# Stated explicitly: the OpenSSL this module is linked against may have been
# built with another default, and the verdict must not depend on that.
_CURRENT_CIPHERS = b"DEFAULT:@SECLEVEL=2"
# Everything an old server may still speak, so that it is seen and named.
_LEGACY_CIPHERS = b"ALL:@SECLEVEL=0"


class ClientContexts:
    """The two handshakes a probe may try, and whether they verify."""

    def __init__(
        self,
        sslrootcert: str | None,
        sslcrl: str | None = None,
        sslcrldir: str | None = None,
        sslcert: str | None = None,
        sslkey: str | None = None,
    ) -> None:
        self.sslrootcert = sslrootcert
        #: The client certificate (and key) presented when a server asks.
        self.sslcert = sslcert
        self.sslkey = sslkey or sslcert
        # libpq loads CRLs only together with a root certificate file, not
        # with sslrootcert=system (nor without verification).
        loads_crls = sslrootcert not in (None, "system") and bool(sslcrl or sslcrldir)
        self.sslcrl = sslcrl if loads_crls else None
        self.sslcrldir = sslcrldir if loads_crls else None
        #: libpq's settings: TLS 1.2 or newer at the default security level.
        self.current = self._context(_CURRENT_CIPHERS, SSL.TLS1_2_VERSION)
        self._legacy: SSL.Context | None = None

    def _context(self, ciphers: bytes, minimum: int) -> SSL.Context:
        context = _context(ciphers, minimum, self.sslrootcert)
        if self.sslcrl or self.sslcrldir:
            _load_crls(context, self.sslcrl, self.sslcrldir)
        if self.sslcert is not None and self.sslkey is not None:
            _load_client_certificate(context, self.sslcert, self.sslkey)
        return context

    @property
    def checks_crls(self) -> bool:
        """Whether CRLs are loaded and every CA in the chain needs a current one."""
        return bool(self.sslcrl or self.sslcrldir)

    @property
    def verifies(self) -> bool:
        """Whether trusted roots were loaded and the chain is verified."""
        return self.sslrootcert is not None

    @property
    def legacy(self) -> SSL.Context:
        """Any protocol version and cipher at security level 0.

        Only for a server with which ``current`` cannot complete a handshake,
        to name what it speaks; built on first use (two threads that race
        here merely build it twice).
        """
        if self._legacy is None:
            self._legacy = self._context(_LEGACY_CIPHERS, SSL.TLS1_VERSION)
        return self._legacy


class HandshakeLog:
    """What the callbacks saw during one handshake (a connection's app data)."""

    def __init__(self) -> None:
        #: (depth, X509_V_ERR code, certificate) of each complaint, in order.
        self.complaints: list[tuple[int, int, crypto.X509]] = []
        #: Whether the server sent a CertificateRequest.
        self.certificate_requested = False


def _record(connection: SSL.Connection, cert: crypto.X509, code: int, depth: int, ok: int) -> bool:
    # OpenSSL resets the verification result when the callback says yes, so
    # complaints are kept here, as they come (one certificate may raise
    # several). The body cannot raise: an exception would abort the
    # handshake and surface from do_handshake().
    if not ok:
        connection.get_app_data().complaints.append((depth, code, cert))
    return True


def _watch(connection: SSL.Connection, where: int, ret: int) -> None:
    # libpq notices a CertificateRequest through a certificate callback;
    # the state machine's own name for that step tells the same.
    if where & SSL.SSL_CB_LOOP and b"certificate request" in connection.get_state_string():
        connection.get_app_data().certificate_requested = True


def _context(ciphers: bytes, minimum: int, sslrootcert: str | None) -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(minimum)
    context.set_cipher_list(ciphers)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
    context.set_alpn_protos([ALPN_PROTOCOL])
    context.set_verify(SSL.VERIFY_PEER, _record)
    context.set_info_callback(_watch)
    if sslrootcert is not None:
        _load_roots(context, sslrootcert)
    return context


def _load_roots(context: SSL.Context, sslrootcert: str) -> None:
    if sslrootcert == "system":
        # libpq 16+ calls SSL_CTX_set_default_verify_paths for "system";
        # pyOpenSSL's version also finds the distribution's store when the
        # OpenSSL inside the wheel was built for other paths.
        context.set_default_verify_paths()
        return
    # The file goes through OpenSSL's own loader, as libpq's does, so every
    # form OpenSSL reads works (PEM, TRUSTED CERTIFICATE, text around the
    # PEM blocks, CRLs beside the certificates). Reading it first only makes
    # a missing or unreadable file say so in plain words.
    if os.path.isdir(sslrootcert):
        raise LocalFileError(f"cannot read root certificate file {sslrootcert}: it is a directory")
    try:
        with open(sslrootcert, "rb"):
            pass
    except OSError as exc:
        raise LocalFileError(
            f"cannot read root certificate file {sslrootcert}: {exc.strerror}"
        ) from None
    try:
        context.load_verify_locations(sslrootcert)
    except SSL.Error as exc:
        raise LocalFileError(
            f"OpenSSL cannot use root certificate file {sslrootcert} "
            f"({openssl_reason(exc) or 'no certificate found'}); libpq cannot either"
        ) from None


def _load_crls(context: SSL.Context, sslcrl: str | None, sslcrldir: str | None) -> None:
    # libpq: X509_STORE_load_locations(store, sslcrl, sslcrldir), then
    # CRL_CHECK | CRL_CHECK_ALL: every certificate of the chain needs a
    # current CRL from its issuer. libpq silently ignores a CRL file it
    # cannot load, and then checks no revocation at all; an admin who names
    # one to this check wants to hear about that instead.
    for path, kind in ((sslcrl, "file"), (sslcrldir, "directory")):
        if path is not None and not os.access(path, os.R_OK):
            raise LocalFileError(f"cannot read CRL {kind} {path}")
    store = context.get_cert_store()
    assert store is not None
    try:
        store.load_locations(sslcrl, sslcrldir)
    except crypto.Error:
        raise LocalFileError(
            f"OpenSSL cannot load CRL file {sslcrl} (PEM expected); libpq would silently "
            "ignore it and check no revocation at all"
        ) from None
    store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)


def _no_passphrase(max_length: int, prompt_twice: bool, userdata: object) -> bytes:
    # Without a callback OpenSSL would ask on the terminal; a check never
    # types passwords.
    return b""


def _load_client_certificate(context: SSL.Context, sslcert: str, sslkey: str) -> None:
    # As libpq: the certificate file may hold the chain to send; the key must match.
    for path, what in ((sslcert, "client certificate file"), (sslkey, "client key file")):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise LocalFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    context.set_passwd_cb(_no_passphrase)
    try:
        context.use_certificate_chain_file(sslcert)
    except SSL.Error as exc:
        raise LocalFileError(
            f"OpenSSL cannot use client certificate file {sslcert} ({openssl_reason(exc)})"
        ) from None
    try:
        context.use_privatekey_file(sslkey)
        context.check_privatekey()
    except SSL.Error as exc:
        reason = openssl_reason(exc)
        if "bad decrypt" in reason or "bad password" in reason or "decrypt" in reason:
            reason = "it is protected by a passphrase"
        raise LocalFileError(f"OpenSSL cannot use client key file {sslkey} ({reason})") from None


def client_contexts(
    sslrootcert: str | None,
    sslcrl: str | None = None,
    sslcrldir: str | None = None,
    sslcert: str | None = None,
    sslkey: str | None = None,
) -> ClientContexts:
    """Contexts for a run; ``sslrootcert`` is a file, ``system``, or None (no verification).

    Raises:
        LocalFileError: the root certificate, CRL, client certificate or key
            file cannot be used.
    """
    return ClientContexts(sslrootcert, sslcrl, sslcrldir, sslcert, sslkey)


def openssl_reason(exc: SSL.Error) -> str:
    """OpenSSL's reason (``tlsv1 alert protocol version``): its words, never the peer's."""
    details: Any = exc.args[0] if exc.args else None
    if isinstance(details, list) and details and isinstance(details[-1], tuple):
        return str(details[-1][-1])
    return str(details or "")


@functools.cache
def openssl_version() -> str:
    """The OpenSSL that makes the handshake and decides trust and CRLs here.

    pyOpenSSL runs on the OpenSSL inside cryptography's wheel, which need not
    be the one libpq (psql) is linked against on the same host.
    """
    return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode("ascii", "replace")


def verify_error_message(code: int) -> str:
    """OpenSSL's words for a verification error code."""
    try:
        from OpenSSL._util import ffi, lib

        text = ffi.string(lib.X509_verify_cert_error_string(code))
        return text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)
    except (ImportError, AttributeError):
        return f"verification error {code}"
