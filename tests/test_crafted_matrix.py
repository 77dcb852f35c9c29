"""A crafted-chain matrix: libpq (psql) decides, the plugin must agree.

Each case is a chain a server sends and a root file a client trusts, made to
probe one rule of path validation as OpenSSL applies it for libpq (RFC 5280
with OpenSSL's own leniencies, security level 2), or one of libpq's rules for
names. One PostgreSQL 15 cluster serves the cases in turn: a reload swaps the
chain, and a raw handshake confirms the new leaf is served before the case
runs.

For every case, host and sslmode, psql's outcome is pinned first (so a broken
oracle cannot pass), then the plugin must accept exactly when psql connects:
exit 0, or 1 for a warning libpq does not care about (the root file supplied
a missing intermediate, say). A plugin that does not accept must say
CRITICAL; UNKNOWN is allowed only when OpenSSL cannot load the root file.

libpq 15 reports most chain failures as just "certificate verify failed";
each failing item also records OpenSSL's reason (``openssl s_client``), shown
in assertion messages and, with ``--junitxml`` and ``-o junit_family=xunit1``,
as properties next to psql's error and the plugin's status line.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import AuthorityInformationAccessOID

from testbed import pki
from testbed.crafted import (
    CA_EXTENSIONS,
    CLIENT_AUTH,
    SERVER_AUTH,
    Cert,
    Edit,
    Ext,
    PrivateKey,
    Sig,
    add_extension,
    bc,
    bit_string,
    duplicate_extension,
    ec_key,
    edit_extensions,
    eku,
    explicit_p256_spki,
    integer,
    issue,
    ku,
    leaf_extensions,
    load,
    name,
    octets,
    oid,
    openssl_trustout,
    pem,
    private_key_pem,
    raw,
    rsa_key,
    san,
    seq,
    set_public_key_info,
    set_serial,
    set_subject,
    set_validity,
    set_version,
    tlv,
    trusted_pem,
)
from testbed.pgcluster import Workspace, weak_openssl_conf

from .conftest import PsqlAttempt, Run, psql_attempt, run_plugin

HOST = "db.test"
SHA256 = Sig()
ANY_EKU = "2.5.29.37.0"


# ------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Served:
    """What one case puts on the server and in the client's root file."""

    #: What the server sends, leaf first; its key is the leaf's.
    chain: tuple[Cert, ...]
    roots: bytes


@dataclass(frozen=True)
class Check:
    host: str
    sslmode: str
    #: Does psql connect? Established by running it, and understood.
    psql: bool


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], Served] = field(repr=False)
    checks: tuple[Check, ...]
    #: OpenSSL cannot load the root file at all: the plugin may say UNKNOWN.
    unloadable_roots: bool = False
    #: No client completes a handshake with this server (the certificate
    #: list is too big, say): the poll waits for this OpenSSL error instead
    #: of the new leaf.
    poll_error: str | None = None


CASES: dict[str, Case] = {}


def case(
    case_id: str,
    full: bool,
    *,
    ca: bool | None = None,
    host: str = HOST,
    hosts: Mapping[str, bool] | None = None,
    require: bool | None = None,
    unloadable_roots: bool = False,
    poll_error: str | None = None,
) -> Callable[[Callable[[], Served]], Callable[[], Served]]:
    """Register a case: psql's outcome under verify-full with ``host``, under
    verify-ca (``ca``) and require with the root file (``require``), and under
    verify-full for other ``hosts``."""

    def register(build: Callable[[], Served]) -> Callable[[], Served]:
        assert case_id not in CASES, case_id
        checks = [Check(host, "verify-full", full)]
        if ca is not None:
            checks.append(Check(host, "verify-ca", ca))
        if require is not None:
            checks.append(Check(host, "require", require))
        checks += [Check(other, "verify-full", ok) for other, ok in (hosts or {}).items()]
        CASES[case_id] = Case(case_id, build, tuple(checks), unloadable_roots, poll_error)
        return build

    return register


# Building blocks: a root, an intermediate and a leaf as public CAs make them.


def root(cn: str = "Crafted Root", **kw: object) -> Cert:
    kw.setdefault("extensions", CA_EXTENSIONS)
    kw.setdefault("days", (-30, 3650))
    return issue(cn, None, **kw)  # type: ignore[arg-type]


def inter(issuer: Cert, cn: str = "Crafted Intermediate", **kw: object) -> Cert:
    kw.setdefault("extensions", CA_EXTENSIONS)
    kw.setdefault("days", (-30, 1825))
    return issue(cn, issuer, **kw)  # type: ignore[arg-type]


def leaf(issuer: Cert | None, *names: str, cn: str | None = None, **kw: object) -> Cert:
    kw.setdefault("extensions", leaf_extensions(*(names or (HOST,))))
    return issue(cn, issuer, **kw)  # type: ignore[arg-type]


def pems(*certs: Cert) -> bytes:
    return b"".join(c.pem for c in certs)


def swap(base: Sequence[Ext], *new: Ext) -> tuple[Ext, ...]:
    """``base`` with each of ``new`` replacing the extension of its type (or added)."""
    replaced = {value.oid for value, _ in new}
    return (*(e for e in base if e[0].oid not in replaced), *new)


def drop(base: Sequence[Ext], *kinds: type[x509.ExtensionType]) -> tuple[Ext, ...]:
    return tuple(e for e in base if not isinstance(e[0], kinds))


LEAF = leaf_extensions(HOST)


def standard(
    root_kw: Mapping[str, object] | None = None,
    inter_kw: Mapping[str, object] | None = None,
    leaf_kw: Mapping[str, object] | None = None,
) -> Served:
    """root <- intermediate <- leaf; the server sends leaf and intermediate."""
    r = root(**(root_kw or {}))
    i = inter(r, **(inter_kw or {}))
    lf = leaf(i, **(leaf_kw or {}))
    return Served((lf, i), r.pem)


def with_leaf(**kw: object) -> Served:
    return standard(leaf_kw=kw)


def with_inter(**kw: object) -> Served:
    return standard(inter_kw=kw)


def with_root(**kw: object) -> Served:
    return standard(root_kw=kw)


def leaf_only(*extensions: Ext, cn: str | None = None, **kw: object) -> Served:
    """The standard chain with a leaf of exactly these extensions."""
    return with_leaf(extensions=extensions, cn=cn, **kw)


def crafted_name(*attributes: tuple[str, int, bytes]) -> bytes:
    """A Name as DER from (OID, string tag, bytes): one attribute per RDN."""
    rdns = [tlv(0x31, seq(oid(o), tlv(tag, value))) for o, tag, value in attributes]
    return seq(*rdns)


ORG = ("2.5.4.10", 0x0C, b"check_pg_tls crafted")
CN = "2.5.4.3"


def san_raw(*general_names: bytes, critical: bool = False) -> Ext:
    return raw("2.5.29.17", seq(*general_names), critical)


def gn_dns(value: bytes) -> bytes:
    return tlv(0x82, value)


def gn_ip(value: bytes) -> bytes:
    return tlv(0x87, value)


# x400Address [3] ORAddress: built-in-standard-attributes with a country name.
GN_X400 = tlv(0xA3, seq(tlv(0x61, tlv(0x13, b"US"))))

NS_CERT_TYPE = "2.16.840.1.113730.1.1"
# Netscape certificate type bits (named BIT STRING: trailing zero bits dropped).
NS_CLIENT = bit_string(b"\x80", 7)
NS_SERVER = bit_string(b"\x40", 6)
NS_SSL_CA = bit_string(b"\x04", 2)
NS_EMAIL_CA = bit_string(b"\x02", 1)


def nc(
    permitted: Sequence[x509.GeneralName] | None = None,
    excluded: Sequence[x509.GeneralName] | None = None,
) -> Ext:
    return x509.NameConstraints(
        permitted_subtrees=list(permitted) if permitted else None,
        excluded_subtrees=list(excluded) if excluded else None,
    ), True


def net(text: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_network(text))


# ---------------------------------------------------------------- baseline


case(
    "baseline-ec-p256",
    True,
    ca=True,
    require=True,
    hosts={"other.test": False, "127.0.0.1": False, "DB.Test": True},
)(standard)


@case("chain-leaf-only-intermediate-in-root-file", True, ca=True)
def _() -> Served:
    # libpq trusts every certificate in the root file, intermediates too.
    s = standard()
    return Served(s.chain[:1], s.roots + s.chain[1].pem)


