"""libpq's own OpenSSL: a second opinion on every chain the verdict's OpenSSL judges.

The handshake runs on the OpenSSL inside cryptography's wheel; libpq runs on
the system's libcrypto (OpenSSL 3.0 on Debian 12), and the two decide
differently more often than one would like: OpenSSL 3.0 verifies no
ECDSA-with-SHA3 and no ML-DSA signature, checks a self-signed root against a
CRL it issued (with libpq's ``CRL_CHECK_ALL``), takes a delta CRL for a
complete one. So whenever the verdict's OpenSSL judges a chain under a
verifying sslmode, the system's libcrypto, the one libpq is linked against on
this host, verifies the chain the server sent, at the time of the check,
against a store built as libpq builds its own (``initialize_SSL`` in
fe-secure-openssl.c, the same in PostgreSQL 15 and 18):

* ``sslrootcert``, a file: ``SSL_CTX_load_verify_locations(ctx, file, NULL)``,
  which loads the certificates and the CRLs in it; ``system``:
  ``SSL_CTX_set_default_verify_paths`` (the default file, then the hashed
  directory; ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` override them);
* with ``sslcrl`` or ``sslcrldir`` (and a root file):
  ``X509_STORE_load_locations(store, sslcrl, sslcrldir)`` and, only when that
  succeeds, ``X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL``; a hashed
  directory is read as OpenSSL reads it, ``HASH.r0``, ``HASH.r1``, ... of an
  issuer's name until one is missing, when the issuer is looked up;

with what the handshake adds (``ssl_verify_cert_chain``): every certificate
the server sent as untrusted, the ``ssl_server`` purpose and trust, and the
security level as the level of the keys and signatures (2, as the verdict's
handshake). If it refuses, so does libpq, and that refusal is the verdict;
if it accepts a chain the verdict's OpenSSL refused, libpq connects, and the
chain is trusted (with a warning: clients on the newer OpenSSL refuse it). As
in the verdict, a certificate the server sent that is merely out of its dates
is left to the days-left judgement: the verification goes on past it.

Built once per trust configuration, like the client contexts, on its first
use, and shared by every probe (OpenSSL's store is safe to verify with from
many threads). The system's default file is not decoded whole, which costs
OpenSSL 3.0 about 16 ms for Debian's 144 roots on every check: its
certificates are read as PEM by OpenSSL, indexed by the hash of their
subject, and decoded when a verification looks their subject up, which is
when OpenSSL would first use them.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .der import DerError, subject_name
from .record import Record
from .system_libcrypto import verifier

__all__ = ["UNDECODABLE", "UNREADABLE_ROOTS", "LibpqStore", "Refusal", "crl_signed_by"]

#: Refusal codes of our own, beside OpenSSL's X509_V_ERR_* ones: libpq's
#: OpenSSL cannot read the root certificate file (libpq fails before it
#: connects), or cannot decode a certificate the server sent (the handshake
#: fails).
UNREADABLE_ROOTS = -1
UNDECODABLE = -2

_CRL_CHECK = 0x4
_CRL_CHECK_ALL = 0x8
_X509_L_ADD_DIR = 2
_X509_FILETYPE_DEFAULT = 3
_X509_LU_X509 = 1
# As the verdict's handshake (openssl_client): OpenSSL's default security
# level on today's distributions, stated rather than read from a config.
_SECURITY_LEVEL = 2
# X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED.
_TIME_CODES = frozenset({9, 10})
# PEM labels OpenSSL's file lookup reads certificates from (PEM_X509_INFO_read_bio).
_CERTIFICATE_LABELS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"})


class Refusal(Record):
    """What libpq's OpenSSL said about the chain."""

    #: X509_V_ERR_* code (or :data:`UNREADABLE_ROOTS`, :data:`UNDECODABLE`)
    #: and the depth it concerns in :attr:`chain`.
    code: int
    depth: int
    #: OpenSSL's words for the code (or its reason for the two of our own).
    message: str
    #: The system libcrypto's version text.
    version: str
    #: The certificate it concerns, as DER (b"" when none).
    certificate: bytes = b""
    #: The chain OpenSSL built, leaf first, as DER.
    chain: tuple[bytes, ...] = ()


