"""What only a PostgreSQL-aware checker sees: pure judgements beyond expiry and trust.

Weak protocol versions, keys and signatures; an intermediate the server does
not send; a certificate renewed on disk but not reloaded; a private key file
anyone can read, or one that does not match; unencrypted logins; a
certificate SCRAM channel binding cannot use; what the server asks of a
user at login. Each function returns its findings (one, a few, or None when
there is nothing to say); none does I/O.
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from .certs import CertFacts, describe_name
from .model import (
    TLS_VERSIONS,
    Check,
    Finding,
    KeyFile,
    LoginAnswer,
    LoginRules,
    Observation,
    PlaintextAnswer,
    State,
)
from .protocol import AuthCode, StartupReply, StartupReplyKind
from .text import safe

if TYPE_CHECKING:
    from .model import CertificateHash

__all__ = [
    "channel_binding_finding",
    "client_certificate_finding",
    "client_key_mode_finding",
    "incomplete_chain_finding",
    "key_file_findings",
    "key_strength_finding",
    "legacy_finding",
    "login_finding",
    "plaintext_finding",
    "reload_finding",
    "signature_finding",
    "tls_version_finding",
]


# Hashes no CA has used for a decade; a signature made with one can be forged.
_WEAK_HASHES = (hashes.SHA1, hashes.MD5)


def tls_version_finding(version: str, minimum: str) -> Finding:
    if version in TLS_VERSIONS and TLS_VERSIONS.index(version) < TLS_VERSIONS.index(minimum):
        return Finding(
            Check.TLS_VERSION,
            f"server negotiated {version}, below the minimum {minimum}",
            "protocol too old",
            State.CRITICAL,
        )
    return Finding.ok(Check.TLS_VERSION, f"server negotiated {version}")


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
        return Finding.ok(
            Check.HANDSHAKE,
            f"only a legacy handshake succeeds ({version}); accepted by --min-tls-version "
            f"{min_tls_version}",
        )
    return Finding(
        Check.HANDSHAKE,
        f"libpq clients cannot connect: a handshake as they make it (TLS 1.2 or newer, "
        f"OpenSSL's default security level) fails ({observation.legacy_reason}); the server "
        f"only completes one with legacy settings ({observation.tls_version}, "
        f"{observation.cipher})",
        "legacy handshake only",
        State.CRITICAL,
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
                Check.CLIENT_CERTIFICATE,
                f"server requires a client certificate (give --sslcert and --sslkey): {refusal}",
                "client certificate required",
                State.CRITICAL,
            )
        meaning = next((text for alert, text in _REFUSALS if alert in refusal), None)
        return Finding(
            Check.CLIENT_CERTIFICATE,
            f"server refuses the client certificate: {meaning + ' (' if meaning else ''}"
            f"{refusal}{')' if meaning else ''}",
            "client certificate refused",
            State.CRITICAL,
        )
    if observation.client_certificate_sent:
        return Finding.ok(Check.CLIENT_CERTIFICATE, "server accepted the client certificate")
    if observation.certificate_requested:
        # PostgreSQL asks in every handshake once ssl_ca_file is set, and
        # lets the handshake finish without one; pg_hba.conf (clientcert,
        # cert) decides only after the StartupMessage.
        later = (
            "see auth: what the login met"
            if observation.login is not None
            else "only a login can tell: --check-auth USER"
        )
        return Finding.ok(
            Check.CLIENT_CERTIFICATE,
            "server asks for a client certificate and completes the TLS handshake without "
            "one; whether a login needs one (pg_hba.conf clientcert or cert) is decided "
            f"after the StartupMessage ({later})",
        )
    if configured:
        return Finding.ok(Check.CLIENT_CERTIFICATE, "server did not ask for a client certificate")
    return None


def client_key_mode_finding(path: str, mode: int, owned_by_root: bool) -> Finding:
    """libpq's rule for sslkey: 0600 or less, or 0640 or less when owned by root.

    libpq fails before the handshake with such a key, whatever the server:
    CRITICAL, as for any server no such client can connect to.
    """
    loose = mode & (stat.S_IWGRP | stat.S_IXGRP | stat.S_IRWXO if owned_by_root else 0o077)
    shown = f"{stat.S_IMODE(mode):04o}"
    if loose:
        return Finding(
            Check.CLIENT_KEY_PERMISSIONS,
            f"libpq refuses client key file {path}: it has group or world access (mode "
            f"{shown}), and libpq clients with this sslkey cannot connect; make it 0600, "
            "or 0640 owned by root",
            "client key file too open",
            State.CRITICAL,
        )
    return Finding.ok(Check.CLIENT_KEY_PERMISSIONS, f"client key file mode {shown}")


def key_strength_finding(leaf: CertFacts, min_rsa_bits: int, min_ec_bits: int) -> Finding:
    try:
        if leaf.certificate is None:
            raise ValueError("unparsed")
        key = leaf.certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return Finding.ok(Check.KEY_STRENGTH, "key of a type the check does not know")
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        kind, bits, minimum = (
            "RSA" if isinstance(key, rsa.RSAPublicKey) else "DSA",
            key.key_size,
            min_rsa_bits,
        )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        kind, bits, minimum = f"EC {key.curve.name}", key.curve.key_size, min_ec_bits
    else:
        return Finding.ok(Check.KEY_STRENGTH, f"{type(key).__name__.replace('PublicKey', '')} key")
    if bits < minimum:
        return Finding(
            Check.KEY_STRENGTH,
            f"certificate has a weak {kind} key of {bits} bits (minimum {minimum})",
            "weak key",
            State.WARNING,
        )
    return Finding.ok(Check.KEY_STRENGTH, f"{kind} key of {bits} bits")


def signature_finding(
    chain: tuple[CertFacts, ...], indexes: tuple[int, ...], severity: State
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
                Check.SIGNATURE,
                f"{who} is signed with {algorithm.name.upper()}, which can be forged",
                "weak signature",
                severity,
            )
    return Finding.ok(Check.SIGNATURE, "signatures use strong hashes")


def incomplete_chain_finding(
    missing: tuple[CertFacts, ...], sent: tuple[CertFacts, ...] = ()
) -> Finding:
    """The chain verified only because the trust store held an intermediate.

    ``sent`` is what the server sent: an intermediate it sends in another
    version (an expired one, say) than the one the path took from the
    trusted roots is named as such, not as one it does not send.
    """
    if not missing:
        return Finding.ok(Check.INTERMEDIATES, "server sends every intermediate certificate")
    absent, replaced = [], []
    for cert in missing:
        other = next((s for s in sent[1:] if s.subject == cert.subject), None)
        if other is None:
            absent.append(cert.subject)
        else:
            replaced.append(f"{cert.subject} valid until {other.not_after:%Y-%m-%d}")
    problems = []
    if absent:
        problems.append(
            f"server sends no intermediate certificate ({', '.join(absent)}); add it to "
            "ssl_cert_file"
        )
    if replaced:
        problems.append(
            f"server sends intermediate {'; '.join(replaced)}, not the one the chain was "
            "verified with (from the trusted roots); replace it in ssl_cert_file"
        )
    return Finding(
        Check.INTERMEDIATES,
        "; ".join(problems) + ": clients that only trust the root cannot connect",
        "incomplete chain",
        State.WARNING,
    )


def reload_finding(served: CertFacts, on_disk: x509.Certificate, path: str) -> Finding:
    """Does the server serve the certificate that is on disk?"""
    if served.certificate == on_disk:
        return Finding.ok(Check.RELOAD, f"server serves the certificate in {path}")
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
    return Finding(Check.RELOAD, problem, "certificate on disk differs", State.WARNING)


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
                Check.KEY_PERMISSIONS,
                f"private key file {key.path} is {' and '.join(loose)} (mode {mode}); "
                "make it 0600, or 0640 with a trusted group",
                "key file too open",
                State.WARNING,
            )
        )
    else:
        findings.append(Finding.ok(Check.KEY_PERMISSIONS, f"private key file mode {mode}"))
    if key.unreadable is not None:
        findings.append(
            Finding(
                Check.KEY_MATCH,
                f"cannot check private key file {key.path}: {key.unreadable}",
                "key unreadable",
                State.UNKNOWN,
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
            Check.KEY_MATCH,
            f"cannot check private key file {key.path}: the served certificate's key is of a "
            "kind the check cannot read",
            "key unreadable",
            State.UNKNOWN,
        )
    if served_key != key.public_key or key.openssl_type not in (None, served_type):
        return Finding(
            Check.KEY_MATCH,
            f"private key file {key.path} does not belong to the served certificate",
            "key mismatch",
            State.CRITICAL,
        )
    return Finding.ok(Check.KEY_MATCH, "private key matches the certificate")


def plaintext_finding(outcome: PlaintextAnswer, severity: State) -> Finding:
    who = f"user {outcome.user}" + (
        f" and database {outcome.database}" if outcome.database != outcome.user else ""
    )
    reply = outcome.reply
    if reply is None:
        return Finding(
            Check.PLAINTEXT,
            f"cannot tell whether unencrypted logins are allowed: {outcome.failure}",
            "plaintext check failed",
            State.UNKNOWN,
        )
    if reply.kind is StartupReplyKind.AUTHENTICATION:
        return Finding(
            Check.PLAINTEXT,
            f"server accepts unencrypted logins for {who} (pg_hba.conf has a host line where "
            "hostssl belongs)",
            "plaintext login possible",
            severity,
        )
    if reply.sqlstate == "28000":
        return Finding.ok(Check.PLAINTEXT, f"server refuses unencrypted logins for {who}")
    return Finding(
        Check.PLAINTEXT,
        f"cannot tell whether unencrypted logins are allowed: the server answered with "
        f"SQLSTATE {reply.sqlstate or 'unknown'}",
        "plaintext check inconclusive",
        State.UNKNOWN,
    )


def _who(user: str, database: str) -> str:
    shown = f"user {safe(user, 100)}"
    return shown + (f" and database {safe(database, 100)}" if database != user else "")


#: SASL mechanisms named in output. Others are only counted: mechanism
#: names are text from a server that may not be authenticated.
KNOWN_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "OAUTHBEARER")


def known_mechanisms(reply: StartupReply) -> tuple[tuple[str, ...], int]:
    """The SASL mechanisms offered that may be shown, and how many others."""
    known = tuple(m for m in reply.mechanisms if m in KNOWN_MECHANISMS)
    return known, len(reply.mechanisms) - len(known)


def _asks_for(reply: StartupReply) -> str | None:
    """What an authentication request asks for, in words; None for what libpq cannot do."""
    code = reply.auth_code
    if code == AuthCode.SASL:
        known, others = known_mechanisms(reply)
        if any(m.startswith("SCRAM-") for m in known):
            offered = ", ".join(known) + (f" and {others} other" if others else "")
            return f"a password by SCRAM (offers {offered})"
        if "OAUTHBEARER" in known:
            return "an OAuth bearer token (OAUTHBEARER)"
        return None
    return _ASKS_FOR.get(code or 0)


_ASKS_FOR: dict[int, str] = {
    AuthCode.CLEARTEXT_PASSWORD: "a cleartext password (password, ldap, radius or pam in "
    "pg_hba.conf), sent inside TLS",
    AuthCode.MD5_PASSWORD: "an MD5-hashed password",
    AuthCode.GSS: "Kerberos (GSSAPI)",
    AuthCode.SSPI: "SSPI (Windows)",
}
_UNSUPPORTED: dict[int, str] = {
    AuthCode.KERBEROS_V5: "Kerberos V5",
    AuthCode.SCM_CREDENTIAL: "SCM credentials",
}


def login_finding(
    observation: Observation,
    passwordless_severity: State,
    client_name: str | None = None,
    rules: LoginRules | None = None,
) -> Finding:
    """``--check-auth``: what the server asks of the user, after the handshake.

    No password is sent, so a request for one is information, not a
    verdict; a refusal at this point is what every libpq client set up like
    this check (with or without the same client certificate) meets, and so
    is a method a connection string's require_auth (in ``rules``) does not
    allow. ``client_name`` is the Common Name of the client certificate
    sent, if any.
    """
    answer = observation.login
    assert answer is not None
    login = answer.login
    who = _who(login.user, login.database)
    sent = observation.client_certificate_sent
    reply = answer.reply
    if reply is None:
        if observation.client_refusal is not None:
            return Finding.ok(
                Check.AUTH,
                "no login asked: the server refused the TLS connection (see client_certificate)",
            )
        return Finding(
            Check.AUTH,
            f"cannot tell what the server asks of {who}: {answer.failure}",
            "login check failed",
            State.UNKNOWN,
        )
    if reply.kind is StartupReplyKind.ERROR:
        return _refusal(reply, who, sent, observation.certificate_requested)
    if rules is not None and rules.require_auth is not None:
        refused = _required_method(reply, rules, who)
        if refused is not None:
            return refused
    if reply.auth_code == AuthCode.OK:
        ended = ""
        if answer.session_sqlstate:
            ended = (
                f"; it then ended the session with SQLSTATE {answer.session_sqlstate} (does "
                "the role, or the database, exist?)"
            )
        elif answer.failure:
            ended = f"; the session then did not start: {answer.failure}"
        if sent:
            return Finding.ok(
                Check.AUTH,
                f"server lets {who} in on the client certificate, without a password "
                f"(cert authentication, or trust){ended}",
            )
        return Finding(
            Check.AUTH,
            f"server lets {who} log in over TLS without a password or client certificate "
            f"(pg_hba.conf trust){ended}",
            "login without password",
            passwordless_severity,
        )
    asked = _asks_for(reply)
    if asked is None:
        return Finding(
            Check.AUTH,
            f"cannot tell what the server asks of {who}: it asks for "
            f"{_unknown_method(reply)}, which libpq does not support",
            "unknown authentication",
            State.UNKNOWN,
        )
    if sent and client_name != login.user:
        # clientcert=verify-full compares the name only after the password,
        # which the check never sends: it can only point out the mismatch.
        name = f"CN={safe(client_name, 100)}" if client_name is not None else "no CN"
        return Finding(
            Check.AUTH,
            f"the client certificate names {name}, not user {safe(login.user, 100)}: a "
            "pg_hba.conf line with clientcert=verify-full (or cert) refuses it after the "
            "password, unless a user name map or clientname=DN allows it; the server asks "
            f"{who} for {asked}",
            "client certificate for another user",
            State.WARNING,
        )
    later = (
        "; the client certificate passed the handshake, and names the user (which "
        "clientcert=verify-full checks only after the password)"
        if sent
        else ""
    )
    return Finding.ok(Check.AUTH, f"server asks {who} for {asked}{later}")


# libpq's require_auth: the method each first request stands for, and the
# words of its refusal (fe-auth.c, check_expected_areq).
_METHODS: dict[int, tuple[str, str]] = {
    AuthCode.OK: ("none", "server did not complete authentication"),
    AuthCode.CLEARTEXT_PASSWORD: ("password", "server requested a cleartext password"),
    AuthCode.MD5_PASSWORD: ("md5", "server requested a hashed password"),
    AuthCode.GSS: ("gss", "server requested GSSAPI authentication"),
    AuthCode.SSPI: ("sspi", "server requested SSPI authentication"),
}


def _required_method(reply: StartupReply, rules: LoginRules, who: str) -> Finding | None:
    """A first request a connection string's require_auth does not allow: CRITICAL,
    in libpq's words; None when it is allowed, or libpq would not get that far."""
    required = rules.require_auth or ""
    listed = {part.lstrip("!") for part in required.split(",")}
    negated = required.startswith("!")
    code = reply.auth_code
    if code == AuthCode.SASL:
        if any(m.startswith("SCRAM-") for m in reply.mechanisms):
            method = "scram-sha-256"
        elif "OAUTHBEARER" in reply.mechanisms:
            method = "oauth"
        else:
            return None
        if negated:
            plus = _PLUS in reply.mechanisms and rules.channel_binding != "disable"
            reason = f"server requested {_PLUS if plus else 'SCRAM-SHA-256'} authentication"
        else:
            reason = "server requested SASL authentication"
    elif code in _METHODS:
        method, reason = _METHODS[code]
    else:
        return None
    if (method in listed) != negated:
        return None
    return Finding(
        Check.AUTH,
        f"require_auth={required} in the connection string refuses what the server asks of "
        f'{who}: every login of these clients fails ("authentication method requirement '
        f'"{required}" failed: {reason}")',
        "authentication method not allowed",
        State.CRITICAL,
    )


