"""Does the presented chain reach a trusted root? OpenSSL's rules, as libpq uses them.

libpq verifies with OpenSSL's defaults: issuers are looked up in the trusted
store first, then among the certificates the server sent; the chain must end
in a self-signed certificate from the store (partial chains are not allowed);
every issuer must be a CA allowed to sign certificates, and certificates with
an extended key usage must allow TLS server use. Certificate lifetimes are
judged elsewhere (days left), except the trusted root's, which the server
does not send.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from .certs import describe_name

__all__ = ["ChainCheck", "check_chain"]

# OpenSSL's verify depth is 100; real chains are 2-4 long.
_MAX_DEPTH = 32

# Extended key usages OpenSSL accepts for a TLS server (serverAuth and the
# two legacy Server Gated Crypto ones).
_SERVER_EKUS = {
    ExtendedKeyUsageOID.SERVER_AUTH,
    x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
    x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
}


class ChainCheck(NamedTuple):
    """Outcome of path building. ``problem`` is None when the chain is trusted."""

    problem: str | None
    #: The certificates of the verified path, leaf first, root last.
    path: tuple[x509.Certificate, ...] = ()
    #: Intermediates of the path that the server did not send and the trust
    #: store happened to hold: clients without them in their store fail.
    missing: tuple[x509.Certificate, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    return _issued_by(cert, cert)


def _find_issuer(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate], now: dt.datetime
) -> x509.Certificate | None:
    # Like OpenSSL, prefer an issuer that is valid now: a store may hold an
    # expired root next to its renewed copy with the same name and key.
    issuers = [c for c in candidates if c != cert and _issued_by(cert, c)]
    for issuer in issuers:
        if issuer.not_valid_before_utc <= now <= issuer.not_valid_after_utc:
            return issuer
    return issuers[0] if issuers else None


def check_chain(
    presented: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> ChainCheck:
    """Build a path from the leaf to a trusted root and check its constraints."""
    leaf = presented[0]
    untrusted = list(presented[1:])
    path = [leaf]
    current = leaf
    while True:
        # A trusted root's own signature is not checked (OpenSSL's default):
        # being in the store is what makes it trusted.
        if current.issuer == current.subject and current in roots:
            break
        if len(path) > _MAX_DEPTH:
            return ChainCheck("certificate chain is too long")
        issuer = _find_issuer(current, roots, now)
        if issuer is None:
            issuer = _find_issuer(current, untrusted, now)
        if issuer is None:
            weak = _weakly_signed(current, [*roots, *untrusted])
            return ChainCheck(weak or _no_issuer(current, leaf, untrusted))
        path.append(issuer)
        current = issuer
    problem = _constraints(path, now)
    missing = tuple(c for c in path[1:-1] if c not in presented)
    return ChainCheck(problem, tuple(path), missing)


def _weakly_signed(cert: x509.Certificate, candidates: Sequence[x509.Certificate]) -> str | None:
    # cryptography, like OpenSSL at the security level clients run with
    # today, will not verify a SHA-1 or MD5 signature: the issuer is there,
    # but the link cannot be trusted. Say so, rather than "issuer not found".
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if not isinstance(algorithm, (hashes.SHA1, hashes.MD5)):
        return None
    if not any(candidate.subject == cert.issuer for candidate in candidates):
        return None
    return (
        f"chain does not reach a trusted root: {describe_name(cert.subject)} is signed "
        f"with {algorithm.name.upper()}, which clients refuse to verify"
    )


def _no_issuer(
    current: x509.Certificate, leaf: x509.Certificate, untrusted: list[x509.Certificate]
) -> str:
    if _self_signed(current):
        if current is leaf:
            return "certificate is self-signed and not in the trusted roots"
        return f"chain ends in {describe_name(current.subject)}, which is not a trusted root"
    issuer = describe_name(current.issuer)
    if current is leaf and not untrusted:
        return (
            f"chain does not reach a trusted root: the server sends no intermediate "
            f"certificate (issuer {issuer}); add it to ssl_cert_file"
        )
    return f"chain does not reach a trusted root: issuer {issuer} not found"


def _constraints(path: list[x509.Certificate], now: dt.datetime) -> str | None:
    root = path[-1]
    root_name = describe_name(root.subject)
    if now > root.not_valid_after_utc:
        return f"trusted root {root_name} expired on {root.not_valid_after_utc:%Y-%m-%d}"
    if now < root.not_valid_before_utc:
        return f"trusted root {root_name} is not valid before {root.not_valid_before_utc:%Y-%m-%d}"
    for cert in path:
        for extension in cert.extensions:
            if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
                return (
                    f"{describe_name(cert.subject)} has an unsupported critical extension "
                    f"{extension.oid.dotted_string}"
                )
    for depth, cert in enumerate(path):
        if depth == 0:
            problem = _leaf_usage(cert)
        else:
            problem = _ca_problem(cert, intermediates_below=depth - 1, is_root=cert is root)
        if problem:
            return problem
    return None


def _leaf_usage(cert: x509.Certificate) -> str | None:
    ext_usage = _extension(cert, x509.ExtendedKeyUsage)
    if ext_usage is not None and not _SERVER_EKUS & set(ext_usage):
        return "certificate's extended key usage does not allow TLS server use"
    usage = _extension(cert, x509.KeyUsage)
    if usage is not None and not (
        usage.digital_signature or usage.key_encipherment or usage.key_agreement
    ):
        return "certificate's key usage does not allow TLS server use"
    return None


def _ca_problem(cert: x509.Certificate, intermediates_below: int, is_root: bool) -> str | None:
    name = describe_name(cert.subject)
    constraints = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    if constraints is not None:
        is_ca = constraints.ca
    else:
        # OpenSSL's lenient default: a v1 root, or a key usage that allows
        # signing certificates, still makes a CA.
        is_ca = cert.version is x509.Version.v1 or (usage is not None and usage.key_cert_sign)
    if not is_ca:
        return f"issuer {name} is not a CA certificate"
    if usage is not None and not usage.key_cert_sign:
        return f"issuer {name} may not sign certificates (key usage)"
    limit = constraints.path_length if constraints is not None else None
    if limit is not None and intermediates_below > limit:
        return f"issuer {name} allows a shorter chain (path length {limit})"
    if not is_root:
        ext_usage = _extension(cert, x509.ExtendedKeyUsage)
        if ext_usage is not None and not _SERVER_EKUS & set(ext_usage):
            return f"intermediate {name} does not allow TLS server use (extended key usage)"
    return None


_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
