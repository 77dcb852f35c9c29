"""DANE hashes the certificate's own bytes: the plugin agrees with OpenSSL's DANE on every record.

Each server (a real PostgreSQL 15) presents a certificate whose public key a
library re-serialises differently from how the certificate encodes it: an EC
point stored compressed, explicit EC parameters, an RSA key without the NULL
parameters, an RSA-PSS key; and a chain whose intermediate and root have
compressed EC keys. A validating unbound publishes, for each, the records
the certificate's own bytes give and those the re-serialised key gives.

The oracle is OpenSSL's DANE, as the system's ``openssl s_client
-starttls postgres -dane_tlsa_domain NAME -dane_tlsa_rrdata RECORD`` applies
it: for every record, the plugin's ``dane`` finding is OK exactly when
s_client verifies the server with that record. Each record's outcome is
pinned first, so a broken oracle cannot pass. Expected association data is
computed from the DER by the tests (dane_oracle.py), not by the plugin.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from testbed import crafted, dnslab, pki
from testbed.crafted import Cert, bit_string, oid, read, seq, set_public_key_info
from testbed.pgcluster import Cluster, Workspace

from .conftest import Pki, Run, run_plugin
from .dane_oracle import openssl_dane, reencoded, sha256, spki_of

HOST_SUFFIX = "enc.test"
LEAF_TAGS = ("raw311", "re311", "raw312", "raw310", "re310", "cert301")
CA_TAGS = (
    "ta-raw", "ta-re", "ta-full", "ta-full-re", "root-key", "root-key-re", "pkix-raw", "pkix-re",
)  # fmt: skip
LEAF_LABELS = ("compressed", "explicit", "rsa-no-null", "rsa-pss")
EC_PUBLIC_KEY, PRIME256V1 = "1.2.840.10045.2.1", "1.2.840.10045.3.1.7"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"


def as_crafted(issued: pki.Issued) -> Cert:
    return Cert(issued.cert.public_bytes(Encoding.DER), issued.key, issued.cert.subject)


def compressed_p256(key: crafted.PrivateKey) -> bytes:
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    return seq(seq(oid(EC_PUBLIC_KEY), oid(PRIME256V1)), bit_string(point))


def rsa_without_null(key: crafted.PrivateKey) -> bytes:
    usual = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    _, bits = crafted.elements(read(usual)[1])
    return seq(seq(oid(RSA_ENCRYPTION)), bits)


def rsa_pss_key() -> tuple[crafted.PrivateKey, bytes, bytes]:
    """An RSA-PSS key made by OpenSSL: the private key as cryptography loads it,
    the key file PostgreSQL loads, and its SubjectPublicKeyInfo (id-RSASSA-PSS)."""
    key_pem = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"],
        capture_output=True,
        check=True,
    ).stdout
    spki = subprocess.run(
        ["openssl", "pkey", "-pubout", "-outform", "DER"],
        input=key_pem,
        capture_output=True,
        check=True,
    ).stdout
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, key_pem, spki


@dataclass(frozen=True)
class Served:
    """One server: its chain (leaf first) and the leaf's key file."""

    label: str
    chain: tuple[Cert, ...]
    key_pem: bytes

    @property
    def host(self) -> str:
        return f"{self.label}.{HOST_SUFFIX}"


def _leaf_with(label: str, issuer: Cert, key: crafted.PrivateKey, spki: bytes) -> Cert:
    return crafted.issue(
        label,
        issuer,
        key=key,
        extensions=crafted.leaf_extensions(f"{label}.{HOST_SUFFIX}"),
        edits=[set_public_key_info(spki)],
    )


def renewal_leaf(issuer: Cert, key: crafted.PrivateKey | None = None) -> Cert:
    """A leaf for the renewal server's record host; a given key is stored compressed."""
    host = f"raw311.renewal.{HOST_SUFFIX}"
    edits = [set_public_key_info(compressed_p256(key))] if key is not None else []
    extensions = crafted.leaf_extensions(host)
    return crafted.issue("renewal", issuer, key=key, extensions=extensions, edits=edits)


