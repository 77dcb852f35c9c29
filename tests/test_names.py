"""Host name checking with libpq's ``sslmode=verify-full`` rules (PostgreSQL 14+).

Names are read from the certificate's DER in order, as libpq reads them; the
first dNSName or iPAddress that matches or is malformed decides.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtensionOID, NameOID

from check_pg_tls.certs import CertFacts, facts
from check_pg_tls.names import (
    DNS_NAME,
    IP_ADDRESS,
    CertNames,
    check_name,
    name_matches,
    read_names,
)
from testbed.pki import Issued, make_leaf, make_root

ROOT = make_root()


def host_matches_certificate(cert: CertFacts, host: str) -> bool:
    return check_name(cert.names, host).matches


def leaf(dns: Sequence[str] = (), ips: Sequence[str] = (), cn: str | None = None) -> CertFacts:
    return facts(make_leaf(ROOT, dns=dns, ips=ips, common_name=cn).cert)


def hand_made(subject: x509.Name, san: Sequence[x509.GeneralName], issuer: Issued) -> CertFacts:
    """A certificate testbed.pki cannot make (unusual encodings)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return facts(builder.sign(issuer.key, hashes.SHA256()))


# --- name_matches: one certificate name against the host ---------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        pytest.param("db.example.com", "db.example.com", True, id="exact"),
        pytest.param("DB.Example.COM", "db.example.com", True, id="case-insensitive-pattern"),
        pytest.param("db.example.com", "DB.EXAMPLE.COM", True, id="case-insensitive-host"),
        pytest.param("db.example.com", "db.example.org", False, id="different-name"),
        pytest.param("db.example.com", "db.example.com.", False, id="trailing-dot-differs"),
        pytest.param("*.example.com", "a.example.com", True, id="wildcard-one-label"),
        pytest.param("*.example.com", "A.EXAMPLE.COM", True, id="wildcard-case-insensitive"),
        pytest.param("*.Example.Com", "a.example.com", True, id="wildcard-suffix-case"),
        pytest.param("*.example.com", "a.b.example.com", False, id="wildcard-not-two-labels"),
        pytest.param("*.example.com", "example.com", False, id="wildcard-not-zero-labels"),
        pytest.param("*.example.com", ".example.com", False, id="wildcard-not-empty-label"),
        pytest.param("*.example.com", "a.example.org", False, id="wildcard-other-suffix"),
        pytest.param("*.example.com", "aexample.com", False, id="wildcard-needs-the-dot"),
        pytest.param("f*.example.com", "foo.example.com", False, id="partial-wildcard-is-literal"),
        pytest.param("f*.example.com", "f*.example.com", True, id="partial-wildcard-itself"),
        pytest.param("*oo.example.com", "foo.example.com", False, id="wildcard-prefix-literal"),
        pytest.param("a.*.example.com", "a.b.example.com", False, id="inner-wildcard-literal"),
        pytest.param("*", "localhost", False, id="bare-star"),
        pytest.param("*.", "a.", False, id="star-dot-alone"),
        pytest.param("192.0.2.10", "192.0.2.10", True, id="ip-as-text"),
    ],
)
def test_name_matches(pattern: str, host: str, expected: bool) -> None:
    assert name_matches(pattern, host) is expected


# --- host_matches_certificate: which names are consulted ---------------------