def _unknown_method(reply: StartupReply) -> str:
    if reply.auth_code == AuthCode.SASL:
        count = len(reply.mechanisms)
        if not count:
            return "SASL without any mechanism"
        return f"SASL with {count} mechanism{'s' if count != 1 else ''} libpq does not know"
    code = reply.auth_code or 0
    return _UNSUPPORTED.get(code, f"authentication method {code}")


# What a server answers a login it refuses before any password: PostgreSQL
# 28000 (pg_hba.conf reject, no line, a client certificate it demands,
# ident: one SQLSTATE for all, and the text that tells them apart is not
# shown); pgbouncer 08P01 for all of its own refusals.
_REFUSED = ("28000", "28P01", "08P01")
#: What the SQLSTATE cannot tell apart.
_UNTOLD = "the SQLSTATE does not tell which"


def _refusal(reply: StartupReply, who: str, sent: bool, requested: bool) -> Finding:
    code = reply.sqlstate
    if code not in _REFUSED:
        return Finding(
            Check.AUTH,
            f"cannot tell what the server asks of {who}: it answered with SQLSTATE "
            f"{code or 'unknown'}",
            "login check inconclusive",
            State.UNKNOWN,
        )
    if sent:
        problem = (
            f"login of {who} refused with the client certificate given (SQLSTATE {code}) "
            "before any password: its name does not map to the user (cert authentication), "
            "or pg_hba.conf rejects the login (reject, no line for it over TLS, ident); "
            f"{_UNTOLD}; libpq clients with this sslcert cannot log in"
        )
    elif requested:
        problem = (
            f"login of {who} refused (SQLSTATE {code}) before any password, on a connection "
            "without a client certificate: pg_hba.conf demands one (cert, clientcert=verify-ca "
            "or verify-full), which libpq clients without sslcert never get past, or rejects "
            f"the login (reject, no line for it over TLS, ident); {_UNTOLD}"
        )
    else:
        problem = (
            f"login of {who} refused over TLS (SQLSTATE {code}) before any password: "
            "pg_hba.conf rejects it (reject, no line for it, ident, or cert without a client "
            f"certificate); {_UNTOLD}"
        )
    return Finding(Check.AUTH, problem, "login refused", State.CRITICAL)


