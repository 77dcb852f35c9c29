"""The system's libcrypto through ctypes: the OpenSSL libpq is linked against here.

The handshake runs on the OpenSSL inside cryptography's wheel. Where that
one and the system's decide differently, or where pyOpenSSL's bindings lack
the call libpq makes, the system's library is asked directly: it is the one
Python's ``ssl`` and, on the same host, libpq use. Loaded once per process,
when first needed (ctypes costs a check a few milliseconds); the functions
used are declared here, with their C prototypes: those channel binding
needs (:func:`libcrypto`), and those verifying a chain as libpq does needs
(:func:`verifier`).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["libcrypto", "verifier", "version"]

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
    }
    missing = _declare(found, prototypes)
    return found if missing is None else missing


@functools.cache
def verifier() -> Any:
    """:func:`libcrypto` with what verifying a chain as libpq does takes, or why not.

    A separate set: a library too old for these still tells channel binding.
    """
    found = libcrypto()
    if isinstance(found, str):
        return found
    import ctypes

    void_p, c_int, c_long = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    out = ctypes.POINTER(void_p)
    d2i = (void_p, [void_p, ctypes.POINTER(ctypes.c_char_p), c_long])
    prototypes: dict[str, tuple[Any, list[Any]]] = {
        "ERR_peek_last_error": (ctypes.c_ulong, []),
        "ERR_reason_error_string": (ctypes.c_char_p, [ctypes.c_ulong]),
        "d2i_X509_AUX": d2i,
        "d2i_X509_NAME": d2i,
        "X509_NAME_free": (None, [void_p]),
        "X509_NAME_cmp": (c_int, [void_p, void_p]),
        "X509_get_subject_name": (void_p, [void_p]),
        "X509_cmp": (c_int, [void_p, void_p]),
        "X509_up_ref": (c_int, [void_p]),
        "i2d_X509": (c_int, [void_p, out]),
        "X509_get_default_cert_file": (ctypes.c_char_p, []),
        "X509_get_default_cert_file_env": (ctypes.c_char_p, []),
        "BIO_new_file": (void_p, [ctypes.c_char_p, ctypes.c_char_p]),
        "BIO_free": (c_int, [void_p]),
        "PEM_read_bio": (c_int, [void_p, out, out, out, ctypes.POINTER(c_long)]),
        "CRYPTO_free": (None, [void_p, ctypes.c_char_p, c_int]),
        "X509_STORE_new": (void_p, []),
        "X509_STORE_free": (None, [void_p]),
        "X509_STORE_add_cert": (c_int, [void_p, void_p]),
        "X509_STORE_set_flags": (c_int, [void_p, ctypes.c_ulong]),
        "X509_STORE_load_locations": (c_int, [void_p, ctypes.c_char_p, ctypes.c_char_p]),
        "X509_STORE_add_lookup": (void_p, [void_p, void_p]),
        "X509_LOOKUP_hash_dir": (void_p, []),
        "X509_LOOKUP_ctrl": (c_int, [void_p, c_int, ctypes.c_char_p, c_long, void_p]),
        "X509_LOOKUP_meth_new": (void_p, [ctypes.c_char_p]),
        "X509_LOOKUP_meth_free": (None, [void_p]),
        "X509_LOOKUP_meth_set_get_by_subject": (c_int, [void_p, void_p]),
        "X509_LOOKUP_get_store": (void_p, [void_p]),
        "X509_OBJECT_set1_X509": (c_int, [void_p, void_p]),
        "X509_STORE_CTX_new": (void_p, []),
        "X509_STORE_CTX_free": (None, [void_p]),
        "X509_STORE_CTX_init": (c_int, [void_p, void_p, void_p, void_p]),
        "X509_STORE_CTX_set_default": (c_int, [void_p, ctypes.c_char_p]),
        "X509_STORE_CTX_get0_param": (void_p, [void_p]),
        "X509_VERIFY_PARAM_set_auth_level": (None, [void_p, c_int]),
        "X509_STORE_CTX_set_time": (None, [void_p, ctypes.c_ulong, ctypes.c_int64]),
        "X509_STORE_CTX_set_verify_cb": (None, [void_p, void_p]),
        "X509_STORE_CTX_get_error": (c_int, [void_p]),
        "X509_STORE_CTX_get_error_depth": (c_int, [void_p]),
        "X509_STORE_CTX_get_current_cert": (void_p, [void_p]),
        "X509_STORE_CTX_get0_chain": (void_p, [void_p]),
        "X509_verify_cert": (c_int, [void_p]),
        "X509_get0_pubkey": (void_p, [void_p]),
        "X509_CRL_verify": (c_int, [void_p, void_p]),
        "X509_verify_cert_error_string": (ctypes.c_char_p, [c_long]),
        # sk_X509_new_null(), sk_X509_push() and the others are macros for these.
        "OPENSSL_sk_new_null": (void_p, []),
        "OPENSSL_sk_push": (c_int, [void_p, void_p]),
        "OPENSSL_sk_num": (c_int, [void_p]),
        "OPENSSL_sk_value": (void_p, [void_p, c_int]),
        "OPENSSL_sk_free": (None, [void_p]),
    }
    # OpenSSL 3 renamed the name hash that names files in hashed directories
    # (X509_NAME_hash is a macro there); 1.1.1 has only the old name.
    if hasattr(found, "X509_NAME_hash_ex"):
        prototypes["X509_NAME_hash_ex"] = (
            ctypes.c_ulong,
            [void_p, void_p, ctypes.c_char_p, ctypes.POINTER(c_int)],
        )
    else:
        prototypes["X509_NAME_hash"] = (ctypes.c_ulong, [void_p])
    missing = _declare(found, prototypes)
    return found if missing is None else missing


def _declare(found: Any, prototypes: dict[str, tuple[Any, list[Any]]]) -> str | None:
    """Set the C prototypes; the first function the library lacks, worded, if any."""
    for function, (restype, argtypes) in prototypes.items():
        if not hasattr(found, function):
            return f"the system's libcrypto has no {function}"
        getattr(found, function).restype = restype
        getattr(found, function).argtypes = argtypes
    return None


def version() -> str | None:
    """The system libcrypto's version text (``OpenSSL 3.0.19 27 Jan 2026``), if there is one."""
    crypto = libcrypto()
    if isinstance(crypto, str):
        return None
    text = crypto.OpenSSL_version(0)  # OPENSSL_VERSION
    return text.decode("ascii", "replace") if text else None