@pytest.mark.parametrize(
    ("dns", "ips", "cn", "host", "expected"),
    [
        # dNSName SANs
        pytest.param(["db.example.com"], [], None, "db.example.com", True, id="dns-san"),
        pytest.param(["DB.EXAMPLE.COM"], [], None, "db.example.com", True, id="dns-san-case"),
        pytest.param(
            ["x.example.com", "db.example.com"], [], None, "db.example.com", True, id="any-dns-san"
        ),
        pytest.param(["x.example.com"], [], None, "db.example.com", False, id="dns-san-mismatch"),
        pytest.param(["*.example.com"], [], None, "db.example.com", True, id="dns-san-wildcard"),
        pytest.param(
            ["*.example.com"],
            [],
            None,
            "a.db.example.com",
            False,
            id="dns-san-wildcard-one-label-only",
        ),
        # Common Name only without dNSName SANs
        pytest.param([], [], "db.example.com", "db.example.com", True, id="cn-without-san"),
        pytest.param([], [], "DB.example.com", "db.example.com", True, id="cn-case"),
        pytest.param([], [], "*.example.com", "db.example.com", True, id="cn-wildcard"),
        pytest.param([], [], "x.example.com", "db.example.com", False, id="cn-mismatch"),
        pytest.param(
            ["x.example.com"],
            [],
            "db.example.com",
            "db.example.com",
            False,
            id="cn-ignored-beside-dns-san",
        ),
        pytest.param(
            [],
            ["192.0.2.10"],
            "db.example.com",
            "db.example.com",
            True,
            id="cn-used-beside-only-ip-san",
        ),
        pytest.param([], [], None, "db.example.com", False, id="no-names-at-all"),
        pytest.param(
            [], ["192.0.2.10"], None, "db.example.com", False, id="dns-host-never-matches-ip-san"
        ),
        # IP-literal hosts
        pytest.param([], ["192.0.2.10"], None, "192.0.2.10", True, id="ipv4-san"),
        pytest.param([], ["192.0.2.10"], None, "192.0.2.11", False, id="ipv4-san-mismatch"),
        pytest.param([], ["192.0.2.9", "192.0.2.10"], None, "192.0.2.10", True, id="any-ip-san"),
        pytest.param([], ["2001:db8::1"], None, "2001:db8::1", True, id="ipv6-san"),
        pytest.param(
            [],
            ["2001:db8::1"],
            None,
            "2001:DB8:0:0:0:0:0:1",
            True,
            id="ipv6-san-by-address-not-text",
        ),
        pytest.param([], ["2001:db8::1"], None, "2001:db8::2", False, id="ipv6-san-mismatch"),
        pytest.param(
            [], ["::ffff:192.0.2.10"], None, "192.0.2.10", False, id="ipv4-host-not-ipv4-mapped-san"
        ),
        pytest.param(["192.0.2.10"], [], None, "192.0.2.10", True, id="ip-host-dns-san-as-text"),
        pytest.param(
            ["db.example.com"],
            ["192.0.2.99"],
            None,
            "192.0.2.10",
            False,
            id="ip-host-no-matching-san",
        ),
        pytest.param([], [], "192.0.2.10", "192.0.2.10", True, id="ip-host-cn-without-san"),
        pytest.param(
            ["db.example.com"],
            [],
            "192.0.2.10",
            "192.0.2.10",
            True,
            id="ip-host-cn-used-beside-only-dns-san",
        ),
        pytest.param(
            [],
            ["192.0.2.99"],
            "192.0.2.10",
            "192.0.2.10",
            False,
            id="ip-host-cn-ignored-beside-ip-san",
        ),
        pytest.param(
            [],
            ["2001:db8::99"],
            "2001:db8::1",
            "2001:db8::1",
            False,
            id="ipv6-host-cn-ignored-beside-ip-san",
        ),
    ],
)
def test_host_matches_certificate(
    dns: list[str], ips: list[str], cn: str | None, host: str, expected: bool
) -> None:
    assert host_matches_certificate(leaf(dns, ips, cn), host) is expected


def test_self_signed_leaf_is_matched_the_same_way() -> None:
    snakeoil = facts(make_leaf(None, dns=["db.example.com"]).cert)
    assert host_matches_certificate(snakeoil, "db.example.com")
    assert not host_matches_certificate(snakeoil, "other.example.com")


# --- corners where a naive implementation departs from libpq --------------


def test_inet_aton_shorthand_host_matches_its_ip_san() -> None:
    assert host_matches_certificate(leaf(ips=["127.0.0.1"]), "127.1")


def test_inet_aton_shorthand_host_ignores_cn_beside_ip_san() -> None:
    assert not host_matches_certificate(leaf(ips=["10.0.0.1"], cn="127.1"), "127.1")


def test_bmpstring_common_name_is_refused_like_libpq() -> None:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "db.example.com", _type=_ASN1Type.BMPString)]
    )
    assert not host_matches_certificate(hand_made(subject, [], ROOT), "db.example.com")


def test_case_folding_is_ascii_only() -> None:
    assert not name_matches("\u212a.example.com", "k.example.com")
    assert not host_matches_certificate(leaf(cn="\u212a.example.com"), "k.example.com")


def test_address_range_ip_san_does_not_let_the_cn_match() -> None:
    san = [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "10.0.0.1")])
    assert not host_matches_certificate(hand_made(subject, san, ROOT), "10.0.0.1")