_PLUS = "SCRAM-SHA-256-PLUS"


def channel_binding_finding(
    binding: CertificateHash,
    login: LoginAnswer | None,
    severity: State,
    mode: str = "prefer",
    client_sslmode: str | None = None,
) -> Finding:
    """Can libpq bind a SCRAM login to this certificate (tls-server-end-point)?

    libpq hashes the server's certificate with the digest of its signature
    algorithm; a signature without one (Ed25519, Ed448) makes every SCRAM
    login with channel_binding=prefer (the default) or require fail. Whether
    a client logs in with SCRAM only the server can say: with ``login``,
    an offer of SCRAM-SHA-256-PLUS makes it certain (CRITICAL); SCRAM
    without channel binding makes it moot, since the server offers none to
    anyone.

    ``mode`` is a connection string's channel_binding: ``disable`` binds
    nothing, so nothing can fail; ``require`` fails every login that is not
    bound (fe-auth.c): with a certificate libpq cannot hash, over a
    connection without TLS, and, as ``login`` shows, when the server asks
    for anything but SCRAM-SHA-256-PLUS.
    """
    if mode == "disable":
        return Finding.ok(
            Check.CHANNEL_BINDING,
            "channel_binding=disable in the connection string: clients do not bind SCRAM "
            "logins to the certificate",
        )
    if mode == "require":
        return _required_binding(binding, login, client_sslmode)
    if binding.digest is not None:
        return Finding.ok(
            Check.CHANNEL_BINDING,
            f"SCRAM channel binding hashes the certificate with {binding.digest}",
        )
    fails = f'fail with "{binding.error}" ({_why_unbound(binding)})'
    fix = _BINDING_FIX
    reply = login.reply if login is not None else None
    if login is not None and reply is not None and reply.auth_code == AuthCode.SASL:
        who = _who(login.login.user, login.login.database)
        if _PLUS in reply.mechanisms:
            return Finding(
                Check.CHANNEL_BINDING,
                f"server offers {who} {_PLUS}, which libpq cannot bind to this certificate: "
                f"password logins with channel_binding=prefer (the default) or require "
                f"{fails}; {fix}",
                "channel binding impossible",
                State.CRITICAL,
            )
        if "SCRAM-SHA-256" in reply.mechanisms:
            return Finding.ok(
                Check.CHANNEL_BINDING,
                f"libpq cannot bind SCRAM to this certificate ({binding.error}), but the "
                f"server does not offer {_PLUS}: clients log in without channel binding",
            )
    return Finding(
        Check.CHANNEL_BINDING,
        f"SCRAM password logins with channel_binding=prefer (libpq's default) or require "
        f"{fails}; {fix}",
        "channel binding impossible",
        severity,
    )