@case("chain-leaf-only-intermediate-missing", False, ca=False)
def _() -> Served:
    s = standard()
    return Served(s.chain[:1], s.roots)


@case("chain-root-also-sent", True, ca=True)
def _() -> Served:
    r = root()
    i = inter(r)
    lf = leaf(i)
    return Served((lf, i, r), r.pem)


@case("chain-three-levels", True, ca=True)
def _() -> Served:
    r = root()
    i1 = inter(r, "Upper Intermediate", extensions=(bc(True, 1), CA_EXTENSIONS[1]))
    i2 = inter(i1, "Lower Intermediate")
    lf = leaf(i2)
    return Served((lf, i2, i1), r.pem)


@case("chain-six-intermediates", True)
def _() -> Served:
    r = root()
    chain = [r]
    for n in range(6):
        chain.append(inter(chain[-1], f"Intermediate {n}"))
    lf = leaf(chain[-1])
    return Served((lf, *reversed(chain[1:])), r.pem)


@case("chain-intermediate-as-only-trust-anchor", False, ca=False)
def _() -> Served:
    # No partial chains: the trusted certificate must be self-signed.
    s = standard()
    return Served(s.chain, s.chain[1].pem)


@case("chain-self-signed-leaf-trusted", True, ca=True, hosts={"other.test": False})
def _() -> Served:
    lf = leaf(None)
    return Served((lf,), lf.pem)


@case("chain-self-signed-leaf-untrusted", False, ca=False)
def _() -> Served:
    return Served((leaf(None),), root().pem)


@case("chain-from-unknown-root", False, ca=False, require=False)
def _() -> Served:
    s = standard()
    return Served(s.chain, root("Crafted Root").pem)


@case("chain-order-reversed", True, ca=True)
def _() -> Served:
    r = root()
    i1 = inter(r, "Upper Intermediate")
    i2 = inter(i1, "Lower Intermediate")
    lf = leaf(i2)
    return Served((lf, i1, i2), r.pem)


@case("chain-duplicate-intermediate", True)
def _() -> Served:
    s = standard()
    return Served((*s.chain, s.chain[1]), s.roots)


@case("chain-duplicate-leaf", True)
def _() -> Served:
    s = standard()
    return Served((s.chain[0], *s.chain), s.roots)


@case("chain-extra-unrelated-certs", True, ca=True)
def _() -> Served:
    s = standard()
    other = root("Unrelated Root")
    return Served((*s.chain, inter(other, "Unrelated Intermediate"), other), s.roots)


# ------------------------------------------------ basicConstraints, pathLen


case("bc-intermediate-missing-no-ku", False, ca=False)(lambda: with_inter(extensions=()))
# OpenSSL 3 demands basicConstraints CA:TRUE of every intermediate; only the
# trust anchor may be a CA by keyUsage, nsCertType or version 1 alone.
case("bc-intermediate-missing-ku-certsign", False, ca=False)(
    lambda: with_inter(extensions=(ku("key_cert_sign", "crl_sign"),))
)
case("bc-intermediate-missing-ku-without-certsign", False)(
    lambda: with_inter(extensions=(ku("digital_signature"),))
)
case("bc-intermediate-ca-false", False, ca=False)(
    lambda: with_inter(extensions=swap(CA_EXTENSIONS, bc(False)))
)
case("bc-intermediate-noncritical", True)(
    lambda: with_inter(extensions=swap(CA_EXTENSIONS, bc(True, critical=False)))
)
# An extension OpenSSL cannot decode makes the certificate invalid: it is
# never taken as an issuer (libpq says "invalid certificate").
case("bc-intermediate-negative-pathlen", False)(
    lambda: with_inter(
        extensions=swap(CA_EXTENSIONS, raw("2.5.29.19", seq(b"\x01\x01\xff", integer(-1)), True))
    )
)


@case("bc-pathlen0-intermediate-two-below", False, ca=False)
def _() -> Served:
    r = root()
    i1 = inter(r, "Upper Intermediate", extensions=swap(CA_EXTENSIONS, bc(True, 0)))
    i2 = inter(i1, "Lower Intermediate")
    lf = leaf(i2)
    return Served((lf, i2, i1), r.pem)


@case("bc-pathlen1-intermediate-two-below", True)
def _() -> Served:
    r = root()
    i1 = inter(r, "Upper Intermediate", extensions=swap(CA_EXTENSIONS, bc(True, 1)))
    i2 = inter(i1, "Lower Intermediate", extensions=swap(CA_EXTENSIONS, bc(True, 0)))
    lf = leaf(i2)
    return Served((lf, i2, i1), r.pem)


# The trust anchor's pathLen counts as well.
case("bc-pathlen0-root-one-intermediate", False, ca=False)(
    lambda: with_root(extensions=swap(CA_EXTENSIONS, bc(True, 0)))
)


@case("bc-pathlen0-root-leaf-direct", True)
def _() -> Served:
    r = root(extensions=swap(CA_EXTENSIONS, bc(True, 0)))
    return Served((leaf(r),), r.pem)


# Nothing is demanded of a leaf's basicConstraints (no X509_STRICT).
case("bc-leaf-ca-false-with-pathlen", True)(
    lambda: leaf_only(raw("2.5.29.19", seq(integer(0)), True), *LEAF[1:])
)
case("bc-leaf-ca-true", True, ca=True)(lambda: leaf_only(bc(True), *LEAF[1:]))
case("bc-leaf-missing", True)(lambda: leaf_only(*LEAF[1:]))


@case("bc-leaf-ca-true-self-signed-trusted", True)
def _() -> Served:
    lf = leaf(None, extensions=(bc(True), ku("digital_signature", "key_cert_sign"), san(HOST)))
    return Served((lf,), lf.pem)


case("bc-root-ca-false", False, ca=False)(
    lambda: with_root(extensions=swap(CA_EXTENSIONS, bc(False)))
)
case("bc-root-missing-ku-certsign", True)(
    lambda: with_root(extensions=(ku("key_cert_sign", "crl_sign"),))
)
case("bc-root-missing-no-ku", False)(lambda: with_root(extensions=()))

# Version 1 certificates have no extensions at all.
V1 = (set_version(0), edit_extensions(lambda _: []))
case("v1-root", True, ca=True)(lambda: with_root(edits=V1))
case("v1-intermediate", False, ca=False)(lambda: with_inter(edits=V1))
case("v1-leaf-cn", True, ca=True, hosts={"other.test": False})(lambda: with_leaf(cn=HOST, edits=V1))
case("v1-leaf-with-extensions", True)(lambda: with_leaf(edits=(set_version(0),)))
case("v2-leaf-with-extensions", True)(lambda: with_leaf(edits=(set_version(1),)))

# -------------------------------------------------- keyUsage, EKU, nsCertType

# A trusted root's own purpose is checked unless the root file gives it
# explicit trust settings (OpenSSL's TRUSTED CERTIFICATE form).
case("eku-root-client-auth-only", False, ca=False)(
    lambda: with_root(extensions=(*CA_EXTENSIONS, eku(CLIENT_AUTH)))
)
case("eku-root-client-auth-only-trusted-for-server-auth", True, ca=True)(
    lambda: _root_file(
        lambda r, _: trusted_pem(r, trust=[SERVER_AUTH]),
        extensions=(*CA_EXTENSIONS, eku(CLIENT_AUTH)),
    )
)
case("eku-root-client-auth-only-trusted-certificate-no-settings", False)(
    lambda: _root_file(lambda r, _: trusted_pem(r), extensions=(*CA_EXTENSIONS, eku(CLIENT_AUTH)))
)
case("eku-root-server-auth-only", True)(
    lambda: with_root(extensions=(*CA_EXTENSIONS, eku(SERVER_AUTH)))
)
case("eku-intermediate-client-auth-only", False, ca=False)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, eku(CLIENT_AUTH)))
)
case("eku-intermediate-server-and-client-auth", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, eku(SERVER_AUTH, CLIENT_AUTH)))
)
# anyExtendedKeyUsage alone does not allow serverAuth, at any depth.
case("eku-intermediate-any-only", False)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, eku(ANY_EKU)))
)
case("eku-leaf-client-auth-only", False, ca=False)(lambda: leaf_only(*swap(LEAF, eku(CLIENT_AUTH))))
case("eku-leaf-any-only", False)(lambda: leaf_only(*swap(LEAF, eku(ANY_EKU))))
case("eku-leaf-netscape-sgc", True)(lambda: leaf_only(*swap(LEAF, eku("2.16.840.1.113730.4.1"))))
case("eku-leaf-microsoft-sgc", True)(lambda: leaf_only(*swap(LEAF, eku("1.3.6.1.4.1.311.10.3.3"))))
case("eku-leaf-absent", True)(lambda: leaf_only(*drop(LEAF, x509.ExtendedKeyUsage)))
case("eku-leaf-code-signing-and-server-auth", True)(
    lambda: leaf_only(*swap(LEAF, eku("1.3.6.1.5.5.7.3.3", SERVER_AUTH)))
)