# --- SAN entries in order, read from the DER ----------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


def raw_san_cert(entries: bytes, cn: str | None = "db.test", copies: int = 1) -> bytes:
    """A DER certificate whose SAN holds exactly ``entries`` (GeneralName TLVs).

    With ``copies=2`` the SAN appears twice: cryptography refuses to write
    that, so a same-sized stand-in extension (OID 1.2.3.4) is renamed in
    the DER afterwards. The signature breaks; reading names does not care.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else []
    value = _tlv(0x30, entries)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ROOT.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, value), False
        )
    )
    stand_in = x509.ObjectIdentifier("1.2.3.4")
    if copies == 2:
        builder = builder.add_extension(x509.UnrecognizedExtension(stand_in, value), False)
    der = builder.sign(ROOT.key, hashes.SHA256()).public_bytes(Encoding.DER)
    return der.replace(_tlv(0x06, bytes.fromhex("2a0304")), _tlv(0x06, bytes.fromhex("551d11")))


def test_nul_in_an_earlier_dns_name_makes_libpq_refuse() -> None:
    entries = _tlv(0x82, b"bad\x00.test") + _tlv(0x82, b"db.test")
    check = check_name(read_names(raw_san_cert(entries)), "db.test")
    assert check.matches is False
    assert check.malformed == (
        "subjectAltName entry #1 is a DNS name with an embedded NUL, which libpq refuses"
    )


def test_nul_after_the_matching_name_is_never_reached() -> None:
    entries = _tlv(0x82, b"db.test") + _tlv(0x82, b"bad\x00.test")
    assert check_name(read_names(raw_san_cert(entries)), "db.test") == (True, None)


def test_ip_address_of_invalid_length_before_the_match_makes_libpq_refuse() -> None:
    entries = _tlv(0x87, b"\x7f\x00\x00\x01\x01") + _tlv(0x82, b"db.test")
    check = check_name(read_names(raw_san_cert(entries)), "db.test")
    assert check.matches is False
    assert check.malformed is not None
    assert "IP address of invalid length 5" in check.malformed


def test_x400_address_is_skipped_as_libpq_skips_it() -> None:
    entries = _tlv(0xA3, _tlv(0x30, b"")) + _tlv(0x82, b"db.test")
    der = raw_san_cert(entries)
    with pytest.raises(x509.UnsupportedGeneralNameType):
        _ = x509.load_der_x509_certificate(der).extensions
    assert check_name(read_names(der), "db.test") == (True, None)


def test_uri_and_email_only_let_the_common_name_decide() -> None:
    entries = _tlv(0x86, b"postgresql://db.test") + _tlv(0x81, b"dba@db.test")
    names = read_names(raw_san_cert(entries, cn="db.test"))
    assert check_name(names, "db.test").matches
    assert not check_name(names, "other.test").matches


def test_duplicate_san_extensions_count_as_none() -> None:
    # OpenSSL's X509_get_ext_d2i gives nothing for a duplicated extension,
    # so libpq falls back to the Common Name.
    der = raw_san_cert(_tlv(0x82, b"other.test"), cn="db.test", copies=2)
    names = read_names(der)
    assert names.san is None
    assert check_name(names, "db.test").matches


def test_common_name_is_the_first_one() -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "first.test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "db.test"),
        ]
    )
    cert = hand_made(subject, [], ROOT)
    assert cert.names.common_name == b"first.test"
    assert not host_matches_certificate(cert, "db.test")
    assert host_matches_certificate(cert, "first.test")


@pytest.mark.parametrize(
    ("san", "host", "expected"),
    [
        pytest.param([(DNS_NAME, b"db.test")], "DB.TEST", True, id="case"),
        pytest.param([(IP_ADDRESS, bytes(16))], "::", True, id="ipv6-any"),
        pytest.param([(IP_ADDRESS, b"")], "db.test", False, id="empty-ip-is-malformed"),
        pytest.param([(DNS_NAME, b"*.test")], "db.test", True, id="wildcard"),
        pytest.param([(DNS_NAME, b"db.test.")], "db.test", False, id="trailing-dot"),
    ],
)
def test_check_name_on_raw_entries(san: list[tuple[int, bytes]], host: str, expected: bool) -> None:
    assert check_name(CertNames(tuple(san), None), host).matches is expected