def _servers(ca: Pki) -> list[Served]:
    inter = as_crafted(ca.intermediate)
    out = []
    ec_key = crafted.ec_key()
    leaf = _leaf_with("compressed", inter, ec_key, compressed_p256(ec_key))
    out.append(Served("compressed", (leaf, inter), leaf.key_pem))
    ec_key = crafted.ec_key()
    leaf = _leaf_with("explicit", inter, ec_key, crafted.explicit_p256_spki(ec_key))
    out.append(Served("explicit", (leaf, inter), leaf.key_pem))
    rsa_key = crafted.rsa_key(2048)
    leaf = _leaf_with("rsa-no-null", inter, rsa_key, rsa_without_null(rsa_key))
    out.append(Served("rsa-no-null", (leaf, inter), leaf.key_pem))
    pss_key, pss_pem, pss_spki = rsa_pss_key()
    leaf = _leaf_with("rsa-pss", inter, pss_key, pss_spki)
    out.append(Served("rsa-pss", (leaf, inter), pss_pem))
    # CAs with compressed keys: DANE-TA for the intermediate, PKIX-TA for the root.
    root_key, inter_key = crafted.ec_key(), crafted.ec_key()
    root = crafted.issue(
        "Compressed Root",
        key=root_key,
        extensions=crafted.CA_EXTENSIONS,
        edits=[set_public_key_info(compressed_p256(root_key))],
    )
    middle = crafted.issue(
        "Compressed Intermediate",
        root,
        key=inter_key,
        extensions=crafted.CA_EXTENSIONS,
        edits=[set_public_key_info(compressed_p256(inter_key))],
    )
    # DANE-TA checks the name: the leaf is valid for each record's host.
    hosts = [f"{tag}.ca-compressed.{HOST_SUFFIX}" for tag in CA_TAGS]
    leaf = crafted.issue("ca-compressed", middle, extensions=crafted.leaf_extensions(*hosts))
    out.append(Served("ca-compressed", (leaf, middle, root), leaf.key_pem))
    # Renewed on disk in a test of its own: only its 3 1 1 record is published.
    leaf = renewal_leaf(inter)
    out.append(Served("renewal", (leaf, inter), leaf.key_pem))
    return out


@dataclass(frozen=True)
class Record:
    """One TLSA record under test, published alone at ``host``."""

    server: Served
    #: Distinguishes the host name: ``raw311``, ``re311``, ...
    tag: str
    rdata: str
    #: Does OpenSSL's DANE accept the server with this record? Pinned first.
    matches: bool

    @property
    def host(self) -> str:
        return f"{self.tag}.{self.server.host}"

    @property
    def id(self) -> str:
        return f"{self.server.label}:{self.tag}"

    @property
    def usage(self) -> int:
        return int(self.rdata.split()[0])