# nsCertType (a named BIT STRING) still restricts the purpose when present.
case("nscerttype-leaf-client", False, ca=False)(
    lambda: leaf_only(*LEAF, raw(NS_CERT_TYPE, NS_CLIENT))
)
case("nscerttype-leaf-server", True)(lambda: leaf_only(*LEAF, raw(NS_CERT_TYPE, NS_SERVER)))
case("nscerttype-intermediate-ssl-ca-no-bc", False)(
    lambda: with_inter(extensions=(raw(NS_CERT_TYPE, NS_SSL_CA),))
)
case("nscerttype-intermediate-email-ca-with-bc", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, raw(NS_CERT_TYPE, NS_EMAIL_CA)))
)
# With basicConstraints, a CA's nsCertType is not consulted.
case("nscerttype-root-client-only", True)(
    lambda: with_root(extensions=(*CA_EXTENSIONS, raw(NS_CERT_TYPE, NS_CLIENT)))
)
case("nscerttype-root-ssl-ca-no-bc", True)(
    lambda: with_root(extensions=(raw(NS_CERT_TYPE, NS_SSL_CA),))
)

case("ku-intermediate-without-certsign", False, ca=False)(
    lambda: with_inter(extensions=swap(CA_EXTENSIONS, ku("digital_signature", "crl_sign")))
)
case("ku-intermediate-absent", True)(lambda: with_inter(extensions=(bc(True),)))
case("ku-root-without-certsign", False, ca=False)(
    lambda: with_root(extensions=swap(CA_EXTENSIONS, ku("crl_sign")))
)
case("ku-leaf-certsign-only", False, ca=False)(lambda: leaf_only(*swap(LEAF, ku("key_cert_sign"))))
# Any of digitalSignature, keyEncipherment, keyAgreement lets a leaf serve.
case("ku-leaf-key-encipherment-only", True)(lambda: leaf_only(*swap(LEAF, ku("key_encipherment"))))
case("ku-leaf-key-agreement-only", True)(lambda: leaf_only(*swap(LEAF, ku("key_agreement"))))
case("ku-leaf-non-repudiation-only", False)(
    lambda: leaf_only(*swap(LEAF, ku("content_commitment")))
)
case("ku-leaf-noncritical", True)(
    lambda: leaf_only(*swap(LEAF, ku("digital_signature", critical=False)))
)

# --------------------------------------------------------- name constraints

case("nc-dns-permitted-exact", True, ca=True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc([x509.DNSName(HOST)])))
)
case("nc-dns-permitted-parent", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc([x509.DNSName("test")])))
)
case("nc-dns-permitted-dot-parent", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc([x509.DNSName(".test")])))
)
case("nc-dns-permitted-dot-exact-violated", False)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc([x509.DNSName(".db.test")])))
)
case("nc-dns-permitted-violated", False, ca=False, require=False)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc([x509.DNSName("example.com")])))
)
case("nc-dns-excluded-match", False, ca=False)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc(excluded=[x509.DNSName(HOST)])))
)
case("nc-dns-excluded-upper-case", False)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc(excluded=[x509.DNSName("DB.TEST")])))
)
case("nc-dns-excluded-other", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc(excluded=[x509.DNSName("example.com")])))
)


@case("nc-dns-excluded-wildcard-san", False, host="a.db.test")
def _() -> Served:
    return standard(
        inter_kw={"extensions": (*CA_EXTENSIONS, nc(excluded=[x509.DNSName(HOST)]))},
        leaf_kw={"extensions": swap(LEAF, san("*.db.test"))},
    )


@case("nc-dns-permitted-ip-san-unconstrained", True, host="127.0.0.1")
def _() -> Served:
    return standard(
        inter_kw={"extensions": (*CA_EXTENSIONS, nc([x509.DNSName("example.com")]))},
        leaf_kw={"extensions": swap(LEAF, san("127.0.0.1"))},
    )


def _nc_ip(constraint: Ext) -> Served:
    return standard(
        inter_kw={"extensions": (*CA_EXTENSIONS, constraint)},
        leaf_kw={"extensions": swap(LEAF, san(HOST, "127.0.0.1"))},
    )


case("nc-ip-permitted-match", True, ca=True, hosts={"127.0.0.1": True})(
    lambda: _nc_ip(nc([net("127.0.0.0/8")]))
)
case("nc-ip-permitted-violated", False, ca=False, hosts={"127.0.0.1": False})(
    lambda: _nc_ip(nc([net("10.0.0.0/8")]))
)
case("nc-ip-excluded-match", False, ca=False)(lambda: _nc_ip(nc(excluded=[net("127.0.0.1/32")])))
case("nc-ip-excluded-other", True)(lambda: _nc_ip(nc(excluded=[net("10.0.0.0/8")])))
# An address constraint of the other family permits no IPv4 address.
case("nc-ipv6-permitted-ipv4-san", False)(lambda: _nc_ip(nc([net("::/0")])))
case("nc-root-dns-permitted-match", True)(
    lambda: with_root(extensions=(*CA_EXTENSIONS, nc([x509.DNSName("test")])))
)
case("nc-root-dns-permitted-violated", False, ca=False)(
    lambda: with_root(extensions=(*CA_EXTENSIONS, nc([x509.DNSName("example.com")])))
)
case("nc-root-dns-excluded-match", False, ca=False)(
    lambda: with_root(extensions=(*CA_EXTENSIONS, nc(excluded=[x509.DNSName(HOST)])))
)


@case("nc-root-ip-permitted-violated", False, ca=False)
def _() -> Served:
    return standard(
        root_kw={"extensions": (*CA_EXTENSIONS, nc([net("10.0.0.0/8")]))},
        leaf_kw={"extensions": swap(LEAF, san(HOST, "127.0.0.1"))},
    )


@case("nc-root-and-intermediate-both-permit", True)
def _() -> Served:
    return standard(
        root_kw={"extensions": (*CA_EXTENSIONS, nc([x509.DNSName("test")]))},
        inter_kw={"extensions": (*CA_EXTENSIONS, nc([x509.DNSName(HOST)]))},
    )


# Without a DNS SAN, OpenSSL holds a host-name-like CN to DNS constraints.
case("nc-cn-only-leaf-permitted-violated", False, ca=False)(
    lambda: standard(
        inter_kw={"extensions": (*CA_EXTENSIONS, nc([x509.DNSName("example.com")]))},
        leaf_kw={"cn": HOST, "extensions": drop(LEAF, x509.SubjectAlternativeName)},
    )
)
case("nc-cn-only-leaf-permitted-match", True)(
    lambda: standard(
        inter_kw={"extensions": (*CA_EXTENSIONS, nc([x509.DNSName("test")]))},
        leaf_kw={"cn": HOST, "extensions": drop(LEAF, x509.SubjectAlternativeName)},
    )
)
# A directoryName constraint applies to the leaf's subject.
case("nc-dirname-permitted-violated", False, ca=False)(
    lambda: with_inter(
        extensions=(*CA_EXTENSIONS, nc([x509.DirectoryName(name(None, "Somewhere Else"))]))
    )
)
case("nc-dirname-permitted-match", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc([x509.DirectoryName(name(None))])))
)
case("nc-email-permitted-leaf-without-email", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, nc([x509.RFC822Name("example.com")])))
)
case("nc-uri-excluded-leaf-without-uri", True)(
    lambda: with_inter(
        extensions=(*CA_EXTENSIONS, nc(excluded=[x509.UniformResourceIdentifier(HOST)]))
    )
)

# ------------------------------------------------------ critical extensions

AIA = x509.AuthorityInformationAccess(
    [
        x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://ocsp.test")
        )
    ]
)
MUST_STAPLE = x509.TLSFeature([x509.TLSFeatureType.status_request])
UNKNOWN_OID = "1.3.6.1.4.1.55555.7.1"

