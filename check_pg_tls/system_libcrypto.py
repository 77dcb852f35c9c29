"""The system's libcrypto through ctypes: the OpenSSL libpq is linked against here.

The handshake runs on the OpenSSL inside cryptography's wheel. Where that
one and the system's decide differently, or where pyOpenSSL's bindings lack
the call libpq makes, the system's library is asked directly: it is the one
Python's ``ssl`` and, on the same host, libpq use. Loaded once per process,
when first needed (ctypes costs a check a few milliseconds); the few
functions used are declared here, with their C prototypes.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["libcrypto", "version"]

# The names OpenSSL 3 and 1.1.1 go by.
_LIBRARIES = (
    "libcrypto.so.3",
    "libcrypto.so.1.1",
    "libcrypto.3.dylib",
    "libcrypto.1.1.dylib",
    "libcrypto.so",
    "libcrypto.dylib",
)


@functools.cache
def libcrypto() -> Any:
    """The loaded libcrypto with its prototypes set, or a string saying why there is none."""
    # Imported here: a check pays for ctypes only when it needs the library.
    import ctypes

    found = None
    for name in _LIBRARIES:
        try:
            found = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(found, "X509_get_signature_info"):
            break
        found = None
    if found is None:
        return "no libcrypto with X509_get_signature_info (OpenSSL 1.1.1 or newer) was found"
    void_p, int_p, c_int = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int
    prototypes: dict[str, tuple[Any, list[Any]]] = {
        "OpenSSL_version": (ctypes.c_char_p, [c_int]),
        "OpenSSL_version_num": (ctypes.c_ulong, []),
        "ERR_clear_error": (None, []),
        "d2i_X509": (void_p, [void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
        "X509_free": (None, [void_p]),
        "d2i_X509_CRL": (void_p, [void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
        "X509_CRL_free": (None, [void_p]),
        "X509_get_signature_info": (
            c_int,
            [void_p, int_p, int_p, int_p, ctypes.POINTER(ctypes.c_uint32)],
        ),
        "OBJ_nid2sn": (ctypes.c_char_p, [c_int]),
        "OBJ_sn2nid": (c_int, [ctypes.c_char_p]),
        "EVP_get_digestbyname": (void_p, [ctypes.c_char_p]),
        "X509_digest": (c_int, [void_p, void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint)]),
        "X509_STORE_new": (void_p, []),
        "X509_STORE_free": (None, [void_p]),
        "X509_STORE_add_cert": (c_int, [void_p, void_p]),
        "X509_STORE_add_crl": (c_int, [void_p, void_p]),
        "X509_STORE_set_flags": (c_int, [void_p, ctypes.c_ulong]),
        "X509_STORE_CTX_new": (void_p, []),
        "X509_STORE_CTX_free": (None, [void_p]),
        "X509_STORE_CTX_init": (c_int, [void_p, void_p, void_p, void_p]),
        "X509_STORE_CTX_set_time": (None, [void_p, ctypes.c_ulong, ctypes.c_int64]),
        "X509_STORE_CTX_get_error": (c_int, [void_p]),
        "X509_STORE_CTX_get_error_depth": (c_int, [void_p]),
        "X509_verify_cert": (c_int, [void_p]),
        "X509_verify_cert_error_string": (ctypes.c_char_p, [ctypes.c_long]),
        # sk_X509_new_null() and sk_X509_push() are macros for these.
        "OPENSSL_sk_new_null": (void_p, []),
        "OPENSSL_sk_push": (c_int, [void_p, void_p]),
        "OPENSSL_sk_free": (None, [void_p]),
    }
    for function, (restype, argtypes) in prototypes.items():
        if not hasattr(found, function):
            return f"the system's libcrypto has no {function}"
        getattr(found, function).restype = restype
        getattr(found, function).argtypes = argtypes
    return found


def version() -> str | None:
    """The system libcrypto's version text (``OpenSSL 3.0.19 27 Jan 2026``), if there is one."""
    crypto = libcrypto()
    if isinstance(crypto, str):
        return None
    text = crypto.OpenSSL_version(0)  # OPENSSL_VERSION
    return text.decode("ascii", "replace") if text else None