def _records(server: Served) -> list[Record]:
    if server.label == "ca-compressed":
        middle, root = server.chain[1].der, server.chain[2].der
        for ca in (middle, root):
            assert spki_of(ca) != reencoded(ca), "the CA key re-serialises identically"
        return [
            Record(server, "ta-raw", f"2 1 1 {sha256(spki_of(middle))}", True),
            Record(server, "ta-re", f"2 1 1 {sha256(reencoded(middle))}", False),
            Record(server, "ta-full", f"2 1 0 {spki_of(middle).hex()}", True),
            # The intermediate's key, written otherwise: no byte match, and as
            # a bare key it signed the leaf, not the top of the chain.
            Record(server, "ta-full-re", f"2 1 0 {reencoded(middle).hex()}", False),
            # A whole key is an anchor even if the server does not send it
            # (RFC 7671 section 5.2.2): OpenSSL checks that it signed the
            # intermediate, however the key is encoded.
            Record(server, "root-key", f"2 1 0 {spki_of(root).hex()}", True),
            Record(server, "root-key-re", f"2 1 0 {reencoded(root).hex()}", True),
            Record(server, "pkix-raw", f"0 1 1 {sha256(spki_of(root))}", True),
            Record(server, "pkix-re", f"0 1 1 {sha256(reencoded(root))}", False),
        ]
    leaf = server.chain[0].der
    raw, again = spki_of(leaf), reencoded(leaf)
    if server.label == "renewal":
        return [Record(server, "raw311", f"3 1 1 {sha256(raw)}", True)]
    assert raw != again, f"{server.label}: the key re-serialises identically"
    return [
        Record(server, "raw311", f"3 1 1 {sha256(raw)}", True),
        Record(server, "re311", f"3 1 1 {sha256(again)}", False),
        Record(server, "raw312", f"3 1 2 {hashlib.sha512(raw).hexdigest()}", True),
        Record(server, "raw310", f"3 1 0 {raw.hex()}", True),
        Record(server, "re310", f"3 1 0 {again.hex()}", False),
        Record(server, "cert301", f"3 0 1 {sha256(leaf)}", True),
    ]


@dataclass(frozen=True)
class Outcome:
    #: Does OpenSSL's DANE accept the server with the record?
    openssl: bool
    #: The plugin's ``dane`` finding as JSON.
    dane: dict[str, str]


@dataclass
class Lab:
    clusters: dict[str, Cluster]
    servers: list[Served]
    records: list[Record]
    resolver: dnslab.Unbound
    roots: dict[str, Path]

    def plugin(self, record: Record, *args: str) -> Run:
        server = record.server
        return run_plugin(
            "-H", "127.0.0.1", "-p", str(self.clusters[server.label].port),
            "--servername", record.host, "--sslrootcert", str(self.roots[server.label]),
            "--dane", "--dns-server", self.resolver.server, *args,
        )  # fmt: skip

    def openssl(self, record: Record, rdata: str | None = None) -> bool:
        return openssl_dane(
            self.clusters[record.server.label].port,
            record.host,
            rdata or record.rdata,
            self.roots[record.server.label] if record.usage in (0, 1) else None,
        )


@pytest.fixture(scope="module")
def lab(workspace: Workspace, ca: Pki) -> Iterator[Lab]:
    servers = _servers(ca)
    clusters: dict[str, Cluster] = {}
    roots: dict[str, Path] = {}
    root_dir = workspace.new_dir("dane-enc-roots")
    placeholder = pki.make_leaf(None)
    for server in servers:
        cluster = workspace.cluster([placeholder], placeholder, name=f"dane-{server.label}")
        cluster.install_pem(b"".join(c.pem for c in server.chain[:2]), server.key_pem)
        clusters[server.label] = cluster.start()
        root = server.chain[2].pem if len(server.chain) > 2 else ca.root_file.read_bytes()
        roots[server.label] = root_dir / f"{server.label}.crt"
        roots[server.label].write_bytes(root)
    records = [record for server in servers for record in _records(server)]
    zone = dnslab.make_zone(
        HOST_SUFFIX,
        [
            f"_{clusters[r.server.label].port}._tcp.{r.tag}.{r.server.label} IN TLSA {r.rdata}"
            for r in records
        ],
    )
    resolver = dnslab.Unbound(workspace.new_dir("dns-enc"), [zone]).start()
    yield Lab(clusters, servers, records, resolver, roots)
    resolver.stop()
    for cluster in clusters.values():
        cluster.stop()


def _ids() -> list[str]:
    # Record ids without building certificates at collection time.
    leaf_ids = [f"{label}:{tag}" for label in LEAF_LABELS for tag in LEAF_TAGS]
    return leaf_ids + [f"ca-compressed:{tag}" for tag in CA_TAGS]