class LibpqStore:
    """libpq's certificate store for one trust configuration, in the system's libcrypto.

    Cheap to make: nothing is loaded before :meth:`refusal` is first called.
    """

    def __init__(
        self, sslrootcert: str, sslcrl: str | None = None, sslcrldir: str | None = None
    ) -> None:
        self.sslrootcert = sslrootcert
        # libpq loads CRLs only together with a root certificate file.
        self.sslcrl = sslcrl or None if sslrootcert != "system" else None
        self.sslcrldir = sslcrldir or None if sslrootcert != "system" else None
        self._lock = threading.Lock()
        self._built: _Built | Refusal | None = None

    def refusal(self, presented: Sequence[bytes], now: dt.datetime) -> Refusal | None:
        """libpq's OpenSSL's refusal of the chain ``presented`` (as sent, leaf first) at ``now``.

        None when it accepts; also when it is the verdict's OpenSSL itself
        (the same version would say the same) or there is no system
        libcrypto to ask.
        """
        said = self.opinion(presented, now)
        return said if isinstance(said, Refusal) else None

    def version(self) -> str:
        """The system libcrypto's version text ("" when there is none)."""
        crypto = verifier()
        return "" if isinstance(crypto, str) else _version(crypto)

    def opinion(
        self, presented: Sequence[bytes], now: dt.datetime
    ) -> Refusal | tuple[bytes, ...] | None:
        """libpq's OpenSSL's refusal, or the path it accepted; None when it cannot be asked."""
        crypto = verifier()
        if isinstance(crypto, str) or not presented:
            return None
        from OpenSSL import SSL

        if crypto.OpenSSL_version_num() == SSL.OPENSSL_VERSION_NUMBER:
            return None
        with self._lock:
            if self._built is None:
                self._built = self._build(crypto)
        if isinstance(self._built, Refusal):
            return self._built
        return _verify(crypto, self._built.store, presented, now)

    def _build(self, crypto: Any) -> _Built | Refusal:
        store = crypto.X509_STORE_new()
        built = _Built(store)
        # Freed with this object, never before: OpenSSL keeps pointers to
        # the lookup method and to every certificate the index decoded.
        weakref.finalize(self, _free, crypto, built)
        if self.sslrootcert == "system":
            built.index = _DefaultFile(crypto, _default_file(crypto))
            built.index.install(store)
            directories = crypto.X509_STORE_add_lookup(store, crypto.X509_LOOKUP_hash_dir())
            crypto.X509_LOOKUP_ctrl(
                directories, _X509_L_ADD_DIR, None, _X509_FILETYPE_DEFAULT, None
            )
            # OpenSSL 3 then adds the same directory once more as an
            # OSSL_STORE, which looks certificates up by the same hashed
            # names: nothing the directory lookup does not find.
            crypto.ERR_clear_error()
            return built
        if crypto.X509_STORE_load_locations(store, os.fsencode(self.sslrootcert), None) != 1:
            reason = _reason(crypto)
            return Refusal(UNREADABLE_ROOTS, 0, reason, _version(crypto))
        crl_file = os.fsencode(self.sslcrl) if self.sslcrl else None
        crl_dir = os.fsencode(self.sslcrldir) if self.sslcrldir else None
        # As libpq: CRL checking only once the CRLs are loaded; when they
        # cannot be, libpq silently checks none.
        if (crl_file or crl_dir) and crypto.X509_STORE_load_locations(store, crl_file, crl_dir):
            crypto.X509_STORE_set_flags(store, _CRL_CHECK | _CRL_CHECK_ALL)
        crypto.ERR_clear_error()
        return built


class _Built:
    """The store and what must live as long as it."""

    def __init__(self, store: int) -> None:
        self.store = store
        self.index: _DefaultFile | None = None


def _free(crypto: Any, built: _Built) -> None:
    crypto.X509_STORE_free(built.store)
    if built.index is not None:
        built.index.free()