# OpenSSL handles critical keyUsage, EKU, basicConstraints, SAN, name and
# policy constraints, policy mappings, inhibitAnyPolicy, certificatePolicies,
# CRL distribution points, nsCertType, OCSP no-check and RFC 3779 blocks;
# any other critical extension (AIA, key identifiers, TLS feature, CT
# poison, issuerAltName, unknown OIDs), at any depth, fails the chain.
case("crit-aia-leaf", False, ca=False)(lambda: leaf_only(*LEAF, (AIA, True)))
case("noncrit-aia-leaf", True)(lambda: leaf_only(*LEAF, (AIA, False)))
case("crit-tls-feature-must-staple-leaf", False, ca=False)(
    lambda: leaf_only(*LEAF, (MUST_STAPLE, True))
)
case("noncrit-tls-feature-must-staple-leaf", True)(lambda: leaf_only(*LEAF, (MUST_STAPLE, False)))
case("crit-ct-poison-leaf", False, ca=False)(lambda: leaf_only(*LEAF, (x509.PrecertPoison(), True)))
case("crit-issuer-alt-name-leaf", False)(
    lambda: leaf_only(*LEAF, (x509.IssuerAlternativeName([x509.DNSName("ca.test")]), True))
)
case("crit-unknown-oid-leaf", False, ca=False)(
    lambda: leaf_only(*LEAF, raw(UNKNOWN_OID, b"\x05\x00", True))
)
case("noncrit-unknown-oid-leaf", True, ca=True)(
    lambda: leaf_only(*LEAF, raw(UNKNOWN_OID, b"\x05\x00"))
)
case("crit-unknown-oid-intermediate", False, ca=False)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, raw(UNKNOWN_OID, b"\x05\x00", True)))
)
case("crit-unknown-oid-root", False, ca=False)(
    lambda: with_root(extensions=(*CA_EXTENSIONS, raw(UNKNOWN_OID, b"\x05\x00", True)))
)


@case("crit-skid-leaf", False)
def _() -> Served:
    r = root()
    i = inter(r)
    key = ec_key()
    skid = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return Served((leaf(i, key=key, skid=False, extensions=(*LEAF, (skid, True))), i), r.pem)


@case("crit-akid-leaf", False)
def _() -> Served:
    r = root()
    i = inter(r)
    akid = x509.AuthorityKeyIdentifier.from_issuer_public_key(i.key.public_key())  # type: ignore[arg-type]
    return Served((leaf(i, akid=False, extensions=(*LEAF, (akid, True))), i), r.pem)


case("crit-san-leaf", True)(lambda: leaf_only(*swap(LEAF, san(HOST, critical=True))))
case("crit-eku-leaf", True)(lambda: leaf_only(*swap(LEAF, eku(SERVER_AUTH, critical=True))))
case("crit-certificate-policies-leaf", True)(
    lambda: leaf_only(
        *LEAF,
        (
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None)]
            ),
            True,
        ),
    )
)
case("crit-crl-distribution-points-leaf", True)(
    lambda: leaf_only(
        *LEAF,
        (
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("http://crl.test/ca.crl")], None, None, None
                    )
                ]
            ),
            True,
        ),
    )
)
case("crit-ocsp-nocheck-leaf", True)(lambda: leaf_only(*LEAF, (x509.OCSPNoCheck(), True)))
case("crit-policy-constraints-intermediate", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, (x509.PolicyConstraints(0, None), True)))
)
case("crit-inhibit-any-policy-intermediate", True)(
    lambda: with_inter(extensions=(*CA_EXTENSIONS, (x509.InhibitAnyPolicy(0), True)))
)
case("crit-policy-mappings-intermediate", True)(
    lambda: with_inter(
        extensions=(
            *CA_EXTENSIONS,
            raw("2.5.29.33", seq(seq(oid("2.23.140.1.2.1"), oid("1.3.6.1.4.1.55555.1"))), True),
        )
    )
)
case("crit-netscape-comment-leaf", False)(
    lambda: leaf_only(*LEAF, raw("2.16.840.1.113730.1.13", tlv(0x16, b"hello"), True))
)
# RFC 3779 IP address blocks (127.0.0.1/32) on the leaf only: OpenSSL checks
# that each certificate's resources lie within its issuer's.
case("rfc3779-ip-blocks-leaf-only", False)(
    lambda: leaf_only(
        *LEAF,
        raw(
            "1.3.6.1.5.5.7.1.7",
            seq(seq(octets(b"\x00\x01"), seq(bit_string(b"\x7f\x00\x00\x01")))),
            True,
        ),
    )
)

# ---------------------------------------------------------------- validity

case("validity-leaf-expired", False, ca=False)(lambda: with_leaf(days=(-100, -2)))
case("validity-leaf-not-yet-valid", False, ca=False)(lambda: with_leaf(days=(3, 90)))
case("validity-leaf-until-2060-generalized-time", True)(lambda: with_leaf(days=(-1, 365 * 36)))
case("validity-intermediate-expired-sent", False, ca=False)(lambda: with_inter(days=(-400, -2)))
case("validity-intermediate-not-yet-valid-sent", False)(lambda: with_inter(days=(2, 400)))
case("validity-root-expired", False, ca=False)(lambda: with_root(days=(-400, -2)))
case("validity-root-not-yet-valid", False, ca=False)(lambda: with_root(days=(2, 400)))


@case("validity-intermediate-expired-only-in-root-file", False, ca=False)
def _() -> Served:
    s = with_inter(days=(-400, -2))
    return Served(s.chain[:1], s.roots + s.chain[1].pem)


def _renewed_intermediate(expired_trusted: bool) -> Served:
    # Two copies of one intermediate (same name and key), one expired.
    r = root()
    key = ec_key()
    old = inter(r, key=key, days=(-400, -2))
    new = inter(r, key=key)
    lf = leaf(new)
    if expired_trusted:
        return Served((lf, new), r.pem + old.pem)
    return Served((lf, old), r.pem + new.pem)


# OpenSSL looks in the root file first and takes what it finds there, even
# an expired copy, over a valid one the server sends.
case("validity-intermediate-expired-in-root-file-valid-copy-sent", False)(
    lambda: _renewed_intermediate(expired_trusted=True)
)
case("validity-intermediate-expired-sent-valid-copy-in-root-file", True)(
    lambda: _renewed_intermediate(expired_trusted=False)
)


@case("validity-root-expired-and-renewed-copy-trusted", True)
def _() -> Served:
    key = ec_key()
    old = root(key=key, days=(-400, -2))
    new = root(key=key)
    i = inter(new)
    return Served((leaf(i), i), old.pem + new.pem)


# The same: the expired root in the file wins over the renewed one sent.
@case("validity-root-expired-renewed-copy-sent", False)
def _() -> Served:
    key = ec_key()
    old = root(key=key, days=(-400, -2))
    new = root(key=key)
    i = inter(new)
    return Served((leaf(i), i, new), old.pem)


# -------------------------------------------------------- issuer selection


@case("keyid-none-anywhere", True, ca=True)
def _() -> Served:
    r = root(skid=False)
    i = inter(r, skid=False, akid=False)
    return Served((leaf(i, skid=False, akid=False), i), r.pem)


@case("keyid-akid-mismatch", False, ca=False)
def _() -> Served:
    r = root()
    i = inter(r)
    akid = x509.AuthorityKeyIdentifier(os.urandom(20), None, None)
    return Served((leaf(i, akid=False, extensions=(*LEAF, (akid, False))), i), r.pem)


@case("keyid-akid-serial-mismatch", False)
def _() -> Served:
    r = root()
    i = inter(r)
    keyid = x509.SubjectKeyIdentifier.from_public_key(i.key.public_key()).digest  # type: ignore[arg-type]
    akid = x509.AuthorityKeyIdentifier(keyid, [x509.DirectoryName(r.name)], 12345)
    return Served((leaf(i, akid=False, extensions=(*LEAF, (akid, False))), i), r.pem)


case("keyid-intermediate-without-skid", True)(lambda: with_inter(skid=False))


def _twin_roots(right_first: bool, keyids: bool, wrong_key: PrivateKey | None = None) -> Served:
    # Two roots with one name and different keys; only one signed the chain.
    wrong = root("Twin Root", key=wrong_key or ec_key(), skid=keyids)
    right = root("Twin Root", skid=keyids)
    i = inter(right, skid=keyids, akid=keyids)
    lf = leaf(i, skid=keyids, akid=keyids)
    roots = right.pem + wrong.pem if right_first else wrong.pem + right.pem
    return Served((lf, i), roots)