_BINDING_FIX = (
    "use a certificate signed by an ECDSA or RSA key, or channel_binding=disable in the "
    "clients (no protection)"
)


def _why_unbound(binding: CertificateHash) -> str:
    error = binding.error or ""
    if "find digest" in error and binding.signed_with:
        return f"the certificate is signed with {binding.signed_with}, which has no digest"
    if "generate" in error:
        return "OpenSSL cannot compute the digest of the certificate's signature"
    return "OpenSSL cannot tell the digest of the certificate's signature"


def _required_binding(
    binding: CertificateHash, login: LoginAnswer | None, client_sslmode: str | None
) -> Finding:
    """channel_binding=require: every login that is not bound fails, in libpq's words."""
    required = "channel_binding=require in the connection string"
    if client_sslmode == "disable":
        return _unbound(
            f"{required} with sslmode=disable", "channel binding required, but SSL not in use"
        )
    if binding.digest is None:
        return _unbound(
            f"{required}, and libpq cannot bind to this certificate ({_why_unbound(binding)})",
            binding.error or "",
            f"; {_BINDING_FIX}",
        )
    reply = login.reply if login is not None else None
    if login is None or reply is None or reply.kind is not StartupReplyKind.AUTHENTICATION:
        later = (
            ""
            if login is not None
            else (
                "; whether the server offers the user SCRAM-SHA-256-PLUS only --check-auth can tell"
            )
        )
        return Finding.ok(
            Check.CHANNEL_BINDING,
            f"{required}: libpq binds SCRAM logins with {binding.digest}{later}",
        )
    who = _who(login.login.user, login.login.database)
    if reply.auth_code == AuthCode.SASL and _PLUS in reply.mechanisms:
        return Finding.ok(
            Check.CHANNEL_BINDING,
            f"{required}: the server offers {who} {_PLUS}, which libpq binds with {binding.digest}",
        )
    if reply.auth_code == AuthCode.SASL:
        return _unbound(
            f"{required}, but the server offers {who} SCRAM without channel binding",
            "channel binding is required, but server did not offer an authentication "
            "method that supports channel binding",
        )
    if reply.auth_code == AuthCode.OK:
        return _unbound(
            f"{required}, but the server lets {who} in without SCRAM",
            "channel binding required, but server authenticated client without channel binding",
        )
    asked = _asks_for(reply) or _unknown_method(reply)
    return _unbound(
        f"{required}, but the server asks {who} for {asked}",
        "channel binding required but not supported by server's authentication request",
    )


def _unbound(what: str, libpq_says: str, fix: str = "") -> Finding:
    return Finding(
        Check.CHANNEL_BINDING,
        f'{what}: every login of these clients fails ("{libpq_says}"){fix}',
        "channel binding impossible",
        State.CRITICAL,
    )