def _verify(
    crypto: Any, store: int, presented: Sequence[bytes], now: dt.datetime
) -> Refusal | tuple[bytes, ...] | None:
    """The refusal, or the verified path (leaf first, as DER); None if OpenSSL cannot start."""
    import ctypes

    certs: list[int] = []
    untrusted = crypto.OPENSSL_sk_new_null()
    context = crypto.X509_STORE_CTX_new()
    try:
        for depth, der in enumerate(presented):
            cert = _DECODED.take(crypto, der)
            if not cert:
                return Refusal(UNDECODABLE, depth, _reason(crypto), _version(crypto), der)
            certs.append(cert)
            # The leaf too, as the handshake passes the whole chain sent.
            crypto.OPENSSL_sk_push(untrusted, cert)
        if crypto.X509_STORE_CTX_init(context, store, certs[0], untrusted) != 1:
            return None
        crypto.X509_STORE_CTX_set_default(context, b"ssl_server")
        crypto.X509_VERIFY_PARAM_set_auth_level(
            crypto.X509_STORE_CTX_get0_param(context), _SECURITY_LEVEL
        )
        crypto.X509_STORE_CTX_set_time(context, 0, int(now.timestamp()))
        callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)(
            lambda ok, ctx: _tolerate_dates(crypto, certs, ok, ctx)
        )
        crypto.X509_STORE_CTX_set_verify_cb(context, ctypes.cast(callback, ctypes.c_void_p))
        verified = crypto.X509_verify_cert(context) == 1
        chain = crypto.X509_STORE_CTX_get0_chain(context)
        built = (
            tuple(
                _der(crypto, crypto.OPENSSL_sk_value(chain, i))
                for i in range(crypto.OPENSSL_sk_num(chain))
            )
            if chain
            else ()
        )
        if verified:
            return built
        code = crypto.X509_STORE_CTX_get_error(context)
        text = crypto.X509_verify_cert_error_string(code) or b"verification failed"
        current = crypto.X509_STORE_CTX_get_current_cert(context)
        return Refusal(
            code,
            crypto.X509_STORE_CTX_get_error_depth(context),
            text.decode("ascii", "replace"),
            _version(crypto),
            _der(crypto, current) if current else b"",
            built,
        )
    finally:
        crypto.X509_STORE_CTX_free(context)
        crypto.OPENSSL_sk_free(untrusted)
        for cert in certs:
            crypto.X509_free(cert)
        crypto.ERR_clear_error()


def crl_signed_by(crl: bytes, issuer: bytes) -> bool | None:
    """Whether libpq's OpenSSL finds the CRL ``crl`` signed by the certificate ``issuer``
    (both DER); None when there is no system libcrypto to ask or it cannot decode them.

    cryptography verifies no SHA-1 signature, which OpenSSL 3.0 still accepts
    on a CRL: where cryptography says no, this decides.
    """
    crypto = verifier()
    if isinstance(crypto, str):
        return None
    decoded_crl = _decode(crypto.d2i_X509_CRL, crl)
    decoded_issuer = _decode(crypto.d2i_X509, issuer)
    try:
        if not decoded_crl or not decoded_issuer:
            return None
        key = crypto.X509_get0_pubkey(decoded_issuer)
        return bool(key) and crypto.X509_CRL_verify(decoded_crl, key) == 1
    finally:
        if decoded_crl:
            crypto.X509_CRL_free(decoded_crl)
        if decoded_issuer:
            crypto.X509_free(decoded_issuer)
        crypto.ERR_clear_error()


def _tolerate_dates(crypto: Any, sent: list[int], ok: int, context: int) -> int:
    """libpq's verification, except that a sent certificate out of its dates is let through.

    Such a certificate is the days-left judgement's to name, with its dates;
    what follows it in the verification (signatures, CRLs of the others)
    still counts. Never raises: ctypes cannot carry an exception into C.
    """
    if ok:
        return 1
    try:
        if crypto.X509_STORE_CTX_get_error(context) not in _TIME_CODES:
            return 0
        cert = crypto.X509_STORE_CTX_get_current_cert(context)
        chain = crypto.X509_STORE_CTX_get0_chain(context)
        # The trust anchor's dates are the trust's business, as in the verdict.
        top = max(crypto.OPENSSL_sk_num(chain) - 1, 1) if chain else 1
        if crypto.X509_STORE_CTX_get_error_depth(context) >= top:
            return 0
        return 1 if any(crypto.X509_cmp(cert, mine) == 0 for mine in sent) else 0
    except Exception:  # noqa: BLE001 - see the docstring
        return 0


