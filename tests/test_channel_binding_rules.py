"""libpq's channel-binding digest, asked of OpenSSL, and the wording of the findings.

tests/test_channel_binding.py proves the decision against psql; these cover
what psql cannot be shown (a certificate PostgreSQL will not load, a host
without libcrypto) and each branch of the judgement.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from check_pg_tls import channel_binding
from check_pg_tls.channel_binding import certificate_hash
from check_pg_tls.model import CertificateHash, Login, LoginAnswer, State
from check_pg_tls.posture import channel_binding_finding
from check_pg_tls.protocol import AuthCode, StartupReply, StartupReplyKind
from testbed import crafted
from testbed.crafted import Sig

_EC = crafted.issue("EC CA", extensions=crafted.CA_EXTENSIONS)
_RSA = crafted.issue("RSA CA", key=crafted.rsa_key(2048, 3), extensions=crafted.CA_EXTENSIONS)
_ED25519 = crafted.issue(
    "Ed25519 CA", key=ed25519.Ed25519PrivateKey.generate(), extensions=crafted.CA_EXTENSIONS
)
_ED448 = crafted.issue(
    "Ed448 CA", key=ed448.Ed448PrivateKey.generate(), extensions=crafted.CA_EXTENSIONS
)

# (issuer, signature): the digest libpq binds with, or its error.
SIGNATURES = {
    "ecdsa-sha256": (_EC, Sig(), "SHA256"),
    "ecdsa-sha512": (_EC, Sig("sha512"), "SHA512"),
    "rsa-sha224": (_RSA, Sig("sha224"), "SHA224"),
    "rsa-pss-sha384": (_RSA, Sig("sha384", pss=True), "SHA384"),
    # RFC 5929: MD5 and SHA-1 become SHA-256, also inside RSA-PSS.
    "rsa-md5": (_RSA, Sig("md5"), "SHA256"),
    "rsa-sha1": (_RSA, Sig("sha1"), "SHA256"),
    "rsa-pss-sha1": (_RSA, Sig("sha1", pss=True), "SHA256"),
    "ed25519": (_ED25519, Sig(), "could not find digest for NID UNDEF"),
    "ed448": (_ED448, Sig(), "could not find digest for NID UNDEF"),
    "unknown-algorithm": (
        _EC,
        Sig(algorithm_oid="1.3.6.1.4.1.55555.1"),
        "could not determine server certificate signature algorithm",
    ),
}


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_openssl_decides_as_libpq_does(name: str) -> None:
    issuer, sig, expected = SIGNATURES[name]
    found = certificate_hash(crafted.issue("db.test", issuer, sig=sig).der)
    assert found.decided_by == "openssl"
    assert (found.digest or found.error) == expected


def test_signed_with_names_the_issuers_key_type() -> None:
    assert certificate_hash(crafted.issue("db.test", _ED25519).der).signed_with == "ED25519"
    # An Ed25519 key in the leaf, signed with ECDSA: bound with SHA-256.
    leaf = crafted.issue("db.test", _EC, key=ed25519.Ed25519PrivateKey.generate())
    assert certificate_hash(leaf.der).digest == "SHA256"


def test_bytes_that_are_no_certificate() -> None:
    assert certificate_hash(b"\x30\x03\x02\x01\x00").error == (
        "could not determine server certificate signature algorithm"
    )


def test_without_libcrypto_cryptography_stands_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_binding, "libcrypto", lambda: "no libcrypto here")
    for name in ("ecdsa-sha256", "rsa-pss-sha384", "rsa-sha1", "ed25519", "unknown-algorithm"):
        issuer, sig, expected = SIGNATURES[name]
        found = certificate_hash(crafted.issue("db.test", issuer, sig=sig).der)
        assert (found.digest or found.error) == expected, name
        assert found.decided_by == "cryptography (no libcrypto here)"


_BROKEN = CertificateHash(None, "could not find digest for NID UNDEF", "ED25519")


def _asked(code: int, *mechanisms: str) -> LoginAnswer:
    reply = StartupReply(StartupReplyKind.AUTHENTICATION, auth_code=code, mechanisms=mechanisms)
    return LoginAnswer(Login("app", "app"), reply)


@pytest.mark.parametrize(
    ("login", "severity", "says"),
    [
        (None, "warning", "SCRAM password logins with channel_binding=prefer"),
        (_asked(AuthCode.SASL, "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"), "critical", "offers"),
        (_asked(AuthCode.SASL, "SCRAM-SHA-256"), "ok", "does not offer SCRAM-SHA-256-PLUS"),
        # Another user's pg_hba.conf line may still ask for SCRAM.
        (_asked(AuthCode.MD5_PASSWORD), "warning", "SCRAM password logins"),
        (_asked(AuthCode.OK), "warning", "SCRAM password logins"),
        (_asked(AuthCode.SASL, "OAUTHBEARER"), "warning", "SCRAM password logins"),
        (LoginAnswer(Login("app", "app"), None, "no answer"), "warning", "SCRAM password"),
    ],
)
def test_what_the_server_offers_decides(
    login: LoginAnswer | None, severity: str, says: str
) -> None:
    finding = channel_binding_finding(_BROKEN, login, State.WARNING)
    if severity == "ok":
        assert finding.problem is None
        assert says in finding.detail
    else:
        assert finding.problem is not None and says in finding.problem
        assert finding.severity.text == severity
        assert "use a certificate signed by an ECDSA or RSA key" in finding.problem


def test_a_digest_is_no_problem() -> None:
    finding = channel_binding_finding(CertificateHash("SHA384"), None, State.CRITICAL)
    assert finding.problem is None
    assert finding.detail == "SCRAM channel binding hashes the certificate with SHA384"


def test_names_from_the_command_line_are_escaped_in_the_login_finding() -> None:
    from check_pg_tls.model import Observation
    from check_pg_tls.posture import login_finding

    answer = LoginAnswer(
        Login("evil\x1b[31m|x", "db"), StartupReply(StartupReplyKind.AUTHENTICATION, 0)
    )
    observation = Observation("127.0.0.1", (), "TLSv1.3", "x", None, 0.0, 0.0, login=answer)
    finding = login_finding(observation, State.WARNING)
    assert finding.problem is not None
    assert "\x1b" not in finding.problem and "|" not in finding.problem
