"""A throwaway PKI built with cryptography: roots, intermediates and leaves.

EC P-256 keys keep it fast (a dozen certificates in a few milliseconds).
Extensions follow what public CAs issue, so the plugin is tested against
realistic certificates; every knob a scenario needs is a keyword.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "make_crl",
    "make_intermediate",
    "make_leaf",
    "make_root",
    "write_crls",
    "write_pem",
]

DAY = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(common_name: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "check_pg_tls tests")]
    if common_name is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name,
    issuer_name: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _aki(issuer: Issued) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())


def make_root(
    common_name: str = "check_pg_tls Test Root",
    days_before: float = 30,
    days_after: float = 3650,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key(), now - days_before * DAY, now + days_after * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_intermediate(
    issuer: Issued,
    common_name: str = "check_pg_tls Test Intermediate",
    days_before: float = 30,
    days_after: float = 1825,
    path_length: int | None = 0,
    crl_url: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    """An intermediate CA certificate; ``key`` to issue another with the same key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        _builder(
            _name(common_name),
            issuer.cert.subject,
            key.public_key(),
            now - days_before * DAY,
            now + days_after * DAY,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(_aki(issuer), critical=False)
    )
    if crl_url is not None:
        builder = builder.add_extension(_crl_points(crl_url), critical=False)
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def _crl_points(url: str) -> x509.CRLDistributionPoints:
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
    return x509.CRLDistributionPoints([point])


def make_leaf(
    issuer: Issued | None,
    dns: Sequence[str] = ("db.test",),
    ips: Sequence[str] = (),
    common_name: str | None = None,
    days_before: float = 1,
    days_after: float = 90,
    ca: bool = False,
    server_auth: bool = True,
    rsa_bits: int | None = None,
    crl_url: str | None = None,
    key: PrivateKey | None = None,
) -> Issued:
    """A server certificate; ``issuer=None`` makes it self-signed (snakeoil).

    The key is ``key`` (a renewal that keeps it), else a new EC P-256 key,
    or RSA of ``rsa_bits`` bits when given.
    """
    if key is None:
        key = (
            rsa.generate_private_key(65537, rsa_bits)
            if rsa_bits
            else ec.generate_private_key(ec.SECP256R1())
        )
    now = _now()
    subject = _name(common_name)
    issuer_name = subject if issuer is None else issuer.cert.subject
    builder = _builder(
        subject, issuer_name, key.public_key(), now - days_before * DAY, now + days_after * DAY
    )
    builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_auth else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    builder = builder.add_extension(_key_usage(cert_sign=ca), critical=True)
    if issuer is not None:
        builder = builder.add_extension(_aki(issuer), critical=False)
    if crl_url is not None:
        builder = builder.add_extension(_crl_points(crl_url), critical=False)
    cert = builder.sign(key if issuer is None else issuer.key, hashes.SHA256())
    return Issued(cert, key)


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def write_pem(path: Path, *certs: Issued | x509.Certificate) -> Path:
    """Write certificates as one PEM file, in the order given."""
    data = b"".join(
        (c.cert if isinstance(c, Issued) else c).public_bytes(serialization.Encoding.PEM)
        for c in certs
    )
    path.write_bytes(data)
    return path


def make_leaf_openssl(
    issuer: Issued, dns: Sequence[str] = ("db.test",), digest: str = "sha1", days: int = 90
) -> Issued:
    """A leaf signed with a digest cryptography refuses to sign with (SHA-1, MD5).

    Such certificates still exist in the wild; the openssl command line makes
    one from a request, copying its subjectAltName.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(dns[0] if dns else None))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), False)
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "leaf.csr").write_bytes(request.public_bytes(serialization.Encoding.PEM))
        write_pem(folder / "ca.crt", issuer)
        (folder / "ca.key").write_bytes(issuer.key_pem)
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(folder / "leaf.csr"),
                "-CA",
                str(folder / "ca.crt"),
                "-CAkey",
                str(folder / "ca.key"),
                f"-{digest}",
                "-days",
                str(days),
                "-copy_extensions",
                "copyall",
                "-set_serial",
                str(x509.random_serial_number()),
                "-out",
                str(folder / "leaf.crt"),
            ],
            check=True,
            capture_output=True,
        )
        cert = x509.load_pem_x509_certificate((folder / "leaf.crt").read_bytes())
    return Issued(cert, key)


def make_crl(
    issuer: Issued,
    revoked: Sequence[tuple[Issued, x509.ReasonFlags | None]] = (),
    days_before: float = 1,
    days_after: float = 7,
    signer: Issued | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    number: int = 1,
    entry_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    next_update: bool = True,
    digest: str = "sha256",
) -> x509.CertificateRevocationList:
    """A CRL of ``issuer`` listing ``revoked``, signed by ``signer`` (default: the issuer)
    with ``digest`` (one cryptography may refuse to sign with, such as SHA-1).

    ``days_after`` below zero makes it stale (nextUpdate in the past); a
    ``signer`` with another key makes a CRL that only claims the issuer's name.
    ``extensions`` (value, critical) are added to the CRL, ``entry_extensions``
    to every entry; ``next_update=False`` leaves nextUpdate out, which
    cryptography's builder will not do.
    """
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now - days_before * DAY)
        .next_update(now + days_after * DAY)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    for cert, reason in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(cert.cert.serial_number)
            .revocation_date(now - DAY)
        )
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        for value, critical in entry_extensions:
            entry = entry.add_extension(value, critical=critical)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign((signer or issuer).key, hashes.SHA256())
    if next_update and digest == "sha256":
        return crl
    from . import crafted

    # TBSCertList: version, signature, issuer, thisUpdate, nextUpdate, ...
    _, content, _ = crafted.read(crl.tbs_certlist_bytes)
    fields = crafted.elements(content)
    if not next_update:
        del fields[4]
    der = crafted.sign_tbs(crafted.seq(*fields), (signer or issuer).key, crafted.Sig(digest=digest))
    return x509.load_der_x509_crl(der)


def write_crls(path: Path, *crls: x509.CertificateRevocationList) -> Path:
    """Write CRLs as one PEM file, the form libpq's sslcrl reads."""
    path.write_bytes(b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in crls))
    return path