case("twin-roots-no-keyids-right-first", True)(lambda: _twin_roots(True, False))
# Without key identifiers OpenSSL takes the first root of that name in the
# file and does not try the second when the signature does not verify.
case("twin-roots-no-keyids-right-second", False)(lambda: _twin_roots(False, False))
case("twin-roots-keyids-right-second", True)(lambda: _twin_roots(False, True))
case("twin-roots-no-keyids-wrong-is-rsa", True)(lambda: _twin_roots(False, False, rsa_key(2048, 0)))


def _stale_intermediate(keyids: bool, stale_days: tuple[float, float], first: bool) -> Served:
    # The server also sends an old intermediate: same name, another key.
    r = root(skid=keyids)
    stale = inter(r, skid=keyids, akid=keyids, days=stale_days)
    good = inter(r, skid=keyids, akid=keyids)
    lf = leaf(good, skid=keyids, akid=keyids)
    return Served((lf, stale, good) if first else (lf, good, stale), r.pem)


case("stale-intermediate-first-keyids", True)(
    lambda: _stale_intermediate(True, (-30, 1825), first=True)
)
# Without key identifiers the first intermediate of the right name is taken
# and a failing signature is final ("EVP lib" in libpq's words).
case("stale-intermediate-first-no-keyids", False, ca=False)(
    lambda: _stale_intermediate(False, (-30, 1825), first=True)
)
case("stale-intermediate-second-no-keyids", True)(
    lambda: _stale_intermediate(False, (-30, 1825), first=False)
)
case("stale-intermediate-expired-first-no-keyids", True)(
    lambda: _stale_intermediate(False, (-900, -30), first=True)
)


def _le2021(trusted: str, cross_days: tuple[float, float] = (-900, 300)) -> Served:
    # Let's Encrypt in 2021: the leaf's intermediate is signed by the new
    # root's key; the server also sends the new root cross-signed by an old
    # root that has expired. Clients that trust the new root stop there.
    old = root("Old Root CA X3", days=(-3000, -30))
    key = ec_key()
    new = root("New Root X1", key=key, days=(-1000, 3650))
    cross = inter(old, "New Root X1", key=key, days=cross_days)
    i = inter(new, "New Intermediate R3")
    lf = leaf(i)
    roots = {"new": new.pem, "old": old.pem, "both": old.pem + new.pem}[trusted]
    return Served((lf, i, cross), roots)


case("le2021-cross-sign-new-root-trusted", True, ca=True)(lambda: _le2021("new"))
case("le2021-cross-sign-only-old-root-trusted", False, ca=False)(lambda: _le2021("old"))
case("le2021-cross-sign-both-roots-trusted", True)(lambda: _le2021("both"))
case("le2021-cross-sign-itself-expired", True)(lambda: _le2021("new", (-900, -1)))


@case("cross-signed-intermediate-other-root-copy-sent", False, ca=False)
def _() -> Served:
    # One intermediate key, certified by two roots; the server sends the copy
    # from the root the client does not trust.
    trusted = root()
    other = root("Other Root")
    key = ec_key()
    by_trusted = inter(trusted, key=key)
    by_other = inter(other, key=key)
    return Served((leaf(by_trusted), by_other), trusted.pem)


@case("chain-intermediate-also-in-root-file", True)
def _() -> Served:
    s = standard()
    return Served(s.chain, s.roots + s.chain[1].pem)


# ------------------------------------------------------ key types and sizes


def _rsa_chain(leaf_bits: int = 0, inter_bits: int = 0, root_bits: int = 0) -> Served:
    """EC unless a size is given; RSA keys are generated once per size."""
    r = root(key=rsa_key(root_bits, 1) if root_bits else ec_key())
    i = inter(r, key=rsa_key(inter_bits, 2) if inter_bits else ec_key())
    return Served((leaf(i, key=rsa_key(leaf_bits, 3) if leaf_bits else ec_key()), i), r.pem)


case("key-leaf-rsa2048", True, ca=True)(lambda: _rsa_chain(2048, 2048, 2048))
# Security level 2 wants 112 bits: RSA 1963 bits rate 112, 1962 bits 104,
# for the leaf (EE key too weak) and every CA including the root.
case("key-leaf-rsa1024", False, ca=False)(lambda: _rsa_chain(leaf_bits=1024))
case("key-intermediate-rsa1024", False, ca=False)(lambda: _rsa_chain(inter_bits=1024))
case("key-root-rsa1024", False, ca=False)(lambda: _rsa_chain(root_bits=1024))
case("key-leaf-rsa1963", True)(lambda: _rsa_chain(leaf_bits=1963))
case("key-leaf-rsa1962", False, ca=False)(lambda: _rsa_chain(leaf_bits=1962))
case("key-intermediate-rsa1963", True)(lambda: _rsa_chain(inter_bits=1963))
case("key-intermediate-rsa1962", False)(lambda: _rsa_chain(inter_bits=1962))
case("key-root-rsa1963", True)(lambda: _rsa_chain(root_bits=1963))
case("key-root-rsa1962", False)(lambda: _rsa_chain(root_bits=1962))
case("key-root-rsa3072", True)(lambda: _rsa_chain(root_bits=3072))


def _curves(
    leaf_key: PrivateKey | None = None,
    inter_key: PrivateKey | None = None,
    root_key: PrivateKey | None = None,
) -> Served:
    r = root(key=root_key or ec_key())
    i = inter(r, key=inter_key or ec_key())
    return Served((leaf(i, key=leaf_key or ec_key()), i), r.pem)


def _ed25519() -> PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _ed448() -> PrivateKey:
    return ed448.Ed448PrivateKey.generate()


case("key-leaf-p384", True)(lambda: _curves(leaf_key=ec_key(ec.SECP384R1())))
case("key-leaf-p521", True)(lambda: _curves(leaf_key=ec_key(ec.SECP521R1())))
case("key-intermediate-p521", True)(lambda: _curves(inter_key=ec_key(ec.SECP521R1())))
case("key-root-p384", True)(lambda: _curves(root_key=ec_key(ec.SECP384R1())))
case("key-intermediate-p224", True)(lambda: _curves(inter_key=ec_key(ec.SECP224R1())))
# P-224 rates 112 bits, P-192 only 96.
case("key-intermediate-p192", False, ca=False)(lambda: _curves(inter_key=ec_key(ec.SECP192R1())))
case("key-intermediate-brainpool-p256", True)(
    lambda: _curves(inter_key=ec_key(ec.BrainpoolP256R1()))
)
case("key-intermediate-secp256k1", True)(lambda: _curves(inter_key=ec_key(ec.SECP256K1())))
# TLS 1.3 has no signature scheme for secp256k1: the handshake fails.
case("key-leaf-secp256k1", False, ca=False, poll_error="HANDSHAKE_FAILURE")(
    lambda: _curves(leaf_key=ec_key(ec.SECP256K1()))
)
case("key-leaf-ed25519", True, ca=True)(lambda: _curves(leaf_key=_ed25519()))
case("key-intermediate-ed25519", True)(lambda: _curves(inter_key=_ed25519()))
case("key-root-ed25519", True)(lambda: _curves(root_key=_ed25519()))
case("key-leaf-ed448", True)(lambda: _curves(leaf_key=_ed448()))


def _explicit_curve() -> tuple[PrivateKey, tuple[Edit, ...]]:
    key = ec_key()
    return key, (set_public_key_info(explicit_p256_spki(key)),)


# OpenSSL 3 refuses explicit curve parameters at any depth, strict or not.
@case("key-intermediate-p256-explicit-parameters", False, ca=False)
def _() -> Served:
    key, edits = _explicit_curve()
    return with_inter(key=key, edits=edits)


@case("key-root-p256-explicit-parameters", False)
def _() -> Served:
    key, edits = _explicit_curve()
    return with_root(key=key, edits=edits)


# ------------------------------------------------------ signature digests


def _signed(
    leaf_sig: Sig = SHA256, inter_sig: Sig = SHA256, root_sig: Sig = SHA256, rsa: bool = False
) -> Served:
    r = root(key=rsa_key(2048, 1) if rsa else ec_key(), sig=root_sig)
    i = inter(r, key=rsa_key(2048, 2) if rsa else ec_key(), sig=inter_sig)
    return Served((leaf(i, sig=leaf_sig), i), r.pem)


