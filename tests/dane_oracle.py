"""OpenSSL's DANE as the oracle of the DANE tests, and the hashes they publish.

Association data is computed here from the certificate's DER with the test
bed's own reader, never with the plugin's.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from testbed import crafted
from testbed.crafted import read

__all__ = ["openssl_dane", "reencoded", "sha256", "spki_of"]


def spki_of(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo element of a certificate, as its bytes stand."""
    tbs = crafted.elements(read(der)[1])[0]
    fields = crafted.elements(read(tbs)[1])
    return fields[6 if fields[0][0] == 0xA0 else 5]


def reencoded(der: bytes) -> bytes:
    """The same key as cryptography re-serialises it (what the plugin hashed before)."""
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def openssl_dane(port: int, host: str, rdata: str, cafile: Path | None = None) -> bool:
    """Does OpenSSL's DANE (the system's s_client) accept the server with this one record?

    DANE-EE ignores names, as the plugin does (RFC 7671); the PKIX usages
    need the root, given as ``cafile``.
    """
    done = subprocess.run(
        [
            "openssl", "s_client", "-starttls", "postgres", "-brief",
            "-connect", f"127.0.0.1:{port}",
            "-dane_tlsa_domain", host, "-dane_tlsa_rrdata", rdata,
            "-dane_ee_no_namechecks", "-verify_return_error",
            *(["-CAfile", str(cafile)] if cafile else []),
        ],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    output = done.stdout + done.stderr
    accepted = done.returncode == 0 and "Verification: OK" in output
    # "matched EE certificate at depth 0", or a bare key from DNS that
    # "signed the certificate at depth 1".
    named = "DANE TLSA" in output and ("matched" in output or "signed the certificate" in output)
    assert accepted == named, output
    return accepted
