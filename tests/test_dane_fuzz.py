"""Odd DNS answers, odd records and odd certificates never make DANE raise.

A resolver's answer (TLSA data of any length and parameters, Extended DNS
Errors with any text), records that almost match, host names with
underscores and a certificate whose key is stored unusually go through the
whole pure path, from the DNS message to the findings: each ends in findings
with a state, never in an exception. The DER reader, given any bytes, raises
only its own error.
"""

from __future__ import annotations

import datetime as dt
import functools

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from check_pg_tls import der
from check_pg_tls.certs import CertFacts, facts
from check_pg_tls.dane import dane_findings, record_for
from check_pg_tls.model import DaneSettings
from check_pg_tls.tlsa_lookup import _answer
from testbed import crafted, pki

NOW = dt.datetime.now(dt.timezone.utc)
OWNER = "_5432._tcp.my_host.example.test"
STATES = {"ok", "warning", "critical", "unknown"}


@functools.cache
def chain() -> tuple[CertFacts, ...]:
    """A leaf whose EC point is stored compressed, its intermediate and root."""
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    issuer = crafted.Cert(inter.cert.public_bytes(Encoding.DER), inter.key, inter.cert.subject)
    key = crafted.ec_key()
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    spki = crafted.seq(
        crafted.seq(crafted.oid("1.2.840.10045.2.1"), crafted.oid("1.2.840.10045.3.1.7")),
        crafted.bit_string(point),
    )
    leaf = crafted.issue(
        None,
        issuer,
        key=key,
        extensions=crafted.leaf_extensions("my_host.example.test"),
        edits=[crafted.set_public_key_info(spki)],
    )
    return (facts(x509.load_der_x509_certificate(leaf.der)), facts(inter.cert), facts(root.cert))


@st.composite
def tlsa_record(draw: st.DrawFn) -> tuple[int, int, int, bytes]:
    """Usage, selector, matching type and data that is random, or (almost) matches
    one of the chain's certificates. dnspython refuses a digest of the wrong
    length for types 1 and 2 (RFC 6698): those are always 32 or 64 bytes."""
    usage = draw(st.sampled_from([0, 1, 2, 3, 4, 255]))
    selector = draw(st.sampled_from([0, 1, 2]))
    mtype = draw(st.sampled_from([0, 1, 2, 3]))
    length = {1: 32, 2: 64}.get(mtype)
    random = st.binary(min_size=length or 1, max_size=length or 100)
    ders = [cert.der for cert in chain()]
    near = [record_for(d, 3, s, mtype).data for d in ders for s in (0, 1)] if mtype < 3 else []
    choices = [random] + (
        [st.sampled_from(near), st.sampled_from(near).map(lambda d: d[:-1] + bytes([d[-1] ^ 1]))]
        if near
        else []
    )
    data: bytes = draw(st.one_of(*choices))
    return usage, selector, mtype, data


def _response(
    records: list[tuple[int, int, int, bytes]],
    rcode: int,
    authenticated: bool,
    errors: list[tuple[int, str]],
) -> dns.message.Message:
    """A resolver's response as it comes off the wire."""
    query = dns.message.make_query(OWNER, "TLSA", use_edns=0, want_dnssec=True)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if authenticated:
        response.flags |= dns.flags.AD
    if records:
        rrset = response.find_rrset(
            response.answer,
            dns.name.from_text(OWNER),
            dns.rdataclass.IN,
            dns.rdatatype.TLSA,
            create=True,
        )
        for usage, selector, mtype, data in records:
            text = f"{usage} {selector} {mtype} {data.hex()}"
            rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text), 300)
    response.use_edns(0, options=[dns.edns.EDEOption(code, text or None) for code, text in errors])
    return dns.message.from_wire(response.to_wire(max_size=65535))


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(tlsa_record(), max_size=4),
    rcode=st.sampled_from([0, 2, 3, 5]),
    authenticated=st.booleans(),
    errors=st.lists(st.tuples(st.integers(0, 65535), st.text(max_size=40)), max_size=2),
    name=st.sampled_from(
        ["my_host.example.test", "other_host.example.test", "db.example.test", "127.0.0.1"]
    ),
    pkix=st.booleans(),
    renewed=st.sampled_from([None, 0, 1]),
)
def test_any_answer_ends_in_findings(
    records: list[tuple[int, int, int, bytes]],
    rcode: int,
    authenticated: bool,
    errors: list[tuple[int, str]],
    name: str,
    pkix: bool,
    renewed: int | None,
) -> None:
    answer = _answer(
        OWNER, "127.0.0.1:53", "--dns-server", _response(records, rcode, authenticated, errors)
    )
    presented = chain()[:2]
    on_disk = None if renewed is None else ("fullchain.pem", (chain()[renewed].certificate,))
    settings_ = DaneSettings(renewed=on_disk)  # type: ignore[arg-type]
    found = dane_findings(answer, presented, chain() if pkix else None, name, 5432, NOW, settings_)
    assert {f.check for f in found} <= {"dane", "dane_resolver", "dane_renewal"}
    for finding in found:
        assert finding.severity.text in STATES
        assert (finding.problem or finding.detail).isprintable()


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.sampled_from([c.der for c in chain()]).flatmap(
            lambda d: st.integers(0, len(d)).map(lambda n: d[:n])
        ),
    )
)
def test_the_public_key_reader_raises_only_its_own_error(data: bytes) -> None:
    try:
        spki = der.subject_public_key_info(data)
    except der.DerError:
        return
    assert spki[0] == 0x30 and spki in data
