"""Certificates that cryptography's CertificateBuilder will not make.

cryptography builds a well-formed certificate; its to-be-signed part (TBS)
is then edited at the DER level (version, extensions as raw bytes, subject,
signature algorithm) and signed again with the issuer's key. This makes the
odd certificates found in the wild, or written to trip up a verifier: v1
intermediates, duplicate extensions, SANs with NUL bytes or an x400Address,
SHA-1 or unknown signature algorithms, BMPString names.

The DER reader and writer know just enough of the encoding for that: short
tags, definite lengths.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import ipaddress
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "CA_EXTENSIONS",
    "CLIENT_AUTH",
    "SERVER_AUTH",
    "Cert",
    "Edit",
    "Ext",
    "PrivateKey",
    "Sig",
    "add_extension",
    "algorithm_identifier",
    "bc",
    "bit_string",
    "duplicate_extension",
    "ec_key",
    "edit_extensions",
    "eku",
    "elements",
    "explicit_p256_spki",
    "extension",
    "integer",
    "issue",
    "ku",
    "leaf_extensions",
    "load",
    "name",
    "octets",
    "oid",
    "openssl_trustout",
    "pem",
    "private_key_pem",
    "raw",
    "read",
    "rsa_key",
    "san",
    "seq",
    "set_public_key_info",
    "set_serial",
    "set_subject",
    "set_validity",
    "set_version",
    "sign_tbs",
    "tlv",
    "trusted_pem",
]

PrivateKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | mldsa.MLDSA44PrivateKey
    | mldsa.MLDSA65PrivateKey
    | mldsa.MLDSA87PrivateKey
)
#: An extension for :func:`issue`: its value and whether it is critical.
Ext = tuple[x509.ExtensionType, bool]
#: A change to the DER of a TBSCertificate.
Edit = Callable[[bytes], bytes]

DAY = dt.timedelta(days=1)

# ---------------------------------------------------------------- DER


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        raw_size = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw_size)]) + raw_size
    return bytes([tag]) + length + content


def read(data: bytes) -> tuple[int, bytes, bytes]:
    """The first element of ``data``: its tag, its content, and what follows it."""
    tag, first = data[0], data[1]
    if first < 0x80:
        start, size = 2, first
    else:
        count = first & 0x7F
        start, size = 2 + count, int.from_bytes(data[2 : 2 + count], "big")
    end = start + size
    if end > len(data):
        raise ValueError("DER element runs past the end of the data")
    return tag, data[start:end], data[end:]


def elements(content: bytes) -> list[bytes]:
    """The whole elements (tag, length and content) that ``content`` holds, in order."""
    found = []
    while content:
        _, _, rest = read(content)
        found.append(content[: len(content) - len(rest)])
        content = rest
    return found


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER element."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


NULL = b"\x05\x00"


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def bit_string(data: bytes, unused: int = 0) -> bytes:
    return tlv(0x03, bytes([unused]) + data)


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


# ------------------------------------------------------ TBSCertificate edits


def _fields(tbs: bytes) -> list[bytes]:
    tag, content, rest = read(tbs)
    if tag != 0x30 or rest:
        raise ValueError("not a TBSCertificate")
    return elements(content)


def _offset(fields: list[bytes]) -> int:
    # The version is optional ([0] EXPLICIT, absent in v1): the other
    # fields move up by one without it.
    return 1 if fields[0][0] == 0xA0 else 0


# Positions after the optional version.
_SERIAL, _SIGNATURE, _ISSUER, _VALIDITY, _SUBJECT, _SPKI = 0, 1, 2, 3, 4, 5


def _replace(tbs: bytes, index: int, value: bytes) -> bytes:
    fields = _fields(tbs)
    fields[_offset(fields) + index] = value
    return seq(*fields)


def set_version(version: int) -> Edit:
    """Set the version field: 0 is v1 (the field is left out), 2 is v3."""

    def edit(tbs: bytes) -> bytes:
        fields = _fields(tbs)
        fields = fields[_offset(fields) :]
        if version != 0:
            fields.insert(0, tlv(0xA0, integer(version)))
        return seq(*fields)

    return edit


def set_subject(subject: bytes) -> Edit:
    """Replace the subject with a Name given as DER."""
    return lambda tbs: _replace(tbs, _SUBJECT, subject)


def set_serial(serial: bytes) -> Edit:
    """Replace the serial number with an element given as DER (any INTEGER)."""
    return lambda tbs: _replace(tbs, _SERIAL, serial)


def set_validity(not_before: bytes, not_after: bytes) -> Edit:
    """Replace the validity with two time elements given as DER."""
    return lambda tbs: _replace(tbs, _VALIDITY, seq(not_before, not_after))


def set_public_key_info(spki: bytes) -> Edit:
    """Replace the SubjectPublicKeyInfo (e.g. with explicit EC parameters)."""
    return lambda tbs: _replace(tbs, _SPKI, spki)


def _extension_list(fields: list[bytes]) -> tuple[int, list[bytes]]:
    for index, field in enumerate(fields):
        if field[0] == 0xA3:
            _, wrapped, _ = read(field)
            _, content, _ = read(wrapped)
            return index, elements(content)
    return len(fields), []


def edit_extensions(change: Callable[[list[bytes]], list[bytes]]) -> Edit:
    """Rewrite the list of extensions, each one a whole Extension element."""

    def edit(tbs: bytes) -> bytes:
        fields = _fields(tbs)
        index, found = _extension_list(fields)
        changed = change(found)
        fields = [f for f in fields if f[0] != 0xA3]
        if changed:
            fields.insert(index, tlv(0xA3, seq(*changed)))
        return seq(*fields)

    return edit


def extension(dotted: str, value: bytes, critical: bool = False) -> bytes:
    """An Extension element from its OID and the DER of its value."""
    flag = b"\x01\x01\xff" if critical else b""
    return seq(oid(dotted), flag, octets(value))


def add_extension(raw_extension: bytes) -> Edit:
    """Append an Extension element, e.g. a second one with an OID already present."""
    return edit_extensions(lambda found: [*found, raw_extension])


def duplicate_extension(dotted: str) -> Edit:
    """Repeat the extension with this OID right after itself."""
    wanted = oid(dotted)

    def change(found: list[bytes]) -> list[bytes]:
        out = []
        for ext in found:
            out.append(ext)
            if read(ext)[1].startswith(wanted):
                out.append(ext)
        return out

    return edit_extensions(change)


# ------------------------------------------------------------------ signing

_RSA = "1.2.840.113549.1.1"
_RSA_OIDS = {
    "md5": "4",
    "sha1": "5",
    "sha224": "14",
    "sha256": "11",
    "sha384": "12",
    "sha512": "13",
}
_ECDSA_OIDS = {
    "sha1": "1.2.840.10045.4.1",
    "sha224": "1.2.840.10045.4.3.1",
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
    # NIST's ECDSA with SHA-3 (which OpenSSL 3.0 does not verify).
    "sha3-256": "2.16.840.1.101.3.4.3.10",
    "sha3-384": "2.16.840.1.101.3.4.3.11",
    "sha3-512": "2.16.840.1.101.3.4.3.12",
}
# RSA PKCS #1 v1.5 with SHA-3, under NIST's arc.
_RSA_SHA3_OIDS = {
    "sha3-256": "2.16.840.1.101.3.4.3.14",
    "sha3-384": "2.16.840.1.101.3.4.3.15",
    "sha3-512": "2.16.840.1.101.3.4.3.16",
}
# FIPS 204 ML-DSA, signing the data itself (no digest), as RFC 9881 puts it in X.509.
_MLDSA_OIDS = {
    mldsa.MLDSA44PrivateKey: "2.16.840.1.101.3.4.3.17",
    mldsa.MLDSA65PrivateKey: "2.16.840.1.101.3.4.3.18",
    mldsa.MLDSA87PrivateKey: "2.16.840.1.101.3.4.3.19",
}
_HASH_OIDS = {
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha3-256": hashes.SHA3_256,
    "sha3-384": hashes.SHA3_384,
    "sha3-512": hashes.SHA3_512,
}


@dataclass(frozen=True)
class Sig:
    """How a certificate is signed."""

    digest: str = "sha256"
    #: RSASSA-PSS (RSA keys only), MGF1 with the same digest, salt as long as it.
    pss: bool = False
    #: Name this algorithm in the certificate instead of the real one
    #: (an unknown OID, say); the signature is still made with ``digest``.
    algorithm_oid: str | None = None
    #: The TBS names this algorithm while the outer field names the real one.
    inner_oid: str | None = None
    #: Flip a bit of the signature: a certificate whose signature is wrong.
    corrupt: bool = False


def algorithm_identifier(key: PrivateKey, sig: Sig) -> bytes:
    """The AlgorithmIdentifier of a signature by ``key`` as ``sig`` describes it."""
    if sig.algorithm_oid is not None:
        return seq(oid(sig.algorithm_oid))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return seq(oid("1.3.101.112"))
    if isinstance(key, ed448.Ed448PrivateKey):
        return seq(oid("1.3.101.113"))
    for kind, dotted in _MLDSA_OIDS.items():
        if isinstance(key, kind):
            return seq(oid(dotted))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return seq(oid(_ECDSA_OIDS[sig.digest]))
    if sig.pss:
        digest = seq(oid(_HASH_OIDS[sig.digest]), NULL)
        mgf1 = seq(oid(f"{_RSA}.8"), digest)
        salt = _HASHES[sig.digest]().digest_size
        params = seq(tlv(0xA0, digest), tlv(0xA1, mgf1), tlv(0xA2, integer(salt)))
        return seq(oid(f"{_RSA}.10"), params)
    if sig.digest in _RSA_SHA3_OIDS:
        return seq(oid(_RSA_SHA3_OIDS[sig.digest]), NULL)
    return seq(oid(f"{_RSA}.{_RSA_OIDS[sig.digest]}"), NULL)


def _sign(key: PrivateKey, data: bytes, sig: Sig) -> bytes:
    if isinstance(
        key,
        ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | mldsa.MLDSA44PrivateKey
        | mldsa.MLDSA65PrivateKey
        | mldsa.MLDSA87PrivateKey,
    ):
        return key.sign(data)
    digest = _HASHES[sig.digest]()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(digest))
    pad: padding.AsymmetricPadding = (
        padding.PSS(padding.MGF1(digest), digest.digest_size) if sig.pss else padding.PKCS1v15()
    )
    return key.sign(data, pad, digest)


def sign_tbs(tbs: bytes, key: PrivateKey, sig: Sig = Sig()) -> bytes:
    """Certificate ::= SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING }, signed by ``key``."""
    algorithm = algorithm_identifier(key, sig)
    inner = seq(oid(sig.inner_oid)) if sig.inner_oid else algorithm
    tbs = _replace(tbs, _SIGNATURE, inner)
    signature = bytearray(_sign(key, tbs, sig))
    if sig.corrupt:
        signature[len(signature) // 2] ^= 0x01
    return seq(tbs, algorithm, bit_string(bytes(signature)))


# ------------------------------------------------------------------- keys

# P-256 (SEC 2, secp256r1) spelt out, as certificates with explicit curve
# parameters carry it.
_P256 = {
    "p": 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
    "a": 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC,
    "b": 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    "gx": 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    "gy": 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    "n": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}


def explicit_p256_spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The SubjectPublicKeyInfo of a P-256 key with the curve's parameters
    written out (ECParameters) instead of its name."""

    def octets32(value: int) -> bytes:
        return octets(value.to_bytes(32, "big"))

    c = _P256
    parameters = seq(
        integer(1),
        seq(oid("1.2.840.10045.1.1"), integer(c["p"])),
        seq(octets32(c["a"]), octets32(c["b"])),
        octets(b"\x04" + c["gx"].to_bytes(32, "big") + c["gy"].to_bytes(32, "big")),
        integer(c["n"]),
        integer(1),
    )
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return seq(seq(oid("1.2.840.10045.2.1"), parameters), bit_string(point))