case("sig-sha384-leaf", True)(lambda: _signed(leaf_sig=Sig("sha384")))
case("sig-sha512-leaf", True)(lambda: _signed(leaf_sig=Sig("sha512")))
case("sig-sha224-leaf", True)(lambda: _signed(leaf_sig=Sig("sha224")))
case("sig-sha224-rsa-intermediate", True)(lambda: _signed(inter_sig=Sig("sha224"), rsa=True))
case("sig-sha512-intermediate", True)(lambda: _signed(inter_sig=Sig("sha512")))
# SHA-1 and MD5 signatures fail at level 2 ("CA signature digest algorithm
# too weak", the leaf's too); the root's self-signature is never checked.
case("sig-sha1-leaf", False, ca=False)(lambda: _signed(leaf_sig=Sig("sha1")))
case("sig-sha1-rsa-leaf", False)(lambda: _signed(leaf_sig=Sig("sha1"), rsa=True))
case("sig-md5-rsa-leaf", False)(lambda: _signed(leaf_sig=Sig("md5"), rsa=True))
case("sig-sha1-intermediate", False, ca=False)(lambda: _signed(inter_sig=Sig("sha1")))
case("sig-sha1-root-self-signature", True, ca=True)(lambda: _signed(root_sig=Sig("sha1")))
case("sig-rsa-pss-leaf", True, ca=True)(lambda: _signed(leaf_sig=Sig(pss=True), rsa=True))
case("sig-rsa-pss-sha512-intermediate", True)(
    lambda: _signed(inter_sig=Sig("sha512", pss=True), rsa=True)
)
case("sig-rsa-pss-root-self-signature", True)(lambda: _signed(root_sig=Sig(pss=True), rsa=True))
case("sig-corrupt-leaf", False, ca=False)(lambda: _signed(leaf_sig=Sig(corrupt=True)))
case("sig-corrupt-intermediate", False)(lambda: _signed(inter_sig=Sig(corrupt=True)))
case("sig-corrupt-root-self-signature", True)(lambda: _signed(root_sig=Sig(corrupt=True)))
# An unknown signature algorithm means "no issuer found"; on the root it
# means the root is not self-signed, so no trust anchor.
case("sig-unknown-algorithm-leaf", False, ca=False)(
    lambda: _signed(leaf_sig=Sig(algorithm_oid="1.3.6.1.4.1.55555.9.9"))
)
case("sig-unknown-algorithm-root-self-signature", False)(
    lambda: _signed(root_sig=Sig(algorithm_oid="1.3.6.1.4.1.55555.9.9"))
)
case("sig-inner-outer-algorithm-mismatch-leaf", False)(
    lambda: _signed(leaf_sig=Sig(inner_oid="1.2.840.10045.4.3.3"))
)

# --------------------------------------------------------------- SAN forms

NUL_NAME = b"db.test\x00.evil.example"

# libpq walks the SANs in order and stops at the first match or error: a
# name with a NUL byte, or an iPAddress neither 4 nor 16 bytes long, is an
# error ("embedded null", "IP address with invalid length") before a match
# and harmless after it. OpenSSL's own verification does not mind either.
case("san-nul-entry-before-match", False, ca=True)(
    lambda: leaf_only(*LEAF[:3], san_raw(gn_dns(NUL_NAME), gn_dns(HOST.encode())))
)
case("san-nul-entry-after-match", True)(
    lambda: leaf_only(*LEAF[:3], san_raw(gn_dns(HOST.encode()), gn_dns(NUL_NAME)))
)
case("san-nul-entry-only", False)(lambda: leaf_only(*LEAF[:3], san_raw(gn_dns(NUL_NAME))))
case("san-ip-5-bytes-before-match", False, ca=True)(
    lambda: leaf_only(*LEAF[:3], san_raw(gn_ip(b"\x7f\x00\x00\x01\x00"), gn_dns(HOST.encode())))
)
case("san-ip-5-bytes-after-match", True)(
    lambda: leaf_only(*LEAF[:3], san_raw(gn_dns(HOST.encode()), gn_ip(b"\x7f\x00\x00\x01\x00")))
)
# SAN kinds other than dNSName and iPAddress are skipped, and do not stop the
# fallback to the Common Name.
case("san-x400-address-and-dns", True, ca=True)(
    lambda: leaf_only(*LEAF[:3], san_raw(GN_X400, gn_dns(HOST.encode())))
)
case("san-x400-address-only-cn-fallback", True)(
    lambda: leaf_only(*LEAF[:3], san_raw(GN_X400), cn=HOST)
)


@case("san-uri-and-email-only-cn-fallback", True, hosts={"other.test": False})
def _() -> Served:
    names = x509.SubjectAlternativeName(
        [
            x509.UniformResourceIdentifier(f"postgresql://{HOST}/"),
            x509.RFC822Name(f"dba@{HOST}"),
        ]
    )
    return leaf_only(*LEAF[:3], (names, False), cn=HOST)


case("san-idn-a-label", True, host="xn--bcher-kva.test", hosts={"bücher.test": False})(
    lambda: leaf_only(*swap(LEAF, san("xn--bcher-kva.test")))
)
case(
    "san-wildcard",
    True,
    host="a.db.test",
    hosts={HOST: False, "a.b.db.test": False, "A.DB.TEST": True},
)(lambda: leaf_only(*swap(LEAF, san("*.db.test"))))
case("san-wildcard-partial-label", False, host="ab.db.test")(
    lambda: leaf_only(*swap(LEAF, san("a*.db.test")))
)
case("san-wildcard-single-label-suffix", True)(lambda: leaf_only(*swap(LEAF, san("*.test"))))
case("san-wildcard-star-only", False)(lambda: leaf_only(*swap(LEAF, san("*"))))
case("san-wildcard-not-leftmost", False, host="db.x.test")(
    lambda: leaf_only(*swap(LEAF, san("db.*.test")))
)
case("san-trailing-dot-in-certificate", False, hosts={"db.test.": True})(
    lambda: leaf_only(*swap(LEAF, san("db.test.")))
)
case("san-trailing-dot-in-host", False, host="db.test.")(lambda: leaf_only(*LEAF))
case("san-upper-case", True, hosts={"Db.Test": True})(
    lambda: leaf_only(*swap(LEAF, san("DB.TEST")))
)
case("cn-only", True, ca=True, hosts={"127.0.0.1": False, "other.test": False})(
    lambda: leaf_only(*LEAF[:3], cn=HOST)
)
case("cn-fallback-with-ip-san", True, hosts={"127.0.0.1": True, "other.test": False})(
    lambda: leaf_only(*LEAF[:3], san("127.0.0.1"), cn=HOST)
)
case("cn-ignored-with-dns-san", False, ca=True, hosts={"other.test": True})(
    lambda: leaf_only(*LEAF[:3], san("other.test"), cn=HOST)
)
case("cn-ip-with-dns-san", True, host="127.0.0.1")(
    lambda: leaf_only(*LEAF[:3], san(HOST), cn="127.0.0.1")
)
case("cn-ip-with-other-ip-san", False, host="127.0.0.1")(
    lambda: leaf_only(*LEAF[:3], san("10.0.0.1"), cn="127.0.0.1")
)
# An IP host is compared with dNSName entries as text, with iPAddress entries
# as an address parsed the way inet_aton() does ("127.1" is 127.0.0.1).
case("ip-host-matches-dns-san-text", True, host="127.0.0.1")(
    lambda: leaf_only(*LEAF[:3], (x509.SubjectAlternativeName([x509.DNSName("127.0.0.1")]), False))
)
case("ip-san-ipv6", True, host="::1", hosts={"0:0::1": True, "127.0.0.1": False, HOST: True})(
    lambda: leaf_only(*swap(LEAF, san(HOST, "::1")))
)
case(
    "ip-san-inet-aton-shorthand",
    True,
    host="127.1",
    hosts={"127.0.0.1": True, "0x7f.1": True, "127.0.0.2": False},
)(lambda: leaf_only(*swap(LEAF, san("127.0.0.1"))))
# libpq takes the first CN's raw bytes: UCS-2 has NUL bytes ("embedded
# null"); a second CN is never looked at.
case("cn-bmpstring", False, ca=True)(
    lambda: leaf_only(
        *LEAF[:3], edits=(set_subject(crafted_name(ORG, (CN, 0x1E, HOST.encode("utf-16-be")))),)
    )
)
case("cn-printablestring", True)(
    lambda: leaf_only(*LEAF[:3], edits=(set_subject(crafted_name(ORG, (CN, 0x13, HOST.encode()))),))
)
case("cn-teletexstring", True)(
    lambda: leaf_only(*LEAF[:3], edits=(set_subject(crafted_name(ORG, (CN, 0x14, HOST.encode()))),))
)
case("cn-multiple-match-second", False, hosts={"other.test": True})(
    lambda: leaf_only(
        *LEAF[:3],
        edits=(
            set_subject(crafted_name(ORG, (CN, 0x0C, b"other.test"), (CN, 0x0C, HOST.encode()))),
        ),
    )
)
case("cn-multiple-match-first", True)(
    lambda: leaf_only(
        *LEAF[:3],
        edits=(
            set_subject(crafted_name(ORG, (CN, 0x0C, HOST.encode()), (CN, 0x0C, b"other.test"))),
        ),
    )
)
case("cn-with-nul", False)(
    lambda: leaf_only(*LEAF[:3], edits=(set_subject(crafted_name(ORG, (CN, 0x0C, NUL_NAME))),))
)
case("san-non-ascii-byte-after-match", True, hosts={"caf\u00e9.test": False})(
    lambda: leaf_only(*LEAF[:3], san_raw(gn_dns(HOST.encode()), gn_dns(b"caf\xe9.test")))
)
case("cn-wildcard", True, host="a.db.test", hosts={HOST: False})(
    lambda: leaf_only(*LEAF[:3], cn="*.db.test")
)

