"""Reading the server's certificate and key files, for checks run on the database host.

The only module besides the probe that does I/O. Key material is loaded only
to derive its public half and is never printed, logged or kept.
"""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .posture import KeyFile

__all__ = ["LocalFileError", "inspect_key_file", "read_cert_file"]


class LocalFileError(Exception):
    """A file named on the command line cannot be used: UNKNOWN, with the reason."""


def read_cert_file(path: str) -> x509.Certificate:
    """The first certificate in a PEM file (a fullchain file starts with the leaf)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise LocalFileError(f"cannot read certificate file {path}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise LocalFileError(f"no valid PEM certificate in certificate file {path}") from None


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
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return KeyFile(path, mode, None, "it is protected by a passphrase")
    except (ValueError, UnsupportedAlgorithm):
        return KeyFile(path, mode, None, "it holds no PEM private key the check understands")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyFile(path, mode, public)
