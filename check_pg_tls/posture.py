"""What only a PostgreSQL-aware checker sees: pure judgements beyond expiry and trust.

Weak protocol versions, keys and signatures; an intermediate the server does
not send; a certificate renewed on disk but not reloaded; a private key file
anyone can read, or one that does not match; unencrypted logins. Each
function returns one :class:`Finding`; none does I/O.
"""

from __future__ import annotations

import stat
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from .certs import CertFacts, describe_name
from .model import Observation
from .protocol import StartupReply, StartupReplyKind

__all__ = [
    "TLS_VERSIONS",
    "Finding",
    "KeyFile",
    "PlaintextOutcome",
    "client_certificate_finding",
    "client_key_mode_finding",
    "incomplete_chain_finding",
    "key_file_findings",
    "key_strength_finding",
    "legacy_finding",
    "plaintext_finding",
    "reload_finding",
    "signature_finding",
    "tls_version_finding",
]

#: Protocol versions as Python's ssl names them, oldest first.
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

# Hashes no CA has used for a decade; a signature made with one can be forged.
_WEAK_HASHES = (hashes.SHA1, hashes.MD5)


class Finding(NamedTuple):
    """One judgement. ``problem`` is None when all is well."""

    check: str
    problem: str | None
    #: What was judged, for the verbose output.
    detail: str
    #: ``warning``, ``critical`` or ``unknown``: the state when there is a problem.
    severity: str = "critical"


class KeyFile(NamedTuple):
    """What the check learnt about a private key file (never the key itself)."""

    path: str
    mode: int
    #: DER SubjectPublicKeyInfo of the key's public half; None if unreadable.
    public_key: bytes | None
    #: Why the key could not be read, if it could not.
    unreadable: str | None = None
    #: OpenSSL's type of the key (``EVP_PKEY_id``): RSA and RSA-PSS keys
    #: have the same public half, but PostgreSQL takes a pair of one type only.
    openssl_type: int | None = None


class PlaintextOutcome(NamedTuple):
    """The answer to an unencrypted StartupMessage, or why there was none."""

    user: str
    database: str
    reply: StartupReply | None
    failure: str | None = None


def tls_version_finding(version: str, minimum: str) -> Finding:
    if version in TLS_VERSIONS and TLS_VERSIONS.index(version) < TLS_VERSIONS.index(minimum):
        return Finding(
            "tls_version",
            f"server negotiated {version}, below the minimum {minimum}",
            "protocol too old",
        )
    return Finding("tls_version", None, f"server negotiated {version}")


def legacy_finding(observation: Observation, min_tls_version: str) -> Finding:
    """Only a handshake with legacy settings succeeded: libpq clients cannot connect.

    Unless the admin declared, with a lower ``--min-tls-version``, that their
    clients are configured for the old protocol the server speaks.
    """
    version = observation.tls_version
    if (
        TLS_VERSIONS.index(min_tls_version) < TLS_VERSIONS.index("TLSv1.2")
        and version in TLS_VERSIONS
        and TLS_VERSIONS.index(version) >= TLS_VERSIONS.index(min_tls_version)
    ):
        return Finding(
            "handshake",
            None,
            f"only a legacy handshake succeeds ({version}); accepted by --min-tls-version "
            f"{min_tls_version}",
        )
    return Finding(
        "handshake",
        f"libpq clients cannot connect: a handshake as they make it (TLS 1.2 or newer, "
        f"OpenSSL's default security level) fails ({observation.legacy_reason}); the server "
        f"only completes one with legacy settings ({observation.tls_version}, "
        f"{observation.cipher})",
        "legacy handshake only",
    )


# What a server's alert means for the client certificate, in OpenSSL's words.
_REFUSALS = (
    ("unknown ca", "the server does not trust its CA"),
    ("unsupported certificate", "it is not for client use (extended key usage)"),
    ("certificate revoked", "the server says it is revoked"),
    ("certificate expired", "the server says it has expired"),
    ("bad certificate", "the server calls it a bad certificate"),
    ("access denied", "the server denies access"),
)