@pytest.fixture(scope="module")
def outcomes(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Per record: OpenSSL's answer and the plugin's dane finding.

    The plugin checks every record's host in one run per root file (a
    targets file); s_client runs beside it.
    """
    judged = [r for r in lab.records if r.server.label != "renewal"]
    with ThreadPoolExecutor(4) as pool:
        oracle = {r.id: pool.submit(lab.openssl, r) for r in judged}
        findings: dict[str, dict[str, str]] = {}
        for root in {str(lab.roots[r.server.label]) for r in judged}:
            batch = [r for r in judged if str(lab.roots[r.server.label]) == root]
            targets = tmp_path_factory.mktemp("dane-targets") / "targets"
            targets.write_text(
                "".join(f"127.0.0.1({r.host}):{lab.clusters[r.server.label].port}\n" for r in batch)
            )
            result = run_plugin(
                "--targets-file", str(targets), "--sslrootcert", root,
                "--dane", "--dns-server", lab.resolver.server, "--json",
            )  # fmt: skip
            documents = json.loads(result.stdout)["targets"]
            assert len(documents) == len(batch)
            for record, document in zip(batch, documents, strict=True):
                assert document["servername"] == record.host
                findings[record.id] = document["checks"]["dane"]
        return {r.id: Outcome(oracle[r.id].result(), findings[r.id]) for r in judged}


@pytest.mark.parametrize("record_id", _ids())
def test_the_plugin_agrees_with_openssl_dane(
    lab: Lab, outcomes: dict[str, Outcome], record_id: str
) -> None:
    (record,) = [r for r in lab.records if r.id == record_id]
    openssl, dane = outcomes[record_id].openssl, outcomes[record_id].dane
    assert openssl == record.matches, f"OpenSSL's DANE changed its mind on {record.rdata}"
    assert dane["ok"] == openssl, (record.rdata, dane)
    if openssl:
        kind = " ".join(record.rdata.split()[:3])
        assert dane["message"].startswith(
            (f"TLSA {kind} matches ", f"TLSA {kind} holds the key that signed ")
        ), dane
    else:
        assert dane["severity"] == "critical", dane
        assert dane["message"].startswith("no TLSA record matches the served certificate"), dane


_SUGGESTED = re.compile(r"the served key's record: (\S+)\. IN TLSA (3 1 1 [0-9a-f]{64})")


@pytest.mark.parametrize("label", ["compressed", "explicit", "rsa-no-null", "rsa-pss"])
def test_the_record_the_plugin_suggests_is_the_one_openssl_matches(lab: Lab, label: str) -> None:
    # Only the re-serialised key's record is published: CRITICAL, with the
    # record to publish instead, which OpenSSL must accept.
    (record,) = [r for r in lab.records if r.server.label == label and r.tag == "re311"]
    result = lab.plugin(record)
    assert result.returncode == 2, result.stdout
    found = _SUGGESTED.search(result.status_line)
    assert found is not None, result.status_line
    port = lab.clusters[label].port
    assert found.group(1) == f"_{port}._tcp.{record.host}"
    suggested = found.group(2)
    assert suggested == f"3 1 1 {sha256(spki_of(record.server.chain[0].der))}"
    assert lab.openssl(record, suggested)


def test_the_readme_recipe_gives_openssls_record_where_it_can(lab: Lab) -> None:
    # The README's openssl pipeline re-encodes the key as OpenSSL writes it:
    # right for compressed points, explicit parameters and RSA-PSS, wrong for
    # an RSA key without NULL parameters (the README says so).
    for server in (s for s in lab.servers if s.label in LEAF_LABELS):
        pubkey = subprocess.run(
            ["openssl", "x509", "-noout", "-pubkey"],
            input=server.chain[0].pem, capture_output=True, check=True,
        ).stdout  # fmt: skip
        der = subprocess.run(
            ["openssl", "pkey", "-pubin", "-outform", "DER"],
            input=pubkey, capture_output=True, check=True,
        ).stdout  # fmt: skip
        record = f"3 1 1 {sha256(der)}"
        (raw311,) = [r for r in lab.records if r.server is server and r.tag == "raw311"]
        agrees = record == raw311.rdata
        assert agrees == (server.label != "rsa-no-null"), server.label
        assert lab.openssl(raw311, record) == agrees


def test_a_renewed_certificate_gets_the_record_openssl_matches(
    lab: Lab, workspace: Workspace, ca: Pki
) -> None:
    # Served: a leaf whose record is published. On disk: a renewal with a
    # new key, stored as a compressed point.
    (published,) = [r for r in lab.records if r.server.label == "renewal"]
    renewed = renewal_leaf(as_crafted(ca.intermediate), crafted.ec_key())
    on_disk = workspace.new_dir("dane-renewed") / "fullchain.pem"
    on_disk.write_bytes(renewed.pem + as_crafted(ca.intermediate).pem)
    result = lab.plugin(published, "--cert-file", str(on_disk))
    assert result.returncode == 1, result.stdout
    found = re.search(
        r"publish `\S+\. IN TLSA (3 1 1 [0-9a-f]{64})` before reloading", result.stdout
    )
    assert found is not None, result.stdout
    record = found.group(1)
    assert record == f"3 1 1 {sha256(spki_of(renewed.der))}"
    assert record != f"3 1 1 {sha256(reencoded(renewed.der))}"
    # Reloaded: OpenSSL's DANE accepts the server with exactly that record.
    cluster = lab.clusters["renewal"]
    cluster.install_pem(on_disk.read_bytes(), renewed.key_pem)
    cluster.reload()
    cluster.wait_served(lambda seen: seen == renewed.der)
    assert lab.openssl(published, record)
    assert not lab.openssl(published, f"3 1 1 {sha256(reencoded(renewed.der))}")


def test_the_key_file_of_a_compressed_key_matches_its_certificate(lab: Lab, tmp_path: Path) -> None:
    # PostgreSQL loaded this key with this certificate (OpenSSL checked the
    # pair): the key file check must agree, however the point is encoded.
    server = next(s for s in lab.servers if s.label == "compressed")
    (record,) = [r for r in lab.records if r.server is server and r.tag == "raw311"]
    key_file = tmp_path / "server.key"
    key_file.write_bytes(server.key_pem)
    key_file.chmod(0o600)
    (target,) = json.loads(lab.plugin(record, "--json", "--key-file", str(key_file)).stdout)[
        "targets"
    ]
    assert target["checks"]["key_match"] == {
        "ok": True,
        "severity": "ok",
        "message": "private key matches the certificate",
    }


def test_an_rsa_key_does_not_match_an_rsa_pss_certificate(
    lab: Lab, workspace: Workspace, tmp_path: Path
) -> None:
    # The same modulus as an RSA-PSS key and as a plain RSA key: PostgreSQL
    # (OpenSSL) takes the certificate with the first and refuses the second.
    server = next(s for s in lab.servers if s.label == "rsa-pss")
    (record,) = [r for r in lab.records if r.server is server and r.tag == "raw311"]
    plain = serialization.load_pem_private_key(server.key_pem, None).private_bytes(
        Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    placeholder = pki.make_leaf(None)
    refusing = workspace.cluster([placeholder], placeholder, name="pss-plain-key")
    refusing.install_pem(b"".join(c.pem for c in server.chain), plain)
    with pytest.raises(RuntimeError, match="check of private key failed"):
        refusing.start()
    refusing.stop()

    def key_match(key_pem: bytes) -> dict[str, str]:
        key_file = tmp_path / "server.key"
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
        document = lab.plugin(record, "--json", "--key-file", str(key_file)).stdout
        (target,) = json.loads(document)["targets"]
        found: dict[str, str] = target["checks"]["key_match"]
        return found

    assert key_match(server.key_pem)["ok"]
    assert key_match(plain) == {
        "ok": False,
        "severity": "critical",
        "message": f"private key file {tmp_path / 'server.key'} does not belong to the served "
        "certificate",
    }
