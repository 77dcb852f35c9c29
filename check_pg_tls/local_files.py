"""Reading files named on the command line: the server's certificate and key.

Trusted roots are read by OpenSSL itself (:mod:`.openssl_client`). Key material is loaded only
to derive its public half and is never printed, logged or kept.
"""

from __future__ import annotations

import os
import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from .errors import LocalFileError
from .posture import KeyFile

__all__ = ["LocalFileError", "inspect_key_file", "read_cert_file"]


def read_certificates(path: str, what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM file; ``what`` names the file in messages."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise LocalFileError(f"cannot read {what} {path}: {exc.strerror}") from None
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
    return KeyFile(path, mode, public)