# ---------------------------------------------------------- root-file forms

case("rootfile-trusted-certificate-no-trust-settings", True, ca=True)(
    lambda: _root_file(lambda r, _: trusted_pem(r))
)
case("rootfile-trusted-certificate-trust-server-auth", True)(
    lambda: _root_file(lambda r, _: trusted_pem(r, trust=[SERVER_AUTH]))
)
case("rootfile-trusted-certificate-trust-client-auth-only", False, ca=False)(
    lambda: _root_file(lambda r, _: trusted_pem(r, trust=[CLIENT_AUTH]))
)
case("rootfile-trusted-certificate-trust-any-eku", True)(
    lambda: _root_file(lambda r, _: trusted_pem(r, trust=[ANY_EKU]))
)
case("rootfile-trusted-certificate-reject-server-auth", False, ca=False)(
    lambda: _root_file(lambda r, _: trusted_pem(r, reject=[SERVER_AUTH]))
)
case("rootfile-trusted-certificate-openssl-addtrust-server-auth", True)(
    lambda: _root_file(lambda r, _: openssl_trustout(r, "-addtrust", "serverAuth"))
)
case("rootfile-trusted-certificate-openssl-addreject-server-auth", False)(
    lambda: _root_file(lambda r, _: openssl_trustout(r, "-addreject", "serverAuth"))
)
case("rootfile-der", False, ca=False, unloadable_roots=True)(lambda: _root_file(lambda r, _: r.der))
case("rootfile-empty", False, ca=False, unloadable_roots=True)(lambda: _root_file(lambda r, _: b""))
case("rootfile-private-key-only", False, unloadable_roots=True)(
    lambda: _root_file(lambda r, _: r.key_pem)
)
case("rootfile-garbage-around-pem", True, ca=True)(
    lambda: _root_file(lambda r, _: b"Our root, installed 2024:\n" + r.pem + b"(end)\n")
)
case("rootfile-private-key-and-root", True)(lambda: _root_file(lambda r, _: r.key_pem + r.pem))
case("rootfile-corrupt-block-after-root", False, unloadable_roots=True)(
    lambda: _root_file(lambda r, _: r.pem + pem(b"\x30\x03\x02\x01\x01"))
)
case("rootfile-crlf-line-ends", True)(
    lambda: _root_file(lambda r, _: r.pem.replace(b"\n", b"\r\n"))
)
case("rootfile-x509-certificate-label", True)(
    lambda: _root_file(lambda r, _: pem(r.der, label="X509 CERTIFICATE"))
)
case("rootfile-root-twice", True)(lambda: _root_file(lambda r, _: r.pem + r.pem))
case("rootfile-root-and-unrelated-roots", True)(
    lambda: _root_file(lambda r, _: root("Unrelated A").pem + r.pem + root("Unrelated B").pem)
)
case("rootfile-root-and-crl-revoking-leaf", True, ca=True)(
    lambda: _root_file(lambda r, s: r.pem + _crl(s))
)


def _root_file(make: Callable[[Cert, Served], bytes], **root_kw: object) -> Served:
    r = root(**root_kw)
    i = inter(r)
    s = Served((leaf(i), i), b"")
    return Served(s.chain, make(r, s))


def _crl(served: Served) -> bytes:
    """A CRL from the intermediate revoking the leaf: libpq checks CRLs only
    when given sslcrl/sslcrldir, never from the root file."""
    issuer = served.chain[1]
    now = load(issuer).not_valid_before_utc
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(load(served.chain[0]).serial_number)
        .revocation_date(now)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.name)
        .last_update(now)
        .next_update(now + (load(issuer).not_valid_after_utc - now) / 2)
        .add_revoked_certificate(revoked)
        .sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return crl.public_bytes(serialization.Encoding.PEM)


# ------------------------------------------------------------------ sizes

#: libpq and OpenSSL's default limit on the Certificate message (100 KiB).
MAX_CERT_LIST = 100 * 1024


def _certificate_message_size(chain: Sequence[Cert]) -> int:
    # TLS 1.3: context (1), list length (3), per entry length (3) + DER + extensions (2).
    return 1 + 3 + sum(3 + len(c.der) + 2 for c in chain)


def _sized(target: int) -> Served:
    """The standard chain plus one filler certificate, to exactly ``target``
    bytes of Certificate message."""
    s = standard()
    key = ec_key()
    pad = target - _certificate_message_size(s.chain) - 400
    while True:
        filler = root("Filler", key=key, extensions=(raw(UNKNOWN_OID, octets(b"\0" * pad)),))
        size = _certificate_message_size((*s.chain, filler))
        if size == target:
            return Served((*s.chain, filler), s.roots)
        pad += target - size


case("size-cert-list-exactly-100kib", True)(lambda: _sized(MAX_CERT_LIST))
case("size-cert-list-100kib-plus-one", False, ca=False, poll_error="EXCESSIVE_MESSAGE_SIZE")(
    lambda: _sized(MAX_CERT_LIST + 1)
)

# --------------------------------- certificates cryptography cannot parse

# A leaf with a duplicate extension OpenSSL knows (SAN, EKU ...) cannot be
# served at all: PostgreSQL's OpenSSL 3.0 refuses to load it ("invalid
# certificate"). Intermediates and roots with one can be sent or trusted.
case("parse-duplicate-unknown-extension-leaf", True)(
    lambda: leaf_only(
        *LEAF, raw(UNKNOWN_OID, b"\x05\x00"), edits=(duplicate_extension(UNKNOWN_OID),)
    )
)
case("parse-duplicate-bc-intermediate", False)(
    lambda: with_inter(edits=(duplicate_extension("2.5.29.19"),))
)
case("parse-duplicate-eku-intermediate", False)(
    lambda: with_inter(
        extensions=(*CA_EXTENSIONS, eku(SERVER_AUTH)), edits=(duplicate_extension("2.5.29.37"),)
    )
)
case("parse-duplicate-skid-intermediate", False)(
    lambda: with_inter(edits=(duplicate_extension("2.5.29.14"),))
)
case("parse-duplicate-ku-root", False)(lambda: with_root(edits=(duplicate_extension("2.5.29.15"),)))
case("parse-duplicate-unknown-extension-root", True)(
    lambda: with_root(
        extensions=(*CA_EXTENSIONS, raw(UNKNOWN_OID, b"\x05\x00")),
        edits=(duplicate_extension(UNKNOWN_OID),),
    )
)
case("parse-unknown-signature-algorithm-intermediate", False)(
    lambda: _signed(inter_sig=Sig(algorithm_oid="1.3.6.1.4.1.55555.9.9"))
)
case("parse-serial-negative-leaf", True)(lambda: with_leaf(edits=(set_serial(integer(-4242)),)))
case("parse-serial-21-octets-leaf", True)(
    lambda: with_leaf(edits=(set_serial(integer(0x40 << (8 * 20))),))
)
case("parse-serial-zero-leaf", True)(lambda: with_leaf(edits=(set_serial(integer(0)),)))


def _times(not_before: str, not_after: str) -> Edit:
    """Validity as literal UTCTime (13 or 11 characters) or GeneralizedTime text."""

    def element(text: str) -> bytes:
        return tlv(0x17 if len(text) in (11, 13) else 0x18, text.encode())

    return set_validity(element(not_before), element(not_after))


def _when(days: float, form: str) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).strftime(form)