def client_certificate_finding(observation: Observation, configured: bool) -> Finding | None:
    """Does the server want a client certificate, and does it take ours?

    None when no certificate was asked for and none is configured.
    """
    refusal = observation.client_refusal
    if refusal is not None:
        if not observation.client_certificate_sent:
            return Finding(
                "client_certificate",
                f"server requires a client certificate (give --sslcert and --sslkey): {refusal}",
                "client certificate required",
            )
        meaning = next((text for alert, text in _REFUSALS if alert in refusal), None)
        return Finding(
            "client_certificate",
            f"server refuses the client certificate: {meaning + ' (' if meaning else ''}"
            f"{refusal}{')' if meaning else ''}",
            "client certificate refused",
        )
    if observation.client_certificate_sent:
        return Finding("client_certificate", None, "server accepted the client certificate")
    if observation.certificate_requested:
        return Finding(
            "client_certificate",
            None,
            "server asks for a client certificate but does not require one",
        )
    if configured:
        return Finding("client_certificate", None, "server did not ask for a client certificate")
    return None


def client_key_mode_finding(path: str, mode: int, owned_by_root: bool) -> Finding:
    """libpq's rule for sslkey: 0600 or less, or 0640 or less when owned by root."""
    loose = mode & (stat.S_IWGRP | stat.S_IXGRP | stat.S_IRWXO if owned_by_root else 0o077)
    shown = f"{stat.S_IMODE(mode):04o}"
    if loose:
        return Finding(
            "client_key_permissions",
            f"libpq refuses client key file {path}: it has group or world access (mode "
            f"{shown}); make it 0600, or 0640 owned by root",
            "client key file too open",
            "warning",
        )
    return Finding("client_key_permissions", None, f"client key file mode {shown}")


def key_strength_finding(leaf: CertFacts, min_rsa_bits: int, min_ec_bits: int) -> Finding:
    try:
        if leaf.certificate is None:
            raise ValueError("unparsed")
        key = leaf.certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return Finding("key_strength", None, "key of a type the check does not know")
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        kind, bits, minimum = (
            "RSA" if isinstance(key, rsa.RSAPublicKey) else "DSA",
            key.key_size,
            min_rsa_bits,
        )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        kind, bits, minimum = f"EC {key.curve.name}", key.curve.key_size, min_ec_bits
    else:
        return Finding("key_strength", None, f"{type(key).__name__.replace('PublicKey', '')} key")
    if bits < minimum:
        return Finding(
            "key_strength",
            f"certificate has a weak {kind} key of {bits} bits (minimum {minimum})",
            "weak key",
            "warning",
        )
    return Finding("key_strength", None, f"{kind} key of {bits} bits")


def signature_finding(
    chain: tuple[CertFacts, ...], indexes: tuple[int, ...], severity: str
) -> Finding:
    """SHA-1 or MD5 signatures on the leaf or an intermediate (a root's own does not matter)."""
    for index in indexes:
        cert = chain[index].certificate
        if cert is None or (index > 0 and cert.issuer == cert.subject):
            continue
        try:
            algorithm = cert.signature_hash_algorithm
        except (ValueError, UnsupportedAlgorithm):
            continue
        if isinstance(algorithm, _WEAK_HASHES):
            who = "certificate" if index == 0 else f"intermediate {describe_name(cert.subject)}"
            return Finding(
                "signature",
                f"{who} is signed with {algorithm.name.upper()}, which can be forged",
                "weak signature",
                severity,
            )
    return Finding("signature", None, "signatures use strong hashes")


def incomplete_chain_finding(missing: tuple[CertFacts, ...]) -> Finding:
    """The chain verified only because the trust store held an intermediate."""
    if not missing:
        return Finding("intermediates", None, "server sends every intermediate certificate")
    names = ", ".join(cert.subject for cert in missing)
    return Finding(
        "intermediates",
        f"server sends no intermediate certificate ({names}); add it to ssl_cert_file: "
        "clients that only trust the root cannot connect",
        "incomplete chain",
        "warning",
    )