@functools.cache
def rsa_key(size: int = 2048, slot: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key, generated once per size and slot: RSA generation is slow."""
    del slot  # only part of the cache key
    return rsa.generate_private_key(65537, size)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A fresh EC key (P-256 unless told): fast enough to make one per certificate."""
    return ec.generate_private_key(curve or ec.SECP256R1())


# --------------------------------------------------------------- building


def name(common_name: str | None, organization: str = "check_pg_tls crafted") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if common_name is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def bc(ca: bool, path_length: int | None = None, critical: bool = True) -> Ext:
    return x509.BasicConstraints(ca=ca, path_length=path_length), critical


_KU_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def ku(*flags: str, critical: bool = True) -> Ext:
    """keyUsage with the named bits set (``key_cert_sign``, ``digital_signature`` ...)."""
    unknown = set(flags) - set(_KU_FLAGS)
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}")
    return x509.KeyUsage(**{flag: flag in flags for flag in _KU_FLAGS}), critical


def eku(*dotted: str, critical: bool = False) -> Ext:
    usages = [x509.ObjectIdentifier(d) for d in dotted]
    return x509.ExtendedKeyUsage(usages), critical


def san(*names: str, critical: bool = False) -> Ext:
    """subjectAltName: IP literals become iPAddress, everything else dNSName."""
    general: list[x509.GeneralName] = []
    for entry in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            general.append(x509.DNSName(entry))
    return x509.SubjectAlternativeName(general), critical


