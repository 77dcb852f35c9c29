"""The pure DANE rules: options, usable records, and what no live resolver here answers."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from check_pg_tls.certs import facts
from check_pg_tls.dane import dane_findings, parse_dns_server, record_for
from check_pg_tls.model import DaneSettings, TlsaAnswer, TlsaRecord
from testbed import pki

NOW = dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
    ],
)
def test_dns_server_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_dns_server(text) == expected


@pytest.mark.parametrize(
    "text", ["resolver.example", "127.0.0.1:", "127.0.0.1:70000", "[::1", "[::1]x", ""]
)
def test_bad_dns_servers(text: str) -> None:
    with pytest.raises(ValueError, match="invalid DNS server"):
        parse_dns_server(text)


def test_the_record_to_publish_is_the_keys_sha256() -> None:
    leaf = pki.make_leaf(None).cert
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    record = record_for(leaf.public_bytes(Encoding.DER))
    assert str(record) == f"3 1 1 {hashlib.sha256(spki).hexdigest()}"
    assert record.usable


@pytest.mark.parametrize(
    ("usage", "selector", "mtype", "length", "usable"),
    [
        (3, 1, 1, 32, True),
        (2, 0, 2, 64, True),
        (3, 1, 0, 91, True),
        (4, 1, 1, 32, False),
        (3, 2, 1, 32, False),
        (3, 1, 3, 32, False),
        (3, 1, 1, 31, False),
        (3, 1, 2, 32, False),
        (3, 1, 0, 0, False),
    ],
)
def test_unusable_records(usage: int, selector: int, mtype: int, length: int, usable: bool) -> None:
    assert TlsaRecord(usage, selector, mtype, b"x" * length).usable is usable


def _judge(answer: TlsaAnswer) -> dict[str, tuple[str | None, str, str]]:
    leaf = pki.make_leaf(None, dns=("db.example.test",)).cert
    findings = dane_findings(
        answer, (facts(leaf),), None, "db.example.test", 5432, NOW, DaneSettings()
    )
    return {f.check: (f.problem, f.detail, f.severity.text) for f in findings}


def test_a_resolver_off_loopback_is_named_with_a_warning() -> None:
    answer = TlsaAnswer(
        "_5432._tcp.db.example.test", "192.0.2.53:53", "/etc/resolv.conf", "NXDOMAIN", True
    )
    problem, detail, _ = _judge(answer)["dane_resolver"]
    assert problem is None
    assert detail == (
        "resolver 192.0.2.53:53 (/etc/resolv.conf) answered NXDOMAIN with AD set: it vouches "
        "for DNSSEC validation; it is not on loopback: its AD bit is only as trustworthy as "
        "the network path to it (run a validating resolver on this host, or give --dns-server)"
    )


def test_servfail_without_a_reason_still_says_bogus() -> None:
    answer = TlsaAnswer("_5432._tcp.db.example.test", "127.0.0.1:53", "--dns-server", "SERVFAIL")
    problem, _, severity = _judge(answer)["dane"]
    assert severity == "critical"
    assert problem == (
        "TLSA records for _5432._tcp.db.example.test are bogus: resolver 127.0.0.1:53 answered "
        "SERVFAIL (no reason given: DNSSEC validation failed, or the zone's servers did not "
        "answer); DANE clients cannot connect"
    )


def test_a_refusing_resolver_is_unknown() -> None:
    answer = TlsaAnswer("_5432._tcp.db.example.test", "127.0.0.1:53", "--dns-server", "REFUSED")
    problem, _, severity = _judge(answer)["dane"]
    assert severity == "unknown"
    assert problem == (
        "cannot check DANE: resolver 127.0.0.1:53 answered REFUSED to the TLSA query for "
        "_5432._tcp.db.example.test"
    )


def test_control_characters_from_the_resolver_are_escaped() -> None:
    answer = TlsaAnswer(
        "_5432._tcp.db.example.test",
        "127.0.0.1:53",
        "--dns-server",
        "SERVFAIL",
        extended_errors=("EDE 6 DNSSEC BOGUS: evil\nPG_TLS OK",),
    )
    problem, _, _ = _judge(answer)["dane"]
    assert problem is not None and "\n" not in problem


def test_an_owner_name_too_long_for_dns_is_not_blamed_on_a_resolver() -> None:
    from check_pg_tls.tlsa_lookup import lookup_tlsa

    # 253 characters: a valid host name, but _5432._tcp. in front exceeds
    # DNS's 255 octets. Nothing is sent; no resolver is named.
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    answer = lookup_tlsa(f"_5432._tcp.{name}", ("127.0.0.1", 9), 2)
    assert answer.rcode is None and answer.resolver == "none"
    assert answer.failure == f"_5432._tcp.{name} is no DNS name: A DNS name is > 255 octets long."