class _DecodedCertificates:
    """The certificates servers sent, decoded by the system's libcrypto, by DER.

    Decoding is most of a verification's cost (OpenSSL 3.0 takes about 0.2
    ms a certificate), and a fleet's servers send the same few chains. A
    decoded certificate is never changed by a verification, and OpenSSL lets
    many threads verify with the same one (as with a store's roots), so each
    DER is decoded once while remembered. Each user takes its own reference
    and frees it; forgetting one (the least recently used, past the bound)
    drops only the cache's own, so no certificate is freed under a user.
    """

    _BOUND = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._certs: OrderedDict[bytes, int] = OrderedDict()

    def take(self, crypto: Any, der: bytes) -> int | None:
        """A reference to the decoded ``der`` for the caller to ``X509_free``; None
        when it does not decode (OpenSSL's error left for the caller to read)."""
        with self._lock:
            cert = self._certs.get(der)
            if cert is not None:
                self._certs.move_to_end(der)
                crypto.X509_up_ref(cert)
                return cert
        # Decoded outside the lock, which two threads may both do at once:
        # the later one keeps its own and the cache keeps the first.
        cert = _decode(crypto.d2i_X509, der)
        if not cert:
            return None
        with self._lock:
            if der not in self._certs:
                crypto.X509_up_ref(cert)
                self._certs[der] = cert
                if len(self._certs) > self._BOUND:
                    crypto.X509_free(self._certs.popitem(last=False)[1])
        return int(cert)


_DECODED = _DecodedCertificates()


class _DefaultFile:
    """The system's default root file as a lookup that decodes a certificate when asked for it.

    OpenSSL's own file lookup decodes every certificate of the file when the
    store is made. This one reads the file with OpenSSL's PEM reader, indexes
    the certificates by the hash of their subject (the hash that names the
    files of a hashed directory), and on a lookup decodes those of that hash
    into the store, once, and answers as OpenSSL's store answers. One
    difference stays: OpenSSL drops the whole file when one certificate in
    it does not decode; here only that certificate is missing.
    """

    def __init__(self, crypto: Any, path: str) -> None:
        self._crypto = crypto
        self._path = path
        self._lock = threading.Lock()
        self._pending: dict[int, list[tuple[bytes, bytes]]] | None = None
        self._decoded: dict[int, list[int]] = {}
        self._method: int | None = None
        self._callback: Any = None

    def install(self, store: int) -> None:
        import ctypes

        crypto = self._crypto
        kind = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p
        )
        self._callback = kind(self._get_by_subject)
        self._method = crypto.X509_LOOKUP_meth_new(b"check_pg_tls default file")
        crypto.X509_LOOKUP_meth_set_get_by_subject(
            self._method, ctypes.cast(self._callback, ctypes.c_void_p)
        )
        crypto.X509_STORE_add_lookup(store, self._method)

    def free(self) -> None:
        crypto = self._crypto
        for certs in self._decoded.values():
            for cert in certs:
                crypto.X509_free(cert)
        if self._method is not None:
            crypto.X509_LOOKUP_meth_free(self._method)

    def _get_by_subject(self, lookup: int, kind: int, name: int, found: int) -> int:
        # Called by OpenSSL, from any thread that verifies; never raises.
        if kind != _X509_LU_X509:
            return 0
        crypto = self._crypto
        try:
            with self._lock:
                if self._pending is None:
                    self._pending = _read_pem(crypto, self._path)
                key = _name_hash(crypto, name)
                if key not in self._decoded:
                    self._decoded[key] = self._decode(
                        crypto.X509_LOOKUP_get_store(lookup), self._pending.pop(key, [])
                    )
                for cert in self._decoded[key]:
                    if crypto.X509_NAME_cmp(crypto.X509_get_subject_name(cert), name) == 0:
                        return 1 if crypto.X509_OBJECT_set1_X509(found, cert) == 1 else 0
            return 0
        except Exception:  # noqa: BLE001 - see above
            return 0

    def _decode(self, store: int, blocks: list[tuple[bytes, bytes]]) -> list[int]:
        crypto = self._crypto
        certs = []
        for label, der in blocks:
            # TRUSTED CERTIFICATE carries OpenSSL's trust settings after the certificate.
            d2i = crypto.d2i_X509_AUX if label == b"TRUSTED CERTIFICATE" else crypto.d2i_X509
            cert = _decode(d2i, der)
            if cert:
                crypto.X509_STORE_add_cert(store, cert)
                certs.append(cert)
        crypto.ERR_clear_error()
        return certs


