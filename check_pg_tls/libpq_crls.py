"""libpq's own OpenSSL on the CRLs: a second opinion where the two OpenSSLs differ.

With ``sslcrl``/``sslcrldir``, libpq has OpenSSL check every certificate of
the path against a CRL (``CRL_CHECK | CRL_CHECK_ALL``). The handshake runs
on the OpenSSL inside cryptography's wheel, and on CRLs the major versions
differ: OpenSSL 3, which most libpq builds link today, also checks the
self-signed root against a CRL it issued (so a self-signed server
certificate trusted as its own root needs a CRL of its own, and a root
listed in its own CRL is refused), while OpenSSL 4 skips it. When the
verdict's OpenSSL accepts a path with CRLs, the system's libcrypto, the one
libpq uses on this host, verifies the same path with the same CRLs and the
same flags; if it refuses, so would libpq, and that refusal is the verdict.
"""

from __future__ import annotations

import ctypes
import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

from .system_libcrypto import libcrypto

__all__ = ["Refusal", "libpq_refusal"]

_CRL_CHECK = 0x4
_CRL_CHECK_ALL = 0x8


class Refusal(NamedTuple):
    """What the system's OpenSSL said about the path."""

    #: X509_V_ERR_* code and the depth in the path it concerns.
    code: int
    depth: int
    #: OpenSSL's words for the code.
    message: str
    #: The system libcrypto's version text.
    version: str


def libpq_refusal(
    path: Sequence[bytes], crls: Sequence[bytes], now: dt.datetime, verdict_version: int
) -> Refusal | None:
    """The system OpenSSL's refusal of ``path`` (leaf first, root last) with ``crls`` (DER).

    None when it accepts, when it is the same major version as the verdict's
    (``verdict_version``, as ``OpenSSL_version_num()``: it would say the
    same), or when there is no system libcrypto to ask.
    """
    crypto = libcrypto()
    if isinstance(crypto, str) or not path:
        return None
    if crypto.OpenSSL_version_num() >> 28 == verdict_version >> 28:
        return None
    made: list[tuple[Any, int]] = []  # (pointer, kind) to free: 0 certificate, 1 CRL
    store = crypto.X509_STORE_new()
    context = crypto.X509_STORE_CTX_new()
    untrusted = crypto.OPENSSL_sk_new_null()
    try:
        certs = []
        for der in path:
            cert = _decode(crypto.d2i_X509, der)
            if not cert:
                return None
            made.append((cert, 0))
            certs.append(cert)
        crypto.X509_STORE_add_cert(store, certs[-1])
        for der in crls:
            crl = _decode(crypto.d2i_X509_CRL, der)
            if not crl:
                return None
            made.append((crl, 1))
            crypto.X509_STORE_add_crl(store, crl)
        crypto.X509_STORE_set_flags(store, _CRL_CHECK | _CRL_CHECK_ALL)
        for cert in certs[1:-1]:
            crypto.OPENSSL_sk_push(untrusted, cert)
        if crypto.X509_STORE_CTX_init(context, store, certs[0], untrusted) != 1:
            return None
        crypto.X509_STORE_CTX_set_time(context, 0, int(now.timestamp()))
        if crypto.X509_verify_cert(context) == 1:
            return None
        code = crypto.X509_STORE_CTX_get_error(context)
        text = crypto.X509_verify_cert_error_string(code) or b"verification failed"
        version = crypto.OpenSSL_version(0) or b"OpenSSL"
        return Refusal(
            code,
            crypto.X509_STORE_CTX_get_error_depth(context),
            text.decode("ascii", "replace"),
            version.decode("ascii", "replace"),
        )
    finally:
        crypto.X509_STORE_CTX_free(context)
        crypto.OPENSSL_sk_free(untrusted)
        crypto.X509_STORE_free(store)
        for pointer, kind in made:
            (crypto.X509_CRL_free if kind else crypto.X509_free)(pointer)
        crypto.ERR_clear_error()


def _decode(d2i: Any, der: bytes) -> Any:
    data = ctypes.c_char_p(der)
    return d2i(None, ctypes.byref(data), len(der))
