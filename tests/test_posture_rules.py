"""The pure posture judgements, case by case (the real-server tests cover the paths)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from check_pg_tls.certs import facts
from check_pg_tls.model import PlaintextAnswer, State
from check_pg_tls.posture import (
    key_strength_finding,
    plaintext_finding,
    reload_finding,
    tls_version_finding,
)
from check_pg_tls.protocol import StartupReply, StartupReplyKind
from testbed import pki


@pytest.mark.parametrize(
    ("version", "minimum", "problem"),
    [
        ("TLSv1.3", "TLSv1.2", False),
        ("TLSv1.2", "TLSv1.2", False),
        ("TLSv1.1", "TLSv1.2", True),
        ("TLSv1", "TLSv1.1", True),
        ("TLSv1.2", "TLSv1.3", True),
        ("TLSv1", "TLSv1", False),
    ],
)
def test_tls_version_against_minimum(version: str, minimum: str, problem: bool) -> None:
    assert (tls_version_finding(version, minimum).problem is not None) is problem


def _self_signed_with(curve: ec.EllipticCurve) -> x509.Certificate:
    key = ec.generate_private_key(curve)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db.test")])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_small_ec_key_is_a_warning() -> None:
    try:
        cert = _self_signed_with(ec.SECP224R1())
    except UnsupportedAlgorithm as exc:  # an OpenSSL built without the curve
        pytest.skip(f"secp224r1 unavailable: {exc}")
    finding = key_strength_finding(facts(cert), 2048, 256)
    assert finding.severity is State.WARNING
    assert finding.problem == "certificate has a weak EC secp224r1 key of 224 bits (minimum 256)"


def test_ec_p256_and_p384_are_fine() -> None:
    # Named and measured, not merely without a problem: a key of a type the
    # check does not know has no problem either.
    for curve, bits in ((ec.SECP256R1(), 256), (ec.SECP384R1(), 384)):
        finding = key_strength_finding(facts(_self_signed_with(curve)), 2048, 256)
        assert finding.problem is None
        assert finding.detail == f"EC {curve.name} key of {bits} bits"
    finding = key_strength_finding(facts(_self_signed_with(ec.SECP384R1())), 2048, 521)
    assert finding.problem == "certificate has a weak EC secp384r1 key of 384 bits (minimum 521)"


def test_disk_certificate_older_than_served_is_named_differently() -> None:
    inter = pki.make_intermediate(pki.make_root())
    served = facts(pki.make_leaf(inter, days_after=90).cert)
    older = pki.make_leaf(inter, days_after=30).cert
    finding = reload_finding(served, older, "/etc/ssl/db.crt")
    assert finding.problem is not None
    assert finding.problem.startswith("server serves a different certificate (expires ")
    assert "reload" not in finding.problem
    assert reload_finding(served, served.certificate, "/etc/ssl/db.crt").problem is None


@pytest.mark.parametrize(
    ("reply", "severity", "problem_starts"),
    [
        (
            StartupReply(StartupReplyKind.AUTHENTICATION, auth_code=0),
            "warning",
            "server accepts unencrypted logins for user nagios",
        ),
        (
            StartupReply(StartupReplyKind.ERROR, sqlstate="28000"),
            None,
            "server refuses unencrypted logins for user nagios",
        ),
        (
            StartupReply(StartupReplyKind.ERROR, sqlstate="53300"),
            "unknown",
            "cannot tell whether unencrypted logins are allowed: the server answered with "
            "SQLSTATE 53300",
        ),
        (StartupReply(StartupReplyKind.ERROR), "unknown", "cannot tell"),
        (None, "unknown", "cannot tell whether unencrypted logins are allowed: refused"),
    ],
)
def test_plaintext_answers(
    reply: StartupReply | None, severity: str | None, problem_starts: str
) -> None:
    finding = plaintext_finding(
        PlaintextAnswer("nagios", "nagios", reply, "refused"), State.WARNING
    )
    if severity is None:
        # A refusal is what the check hopes for: no problem, and said so.
        assert finding.problem is None
        assert finding.detail == problem_starts
        return
    assert finding.problem is not None and finding.problem.startswith(problem_starts)
    assert finding.severity.text == severity