def _default_file(crypto: Any) -> str:
    variable = crypto.X509_get_default_cert_file_env() or b"SSL_CERT_FILE"
    given = os.environ.get(variable.decode("ascii", "replace"))
    return given or os.fsdecode(crypto.X509_get_default_cert_file() or b"")


def _read_pem(crypto: Any, path: str) -> dict[int, list[tuple[bytes, bytes]]]:
    """The certificates of a PEM file as OpenSSL's PEM reader finds them, by subject hash."""
    import ctypes

    index: dict[int, list[tuple[bytes, bytes]]] = {}
    bio = crypto.BIO_new_file(os.fsencode(path), b"r")
    if not bio:
        crypto.ERR_clear_error()
        return index
    try:
        while True:
            label, header, data = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
            length = ctypes.c_long(0)
            if not crypto.PEM_read_bio(
                bio, ctypes.byref(label), ctypes.byref(header), ctypes.byref(data),
                ctypes.byref(length),
            ):  # fmt: skip
                break
            try:
                kind = ctypes.string_at(label.value) if label.value else b""
                der = ctypes.string_at(data.value, length.value) if data.value else b""
            finally:
                for pointer in (label, header, data):
                    crypto.CRYPTO_free(pointer, b"", 0)
            if kind not in _CERTIFICATE_LABELS:
                continue
            key = _subject_hash(crypto, der)
            if key is not None:
                index.setdefault(key, []).append((kind, der))
    finally:
        crypto.BIO_free(bio)
        crypto.ERR_clear_error()  # PEM_read_bio ends on "no start line"
    return index


def _subject_hash(crypto: Any, der: bytes) -> int | None:
    try:
        subject = subject_name(der)
    except DerError:
        return None
    name = _decode(crypto.d2i_X509_NAME, subject)
    if not name:
        return None
    try:
        return _name_hash(crypto, name)
    finally:
        crypto.X509_NAME_free(name)


def _name_hash(crypto: Any, name: int) -> int:
    if hasattr(crypto, "X509_NAME_hash_ex"):
        return int(crypto.X509_NAME_hash_ex(name, None, None, None))
    return int(crypto.X509_NAME_hash(name))


def _decode(d2i: Any, der: bytes) -> Any:
    import ctypes

    data = ctypes.c_char_p(der)
    return d2i(None, ctypes.byref(data), len(der))


def _der(crypto: Any, cert: int) -> bytes:
    import ctypes

    size = crypto.i2d_X509(cert, None)
    if size <= 0:
        return b""
    buffer = ctypes.create_string_buffer(size)
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    crypto.i2d_X509(cert, ctypes.byref(pointer))
    return buffer.raw


def _reason(crypto: Any) -> str:
    code = crypto.ERR_peek_last_error()
    text = crypto.ERR_reason_error_string(code) if code else None
    crypto.ERR_clear_error()
    return text.decode("ascii", "replace") if text else "no reason given"


def _version(crypto: Any) -> str:
    text = crypto.OpenSSL_version(0) or b"OpenSSL"
    return str(text.decode("ascii", "replace"))
