"""Reading files named on the command line: the server's certificate and key, CRLs.

Trusted roots are read by OpenSSL itself (:mod:`.openssl_client`). Key material is loaded only
to derive its public half and is never printed, logged or kept.
"""

from __future__ import annotations

import os
import re
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
    "read_pem_crls",
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


def read_pem_crls(path: str, what: str) -> tuple[CrlFacts, ...]:
    """The PEM CRLs in a file that holds other things too (a root certificate file).

    OpenSSL loads the CRLs of a root certificate file beside its
    certificates, and libpq's checks use them; one OpenSSL reads and
    cryptography does not is left out here (OpenSSL still decides).
    """
    data = _read(path, what)
    crls = []
    for part in data.split(_PEM_CRL)[1:]:
        try:
            crls.append(CrlFacts(x509.load_pem_x509_crl(_PEM_CRL + part), path))
        except ValueError:
            continue
    return tuple(crls)


# OpenSSL names the files of a hashed directory "%08lx.r%d".
_HASHED = re.compile(r"([0-9a-f]{8})\.r(0|[1-9][0-9]*)")
_LOOKS_HASHED = re.compile(r"[0-9A-Fa-f]+\.r[0-9]+")


def read_crl_dir(path: str) -> tuple[CrlFacts, ...]:
    """The CRLs of a directory prepared for OpenSSL (``openssl rehash``: ``HASH.rN``).

    Read as OpenSSL's by-hash lookup reads them when it wants the CRLs of an
    issuer: ``HASH.r0``, ``HASH.r1``, ... with HASH the hash of the issuer's
    name, until a file is missing or holds no PEM CRL, and of each the CRLs
    of that issuer. Every other CRL in such a file, or in one after the gap,
    is returned too, with why OpenSSL never reads it (``unread``): it never
    counts, and an admin should know.
    """
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise LocalFileError(f"cannot read CRL directory {path}: {exc.strerror}") from None
    series: dict[str, dict[int, str]] = {}
    crls: list[CrlFacts] = []
    for name in names:
        match = _HASHED.fullmatch(name)
        if match is not None:
            series.setdefault(match[1], {})[int(match[2])] = name
        elif _LOOKS_HASHED.fullmatch(name):
            why = f"{name} is not named as OpenSSL looks CRLs up (lower-case HASH.rN)"
            crls += [c._replace(unread=why) for c in _dir_file(path, name)[0]]
    for digest, files in series.items():
        suffix, missing = 0, None
        for number in sorted(files):
            name = files[number]
            found, pem = _dir_file(path, name)
            if missing is None and number != suffix:
                missing = f"OpenSSL stops at the missing {digest}.r{suffix}"
            elif missing is None and not pem:
                crls += [
                    c._replace(unread=f"{name} is not PEM, which OpenSSL needs") for c in found
                ]
                missing = f"OpenSSL stops at {name}, from which it reads no PEM CRL"
                continue
            if missing is not None:
                crls += [c._replace(unread=missing) for c in found]
                continue
            suffix += 1
            for crl in found:
                if f"{_name_hash(crl.crl.issuer):08x}" == digest:
                    crls.append(crl)
                else:
                    crls.append(crl._replace(unread=f"{name} is named for another issuer's hash"))
    return tuple(crls)


def _dir_file(directory: str, name: str) -> tuple[tuple[CrlFacts, ...], bool]:
    """The CRLs of one file of a hashed directory, and whether they are PEM."""
    path = os.path.join(directory, name)
    data = _read(path, "CRL file")
    if _PEM_CRL in data:
        return read_pem_crls(path, "CRL file"), True
    try:
        return (CrlFacts(x509.load_der_x509_crl(data), path),), False
    except ValueError:
        return (), False


def _name_hash(name: x509.Name) -> int:
    """OpenSSL's hash of a name, which names the files of hashed directories."""
    # pyOpenSSL offers it only for the names of its own objects.
    from OpenSSL._util import ffi, lib

    der = name.public_bytes()
    buffer = ffi.new("unsigned char[]", der)
    decoded = lib.d2i_X509_NAME(ffi.NULL, ffi.new("unsigned char **", buffer), len(der))
    if decoded == ffi.NULL:
        return -1
    try:
        return int(lib.X509_NAME_hash(decoded))
    finally:
        lib.X509_NAME_free(decoded)