def raw(dotted: str, value: bytes, critical: bool = False) -> Ext:
    """Any extension, its value given as DER (cryptography copies it as is)."""
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(dotted), value), critical


SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
CA_EXTENSIONS: tuple[Ext, ...] = (bc(True), ku("key_cert_sign", "crl_sign"))


def leaf_extensions(*names: str) -> tuple[Ext, ...]:
    """What a public CA puts in a server certificate, for ``names``."""
    found = [bc(False), ku("digital_signature"), eku(SERVER_AUTH)]
    if names:
        found.append(san(*names))
    return tuple(found)


@dataclass(frozen=True)
class Cert:
    """A certificate as DER, its private key, and the name it was issued to."""

    der: bytes
    key: PrivateKey
    name: x509.Name

    @property
    def pem(self) -> bytes:
        return pem(self.der)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    @property
    def tbs(self) -> bytes:
        return elements(read(self.der)[1])[0]


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted, as a server's key file."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def issue(
    subject: str | x509.Name | None,
    issuer: Cert | None = None,
    *,
    key: PrivateKey | None = None,
    extensions: Sequence[Ext] = (),
    skid: bool = True,
    akid: bool = True,
    days: tuple[float, float] = (-1, 90),
    sig: Sig = Sig(),
    edits: Sequence[Edit] = (),
    issuer_name: x509.Name | None = None,
    serial: int | None = None,
) -> Cert:
    """A certificate for ``subject`` (a common name or a Name), signed by ``issuer``.

    ``issuer=None`` makes it self-signed. ``days`` is its validity, in days
    from now. ``skid``/``akid`` add the key identifiers (the authority one
    only for an issued certificate). ``edits`` change the TBS before it is
    signed; the signature follows ``sig``.
    """
    key = key or ec_key()
    subject_name = subject if isinstance(subject, x509.Name) else name(subject)
    signer = issuer.key if issuer else key
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer_name or (issuer.name if issuer else subject_name))
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(now + days[0] * DAY)
        .not_valid_after(now + days[1] * DAY)
    )
    if skid:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    if akid and issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    # Signed here only to get the TBS bytes; sign_tbs signs for real.
    draft_key = ec_key()
    tbs = builder.sign(draft_key, hashes.SHA256()).tbs_certificate_bytes
    for edit in edits:
        tbs = edit(tbs)
    return Cert(sign_tbs(tbs, signer, sig), key, subject_name)


