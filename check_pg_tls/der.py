"""Just enough DER to read a certificate's names and public key as they were sent.

libpq walks the subjectAltName entries in their order and takes the raw
bytes of the first Common Name; cryptography offers neither (it refuses a
whole extension over one entry it cannot represent, and decodes names into
text). DANE hashes the SubjectPublicKeyInfo exactly as the certificate
encodes it, which cryptography does not give either: it re-serialises the
key (an EC point stored compressed comes back uncompressed, an RSA key's
absent parameters come back as NULL, an RSA-PSS key as plain RSA). Bytes in,
bytes out; anything malformed raises :class:`DerError`.
"""

from __future__ import annotations

from collections.abc import Iterator

from .record import Record

__all__ = [
    "OID_COMMON_NAME",
    "OID_SUBJECT_ALT_NAME",
    "DerError",
    "Tlv",
    "children",
    "extensions",
    "parse",
    "subject_attributes",
    "subject_name",
    "subject_public_key_info",
]

#: Content bytes of the OBJECT IDENTIFIERs this module looks for.
OID_SUBJECT_ALT_NAME = bytes.fromhex("551d11")  # 2.5.29.17
OID_COMMON_NAME = bytes.fromhex("550403")  # 2.5.4.3

_SEQUENCE, _SET, _OID, _BOOLEAN, _OCTET_STRING, _BIT_STRING = 0x30, 0x31, 0x06, 0x01, 0x04, 0x03
_EXTENSIONS_TAG = 0xA3  # [3] EXPLICIT in TBSCertificate


class DerError(ValueError):
    """The bytes are not the DER structure they should be."""


class Tlv(Record):
    """One tag-length-value: the tag byte and the content's bounds in ``data``."""

    tag: int
    data: bytes
    start: int
    end: int
    #: Where the tag byte is: the whole element is ``data[head:end]``.
    head: int = 0

    @property
    def content(self) -> bytes:
        return self.data[self.start : self.end]

    @property
    def encoded(self) -> bytes:
        """The whole element, tag and length included, as it was encoded."""
        return self.data[self.head : self.end]


def parse(data: bytes, offset: int = 0) -> Tlv:
    """The TLV starting at ``offset`` (single-byte tags only, as in certificates)."""
    if offset + 2 > len(data):
        raise DerError("truncated")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tag")
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or position + count > len(data):
            raise DerError("bad length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    if position + length > len(data):
        raise DerError("truncated")
    return Tlv(tag, data, position, position + length, offset)


def children(parent: Tlv) -> Iterator[Tlv]:
    """The TLVs inside a constructed one, in order."""
    position = parent.start
    while position < parent.end:
        child = parse(parent.data[: parent.end], position)
        yield child
        position = child.end


def _tbs_fields(certificate: bytes) -> list[Tlv]:
    outer = parse(certificate)
    if outer.tag != _SEQUENCE:
        raise DerError("not a certificate")
    tbs = next(children(outer), None)
    if tbs is None or tbs.tag != _SEQUENCE:
        raise DerError("not a certificate")
    return list(children(tbs))


def extensions(certificate: bytes) -> list[tuple[bytes, bool, bytes]]:
    """Every extension as (OID content bytes, critical, extnValue content), in order."""
    fields = _tbs_fields(certificate)
    wrapper = next((f for f in fields if f.tag == _EXTENSIONS_TAG), None)
    if wrapper is None:
        return []
    sequence = next(children(wrapper), None)
    if sequence is None or sequence.tag != _SEQUENCE:
        raise DerError("bad extensions")
    out = []
    for extension in children(sequence):
        parts = list(children(extension))
        if len(parts) < 2 or parts[0].tag != _OID or parts[-1].tag != _OCTET_STRING:
            raise DerError("bad extension")
        critical = len(parts) == 3 and parts[1].tag == _BOOLEAN and parts[1].content != b"\x00"
        out.append((parts[0].content, critical, parts[-1].content))
    return out


def _tbs_field(certificate: bytes, position: int, what: str) -> Tlv:
    # version [0] is optional; then serial, signature, issuer, validity,
    # subject, subjectPublicKeyInfo: ``position`` counts from the serial.
    fields = _tbs_fields(certificate)
    index = position + (1 if fields and fields[0].tag == 0xA0 else 0)
    if len(fields) <= index or fields[index].tag != _SEQUENCE:
        raise DerError(f"no {what}")
    return fields[index]


def subject_public_key_info(certificate: bytes) -> bytes:
    """The SubjectPublicKeyInfo element, tag to last byte, exactly as the certificate holds it."""
    spki = _tbs_field(certificate, 5, "subjectPublicKeyInfo")
    parts = list(children(spki))
    if len(parts) != 2 or parts[0].tag != _SEQUENCE or parts[1].tag != _BIT_STRING:
        raise DerError("bad subjectPublicKeyInfo")
    return spki.encoded


def subject_name(certificate: bytes) -> bytes:
    """The subject Name element, tag to last byte, exactly as the certificate holds it.

    Walks only as far as the subject: it is read for every certificate of
    a system's trust store.
    """
    outer = parse(certificate)
    tbs = parse(certificate[: outer.end], outer.start)
    if outer.tag != _SEQUENCE or tbs.tag != _SEQUENCE:
        raise DerError("not a certificate")
    data = certificate[: tbs.end]
    field = parse(data, tbs.start)
    # [0] version, if any; then serial, signature, issuer, validity, subject.
    for _ in range(5 if field.tag == 0xA0 else 4):
        field = parse(data, field.end)
    if field.tag != _SEQUENCE:
        raise DerError("no subject")
    return field.encoded


def subject_attributes(certificate: bytes) -> list[tuple[bytes, int, bytes]]:
    """The subject's attributes as (OID content, string tag, raw value bytes), in order."""
    subject = _tbs_field(certificate, 4, "subject")
    out = []
    for rdn in children(subject):
        if rdn.tag != _SET:
            raise DerError("bad name")
        for attribute in children(rdn):
            parts = list(children(attribute))
            if len(parts) != 2 or parts[0].tag != _OID:
                raise DerError("bad attribute")
            out.append((parts[0].content, parts[1].tag, parts[1].content))
    return out