def reload_finding(served: CertFacts, on_disk: x509.Certificate, path: str) -> Finding:
    """Does the server serve the certificate that is on disk?"""
    if served.certificate == on_disk:
        return Finding("reload", None, f"server serves the certificate in {path}")
    served_until = f"{served.not_after:%Y-%m-%d}"
    disk_until = f"{on_disk.not_valid_after_utc:%Y-%m-%d}"
    if on_disk.not_valid_after_utc > served.not_after:
        problem = (
            f"server still serves the old certificate (expires {served_until}); the file on "
            f"disk expires {disk_until}; reload PostgreSQL"
        )
    else:
        problem = (
            f"server serves a different certificate (expires {served_until}) from {path} "
            f"(expires {disk_until})"
        )
    return Finding("reload", problem, "certificate on disk differs", "warning")


def key_file_findings(key: KeyFile, served: CertFacts) -> tuple[Finding, ...]:
    """Permissions of the key file, and whether the key belongs to the served certificate."""
    findings = []
    loose = []
    if key.mode & stat.S_IROTH:
        loose.append("world-readable")
    if key.mode & stat.S_IWOTH:
        loose.append("world-writable")
    if key.mode & stat.S_IWGRP:
        loose.append("group-writable")
    mode = f"{stat.S_IMODE(key.mode):04o}"
    if loose:
        findings.append(
            Finding(
                "key_permissions",
                f"private key file {key.path} is {' and '.join(loose)} (mode {mode}); "
                "make it 0600, or 0640 with a trusted group",
                "key file too open",
                "warning",
            )
        )
    else:
        findings.append(Finding("key_permissions", None, f"private key file mode {mode}"))
    if key.unreadable is not None:
        findings.append(
            Finding(
                "key_match",
                f"cannot check private key file {key.path}: {key.unreadable}",
                "key unreadable",
                "unknown",
            )
        )
    else:
        findings.append(_key_match_finding(key, served))
    return tuple(findings)


def _key_match_finding(key: KeyFile, served: CertFacts) -> Finding:
    """Does the key belong to the certificate, as OpenSSL decides when PostgreSQL loads them?

    OpenSSL compares keys, not encodings (X509_check_private_key): the public
    halves are compared as cryptography writes both, so that a certificate
    storing its EC point compressed still matches its key; and the key types
    as OpenSSL reads them, since an RSA key does not match an RSA-PSS
    certificate of the same modulus.
    """
    # Imported here: serialization costs a check ~10 ms of start-up, and
    # only --key-file needs it.
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto

    try:
        if served.certificate is None:
            raise ValueError("unparsed")
        served_key = served.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        served_type = crypto.load_certificate(crypto.FILETYPE_ASN1, served.der).get_pubkey().type()
    except (ValueError, UnsupportedAlgorithm, crypto.Error):
        return Finding(
            "key_match",
            f"cannot check private key file {key.path}: the served certificate's key is of a "
            "kind the check cannot read",
            "key unreadable",
            "unknown",
        )
    if served_key != key.public_key or key.openssl_type not in (None, served_type):
        return Finding(
            "key_match",
            f"private key file {key.path} does not belong to the served certificate",
            "key mismatch",
        )
    return Finding("key_match", None, "private key matches the certificate")


def plaintext_finding(outcome: PlaintextOutcome, severity: str) -> Finding:
    who = f"user {outcome.user}" + (
        f" and database {outcome.database}" if outcome.database != outcome.user else ""
    )
    reply = outcome.reply
    if reply is None:
        return Finding(
            "plaintext",
            f"cannot tell whether unencrypted logins are allowed: {outcome.failure}",
            "plaintext check failed",
            "unknown",
        )
    if reply.kind is StartupReplyKind.AUTHENTICATION:
        return Finding(
            "plaintext",
            f"server accepts unencrypted logins for {who} (pg_hba.conf has a host line where "
            "hostssl belongs)",
            "plaintext login possible",
            severity,
        )
    if reply.sqlstate == "28000":
        return Finding("plaintext", None, f"server refuses unencrypted logins for {who}")
    return Finding(
        "plaintext",
        f"cannot tell whether unencrypted logins are allowed: the server answered with "
        f"SQLSTATE {reply.sqlstate or 'unknown'}",
        "plaintext check inconclusive",
        "unknown",
    )