# ------------------------------------------------------------ root files


def pem(*ders: bytes, label: str = "CERTIFICATE") -> bytes:
    """PEM blocks, 64 characters a line, as OpenSSL writes them."""
    out = []
    for der in ders:
        text = base64.b64encode(der).decode()
        lines = [text[i : i + 64] for i in range(0, len(text), 64)]
        out.append("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]))
    return ("\n".join(out) + "\n").encode()


def trusted_pem(cert: Cert, trust: Sequence[str] = (), reject: Sequence[str] = ()) -> bytes:
    """OpenSSL's ``TRUSTED CERTIFICATE``: the certificate, then its X509_CERT_AUX.

    X509_CERT_AUX ::= SEQUENCE { trust SEQUENCE OF OID OPTIONAL,
    reject [0] IMPLICIT SEQUENCE OF OID OPTIONAL, ... }; OpenSSL trusts a
    certificate with ``trust`` settings only for the purposes listed there.
    """
    aux = b""
    if trust:
        aux += seq(*(oid(t) for t in trust))
    if reject:
        aux += tlv(0xA0, b"".join(oid(r) for r in reject))
    return pem(cert.der + seq(aux), label="TRUSTED CERTIFICATE")


def openssl_trustout(cert: Cert, *options: str) -> bytes:
    """The same, made by ``openssl x509 -trustout`` (options such as ``-addtrust serverAuth``)."""
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "in.pem"
        source.write_bytes(cert.pem)
        done = subprocess.run(
            ["openssl", "x509", "-in", str(source), "-trustout", *options],
            check=True,
            capture_output=True,
        )
    return done.stdout


def load(cert: Cert) -> x509.Certificate:
    """The certificate as cryptography sees it (for the few that it can parse)."""
    return x509.load_der_x509_certificate(cert.der)
