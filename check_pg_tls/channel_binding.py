"""Which digest SCRAM channel binding uses for a server certificate, as libpq finds it.

libpq's SCRAM-SHA-256-PLUS (RFC 5929 ``tls-server-end-point``) hashes the
server's certificate with the digest of the certificate's own signature
algorithm (``pgtls_get_peer_certificate_hash`` in fe-secure-openssl.c; the
server's ``be_tls_get_certificate_hash`` is the same code):
``X509_get_signature_info()`` names the digest, MD5 and SHA-1 become
SHA-256, ``EVP_get_digestbynid()`` must know it and ``X509_digest()`` must
compute it. A signature without a digest of its own (Ed25519, Ed448) fails
there, and with it every client that logs in with SCRAM and
``channel_binding=prefer`` (libpq's default) or ``require``.

OpenSSL decides, through those very calls. pyOpenSSL's bindings do not offer
``X509_get_signature_info``, so this module calls the C library through
ctypes: the system's libcrypto, which Python's ``ssl`` and, on the same
host, libpq use. It is loaded once per process, when first needed; only
where no libcrypto can be loaded does cryptography's reading of the
signature algorithm stand in, and the answer says so.
"""

from __future__ import annotations

import functools
from typing import Any

from .model import CertificateHash
from .system_libcrypto import libcrypto

__all__ = ["certificate_hash"]

# libpq's own words for each way it fails.
_NO_ALGORITHM = "could not determine server certificate signature algorithm"
_NO_DIGEST = "could not find digest for NID {}"
_NO_HASH = "could not generate peer certificate hash"


def certificate_hash(der: bytes) -> CertificateHash:
    """libpq's channel-binding digest for the certificate ``der`` (the server's leaf)."""
    crypto = libcrypto()
    if isinstance(crypto, str):
        return _from_cryptography(der, crypto)
    return _from_openssl(crypto, der)


# Remembered by DER: the answer depends on the certificate alone (and the
# one libcrypto), and a fleet's servers present the same few leaves;
# decoding one costs OpenSSL 3.0 about 0.2 ms. Bounded for a long-running
# exporter that checks many different servers.
@functools.lru_cache(maxsize=256)
def _from_openssl(crypto: Any, der: bytes) -> CertificateHash:
    import ctypes

    data = ctypes.c_char_p(der)
    cert = crypto.d2i_X509(None, ctypes.byref(data), len(der))
    if not cert:
        crypto.ERR_clear_error()
        return CertificateHash(None, _NO_ALGORITHM)
    try:
        digest_nid, key_nid = ctypes.c_int(0), ctypes.c_int(0)
        if not crypto.X509_get_signature_info(
            cert, ctypes.byref(digest_nid), ctypes.byref(key_nid), None, None
        ):
            return CertificateHash(None, _NO_ALGORITHM)
        signed_with = _short_name(crypto, key_nid.value)
        # RFC 5929 section 4.1: MD5 and SHA-1 signatures are hashed with SHA-256.
        if digest_nid.value in (crypto.OBJ_sn2nid(b"MD5"), crypto.OBJ_sn2nid(b"SHA1")):
            digest_nid = ctypes.c_int(crypto.OBJ_sn2nid(b"SHA256"))
        # EVP_get_digestbynid is a macro for exactly this.
        name = crypto.OBJ_nid2sn(digest_nid.value)
        digest = crypto.EVP_get_digestbyname(name)
        if not digest:
            shown = name.decode("ascii", "replace") if name else "UNDEF"
            return CertificateHash(None, _NO_DIGEST.format(shown), signed_with)
        size = ctypes.c_uint(0)
        buffer = ctypes.create_string_buffer(64)  # EVP_MAX_MD_SIZE
        if not crypto.X509_digest(cert, digest, buffer, ctypes.byref(size)):
            return CertificateHash(None, _NO_HASH, signed_with)
        return CertificateHash(name.decode("ascii", "replace"), None, signed_with)
    finally:
        crypto.X509_free(cert)
        crypto.ERR_clear_error()


def _short_name(crypto: Any, nid: int) -> str | None:
    name = crypto.OBJ_nid2sn(nid) if nid else None
    return name.decode("ascii", "replace") if name else None


def _from_cryptography(der: bytes, why: str) -> CertificateHash:
    # The same rules over cryptography's table of signature algorithms:
    # only where libcrypto itself cannot be asked.
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes

    decided_by = f"cryptography ({why})"
    try:
        cert = x509.load_der_x509_certificate(der)
        algorithm = cert.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):
        return CertificateHash(None, _NO_ALGORITHM, decided_by=decided_by)
    if algorithm is None:
        key = getattr(cert.signature_algorithm_oid, "_name", None)
        return CertificateHash(
            None, _NO_DIGEST.format("UNDEF"), key.upper() if key else None, decided_by
        )
    if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        return CertificateHash("SHA256", decided_by=decided_by)
    return CertificateHash(algorithm.name.upper(), decided_by=decided_by)
