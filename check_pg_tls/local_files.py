"""Reading files named on the command line: the server's certificate and key, CRLs.

Trusted roots are read by OpenSSL itself (:mod:`.openssl_client`). Key material is loaded only
to derive its public half and is never printed, logged or kept.
"""

from __future__ import annotations

import os
import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from .crls import CrlFacts
from .errors import LocalFileError
from .model import KeyFile

__all__ = [
    "LocalFileError",
    "inspect_key_file",
    "read_cert_file",
    "read_certificates",
    "read_crl_dir",
    "read_crls",
]


def _read(path: str, what: str) -> bytes:
    """The file's bytes; ``what`` names it in the message when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise LocalFileError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_certificates(path: str, what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM file; ``what`` names the file in messages."""
    data = _read(path, what)
    try:
        # A few public roots have serial number 0, which cryptography warns
        # about; a warning on stderr is noise to a monitoring system.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise LocalFileError(f"no valid PEM certificate in {what} {path}") from None


def read_cert_file(path: str) -> x509.Certificate:
    """The first certificate in a PEM file (a fullchain file starts with the leaf)."""
    return read_certificates(path, "certificate file")[0]


def inspect_key_file(path: str) -> KeyFile:
    """Mode and public half of a private key file.

    A key that cannot be read or parsed is reported in the result (the check
    still judges the permissions); a file that does not exist raises.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise LocalFileError(f"cannot read private key file {path}: {exc.strerror}") from None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return KeyFile(path, mode, None, (exc.strerror or "cannot read it").lower())
    # Imported here: serialization costs a check ~10 ms of start-up, and only
    # --key-file needs it.
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return KeyFile(path, mode, None, "it is protected by a passphrase")
    except (ValueError, UnsupportedAlgorithm):
        return KeyFile(path, mode, None, "it holds no PEM private key the check understands")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # cryptography reads an RSA-PSS key as RSA: OpenSSL tells them apart.
    from OpenSSL import crypto

    try:
        openssl_type: int | None = crypto.load_privatekey(crypto.FILETYPE_PEM, data).type()
    except crypto.Error:
        openssl_type = None
    return KeyFile(path, mode, public, openssl_type=openssl_type)


_PEM_CRL = b"-----BEGIN X509 CRL-----"


def read_crls(path: str, what: str = "CRL file") -> tuple[CrlFacts, ...]:
    """Every CRL in a file: PEM (one or more blocks), or one DER CRL."""
    data = _read(path, what)
    try:
        if _PEM_CRL in data:
            blocks = [_PEM_CRL + part for part in data.split(_PEM_CRL)[1:]]
            return tuple(CrlFacts(x509.load_pem_x509_crl(block), path) for block in blocks)
        return (CrlFacts(x509.load_der_x509_crl(data), path),)
    except ValueError:
        raise LocalFileError(f"no valid CRL in {what} {path}") from None


def read_crl_dir(path: str) -> tuple[CrlFacts, ...]:
    """The CRLs of a directory prepared for OpenSSL (``openssl rehash``: ``HASH.rN``)."""
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise LocalFileError(f"cannot read CRL directory {path}: {exc.strerror}") from None
    crls: list[CrlFacts] = []
    for name in names:
        stem, _, suffix = name.rpartition(".r")
        if stem and suffix.isdigit():
            crls.extend(read_crls(os.path.join(path, name), "CRL file"))
    return tuple(crls)