# Times must be exactly YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ for OpenSSL's
# comparison ("format error in certificate's notBefore field").
case("parse-validity-generalized-time-fraction-leaf", False)(
    lambda: with_leaf(edits=(_times(_when(-1, "%Y%m%d%H%M%S.5Z"), _when(90, "%Y%m%d%H%M%S.25Z")),))
)
case("parse-validity-utctime-without-seconds-leaf", False)(
    lambda: with_leaf(edits=(_times(_when(-1, "%y%m%d%H%MZ"), _when(90, "%y%m%d%H%MZ")),))
)
case("parse-validity-generalized-time-before-2050-leaf", True)(
    lambda: with_leaf(edits=(_times(_when(-1, "%Y%m%d%H%M%SZ"), _when(90, "%Y%m%d%H%M%SZ")),))
)


def _boolean_true_as_01(found: list[bytes]) -> list[bytes]:
    # BER allows any non-zero octet for TRUE; DER demands 0xFF.
    return [e.replace(b"\x01\x01\xff", b"\x01\x01\x01", 1) for e in found]


case("parse-critical-true-encoded-01-leaf", True)(
    lambda: with_leaf(edits=(edit_extensions(_boolean_true_as_01),))
)
case("parse-empty-subject-noncritical-san-leaf", True, ca=True)(
    lambda: with_leaf(edits=(set_subject(seq()),))
)
# Known, non-critical extensions OpenSSL does not decode to verify.
case("parse-malformed-noncritical-aia-leaf", True)(
    lambda: leaf_only(*LEAF, raw("1.3.6.1.5.5.7.1.1", b"\x05\x00"))
)
case("parse-malformed-noncritical-sct-list-leaf", True)(
    lambda: leaf_only(*LEAF, raw("1.3.6.1.4.1.11129.2.4.2", octets(b"\x00\x05junk!")))
)
# DER forbids encoding a default value; OpenSSL reads "critical FALSE" anyway.
case("parse-extension-critical-false-encoded-leaf", True)(
    lambda: with_leaf(
        edits=(add_extension(seq(oid(UNKNOWN_OID), b"\x01\x01\x00", octets(b"\x05\x00"))),)
    )
)


# ------------------------------------------------------------------- running


#: Processes run at once for the checks of one case (psql, plugin, openssl).
WORKERS = 2 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Outcome:
    psql: PsqlAttempt
    #: OpenSSL's reason when psql fails, from ``openssl s_client``.
    openssl: str
    plugin: Run


class Matrix:
    """One cluster and the built cases; serves one case at a time."""

    def __init__(self, workspace: Workspace, psql_home: Path) -> None:
        self.psql_home = psql_home
        self.observed: dict[Check, Outcome] = {}
        self.built = {case_id: c.build() for case_id, c in CASES.items()}
        self.roots = workspace.new_dir("matrix-roots")
        self.root_files: dict[str, Path] = {}
        for case_id, served in self.built.items():
            path = self.roots / f"{case_id}.crt"
            path.write_bytes(served.roots)
            self.root_files[case_id] = path
        # A neutral chain: served first, and between two cases the poll
        # cannot tell apart.
        self.neutral = pki.make_leaf(None)
        self.cluster = workspace.cluster([self.neutral], self.neutral, name="matrix")
        self.cluster.start(env=weak_openssl_conf(workspace))
        self.current: str | None = None

    def serve(self, chosen: Case) -> Path:
        """Make the server present the case's chain; returns its root file."""
        if self.current == chosen.id:
            return self.root_files[chosen.id]
        self.current = None
        served = self.built[chosen.id]
        error = chosen.poll_error
        if error is None:
            self._install(pems(*served.chain), served.chain[0].key)
            self.cluster.wait_served(lambda seen: seen == served.chain[0].der)
        else:
            # No client completes a handshake: the reload shows in the error
            # only this chain causes, after a chain that does not.
            neutral = self.neutral.cert.public_bytes(serialization.Encoding.DER)
            self._install(self.neutral.cert_pem, self.neutral.key)
            self.cluster.wait_served(lambda seen: seen == neutral)
            self._install(pems(*served.chain), served.chain[0].key)
            self.cluster.wait_served(
                lambda seen: isinstance(seen, ssl.SSLError) and error in str(seen)
            )
        self.current = chosen.id
        return self.root_files[chosen.id]

    def outcome(self, chosen: Case, check: Check) -> Outcome:
        """What psql, OpenSSL and the plugin make of one check of a case.

        The first item of a case serves it and runs all its checks at once,
        every psql and plugin run its own process; the other items of the
        case read the results.
        """
        if self.current != chosen.id or check not in self.observed:
            root_file = self.serve(chosen)
            with ThreadPoolExecutor(WORKERS) as pool:
                libpq = {c: pool.submit(self._psql, c, root_file) for c in chosen.checks}
                plugin = {
                    c: pool.submit(run_plugin, *plugin_args(self.cluster.port, c, root_file))
                    for c in chosen.checks
                }
                self.observed = {
                    c: Outcome(*libpq[c].result(), plugin[c].result()) for c in chosen.checks
                }
        return self.observed[check]

    def _psql(self, check: Check, root_file: Path) -> tuple[PsqlAttempt, str]:
        attempt = psql_attempt(
            self.cluster, self.psql_home, check.host, check.sslmode, str(root_file)
        )
        return attempt, "" if attempt.connected else self.openssl_says(root_file)

    def _install(self, chain_pem: bytes, key: PrivateKey) -> None:
        self.cluster.install_pem(chain_pem, private_key_pem(key))
        self.cluster.reload()

    def openssl_says(self, root_file: Path) -> str:
        """Why OpenSSL (the system's, as libpq uses it) refuses the chain, if it does.

        libpq 15 only says "certificate verify failed"; ``openssl s_client``
        names the reason.
        """
        done = subprocess.run(
            [
                "openssl", "s_client", "-starttls", "postgres", "-brief",
                "-connect", f"127.0.0.1:{self.cluster.port}",
                "-CAfile", str(root_file), "-verify_return_error",
            ],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
        text = done.stdout + done.stderr
        found = [line.strip() for line in text.splitlines() if "verify error" in line]
        if found:
            return found[0]
        return "verified" if done.returncode == 0 else " / ".join(text.strip().splitlines()[-2:])


@pytest.fixture(scope="session")
def matrix(workspace: Workspace, psql_home: Path) -> Iterator[Matrix]:
    made = Matrix(workspace, psql_home)
    yield made
    made.cluster.stop()


ITEMS = [
    pytest.param(c, check, id=f"{c.id}:{check.sslmode}:{check.host}")
    for c in CASES.values()
    for check in c.checks
]


def plugin_args(port: int, check: Check, root_file: Path) -> list[str]:
    name_args = [] if check.host == "127.0.0.1" else ["--servername", check.host]
    return [
        "-H", "127.0.0.1", "-p", str(port), *name_args,
        "--sslmode", check.sslmode, "--sslrootcert", str(root_file),
        "-w", "0", "-c", "0", "--min-rsa-bits", "0", "--min-ec-bits", "0",
        "--weak-signature-state", "ok",
    ]  # fmt: skip


@pytest.mark.parametrize(("chosen", "check"), ITEMS)
def test_plugin_agrees_with_libpq(
    matrix: Matrix,
    chosen: Case,
    check: Check,
    record_property: Callable[[str, object], None],
) -> None:
    seen = matrix.outcome(chosen, check)
    libpq, openssl, run = seen.psql, seen.openssl, seen.plugin
    record_property("psql", libpq.error or "connected")
    record_property("openssl", openssl)
    record_property("plugin", f"exit {run.returncode}: {run.status_line}")
    assert libpq.connected == check.psql, (
        f"libpq's outcome changed: psql {'connected' if libpq.connected else 'failed'}"
        f" ({libpq.error or 'no error'}; openssl s_client: {openssl})"
    )
    accepts = run.returncode in (0, 1)
    assert accepts == libpq.connected, (
        f"plugin {'accepts' if accepts else 'refuses'}, psql "
        f"{'connected' if libpq.connected else 'failed: ' + libpq.error}\n"
        f"openssl s_client: {openssl}\n"
        f"plugin said: {run.stdout}{run.stderr}"
    )
    if not accepts:
        allowed = {2, 3} if chosen.unloadable_roots else {2}
        assert run.returncode in allowed, f"plugin exit {run.returncode}: {run.stdout}"


def test_matrix_is_large_enough() -> None:
    assert len(CASES) >= 120
    assert len({(c.id, k.host, k.sslmode) for c in CASES.values() for k in c.checks}) == len(ITEMS)
