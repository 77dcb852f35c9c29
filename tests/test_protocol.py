"""The SSLRequest bytes and the judgement of the server's one-byte answer."""

from __future__ import annotations

import re
import struct
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from check_pg_tls.protocol import (
    MAX_MESSAGE,
    SSL_REQUEST,
    SSL_REQUEST_CODE,
    TERMINATE,
    AuthCode,
    ProtocolViolation,
    Reply,
    StartupReplyKind,
    message_length,
    parse_reply,
    parse_session_message,
    parse_startup_reply,
    session_message_length,
    startup_message,
)

# An ErrorResponse as a server sends it: 'E', Int32 length, then fields
# (severity, code, message) each NUL-terminated, and a final NUL.
_ERROR_FIELDS = b"SFATAL\x00C53300\x00Msorry, too many clients already <script>\x00\x00"
ERROR_RESPONSE = b"E" + (4 + len(_ERROR_FIELDS)).to_bytes(4, "big") + _ERROR_FIELDS

ANSWERED = {b"S"[0], b"N"[0], b"E"[0]}


def violation(data: bytes) -> str:
    with pytest.raises(ProtocolViolation) as caught:
        parse_reply(data)
    return str(caught.value)


def test_ssl_request_is_the_eight_documented_bytes() -> None:
    assert bytes.fromhex("00000008 04D2162F") == SSL_REQUEST


def test_ssl_request_code_is_1234_5679() -> None:
    assert SSL_REQUEST_CODE == (1234 << 16) | 5679


def test_s_means_tls() -> None:
    assert parse_reply(b"S") is Reply.TLS


def test_n_means_no_tls() -> None:
    assert parse_reply(b"N") is Reply.NO_TLS


def test_e_with_error_response_means_error() -> None:
    assert parse_reply(ERROR_RESPONSE) is Reply.ERROR


def test_error_reply_carries_no_server_text() -> None:
    reply = parse_reply(ERROR_RESPONSE)
    assert "too many clients" not in repr(reply)
    assert "too many clients" not in str(reply)


def test_empty_answer_is_a_violation() -> None:
    assert violation(b"")


@pytest.mark.parametrize(
    "extra",
    [b"\x00", b"\x16\x03\x01", b"S", b"N" * 1000],
    ids=["nul", "tls-record", "second-s", "many-bytes"],
)
def test_bytes_after_s_are_a_violation_naming_the_cve(extra: bytes) -> None:
    assert "CVE-2021-23222" in violation(b"S" + extra)


@given(st.binary(min_size=1))
def test_any_bytes_after_s_are_a_violation_naming_the_cve(extra: bytes) -> None:
    assert "CVE-2021-23222" in violation(b"S" + extra)


@pytest.mark.parametrize(
    "first", sorted(set(range(256)) - ANSWERED), ids=lambda byte: f"0x{byte:02x}"
)
def test_any_other_first_byte_is_a_violation(first: int) -> None:
    message = violation(bytes([first]))
    assert f"0x{first:02x}" in message


def test_violation_for_an_http_answer_does_not_quote_it() -> None:
    message = violation(b"HTTP/1.1 400 Bad Request\r\n\r\n<html>")
    assert "0x48" in message
    assert "HTTP" not in message
    assert "Bad Request" not in message
    assert "<html>" not in message


def test_violation_after_s_does_not_quote_the_queued_bytes() -> None:
    message = violation(b"S" + ERROR_RESPONSE)
    assert "too many clients" not in message
    assert "FATAL" not in message


@given(st.binary())
@example(b"")
@example(b"S")
@example(b"SS")
def test_parse_reply_raises_only_protocol_violation(data: bytes) -> None:
    try:
        reply = parse_reply(data)
    except ProtocolViolation:
        return
    assert isinstance(reply, Reply)


@given(st.binary())
@example(b"S")
@example(b"S\x00")
def test_tls_only_for_exactly_s(data: bytes) -> None:
    try:
        reply = parse_reply(data)
    except ProtocolViolation:
        assert data != b"S"
        return
    assert (reply is Reply.TLS) == (data == b"S")


# Replies that start with N or E and go on with anything: st.binary() alone
# draws such a reply about once in 128 examples, i.e. almost never.
N_OR_E_REPLIES = st.builds(
    lambda first, rest: first + rest, st.sampled_from([b"N", b"E"]), st.binary()
)


def test_n_and_e_are_judged_by_the_first_byte() -> None:
    drawn: Counter[bytes] = Counter()

    @given(N_OR_E_REPLIES)
    @settings(max_examples=100, database=None)
    def judged_by_first_byte(data: bytes) -> None:
        drawn[data[:1]] += 1
        expected = {b"N": Reply.NO_TLS, b"E": Reply.ERROR}[data[:1]]
        assert parse_reply(data) is expected

    judged_by_first_byte()
    # The property was tried on both kinds of reply, not on none.
    assert drawn[b"N"] >= 10 and drawn[b"E"] >= 10, drawn


@given(st.binary())
@example(b"S" + ERROR_RESPONSE)
@example(b"Hello, I am not PostgreSQL")
def test_violation_message_never_depends_on_bytes_after_the_first(data: bytes) -> None:
    try:
        parse_reply(data)
    except ProtocolViolation as exc:
        message = str(exc)
    else:
        return
    blanked = data[:1] + b"\x00" * (len(data) - 1)
    assert message == violation(blanked)
    assert message.isascii()
    assert message.isprintable()
    # At most the first byte, and only as hex.
    assert len(re.findall(r"0x[0-9a-f]{2}", message)) <= 1


# --- the StartupMessage exchange (--check-plaintext) -------------------------------


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def test_startup_message_bytes() -> None:
    assert startup_message("nagios", "postgres") == (
        b"\x00\x00\x00\x27\x00\x03\x00\x00user\x00nagios\x00database\x00postgres\x00\x00"
    )


@pytest.mark.parametrize(("user", "database"), [("", "db"), ("a\x00b", "db"), ("u", "")])
def test_startup_message_rejects_bad_names(user: str, database: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        startup_message(user, database)


def test_authentication_request_is_kept_with_its_code() -> None:
    reply = parse_startup_reply(_message(b"R", struct.pack("!I", 10) + b"SCRAM-SHA-256\x00\x00"))
    assert reply.kind is StartupReplyKind.AUTHENTICATION
    assert reply.auth_code == 10


def test_error_keeps_only_the_sqlstate() -> None:
    body = b"SFATAL\x00VFATAL\x00C28000\x00Mno pg_hba.conf entry for host\x00\x00"
    reply = parse_startup_reply(_message(b"E", body))
    assert reply.kind is StartupReplyKind.ERROR
    assert reply.sqlstate == "28000"
    assert "pg_hba" not in repr(reply)


def test_error_with_a_malformed_sqlstate_keeps_none() -> None:
    reply = parse_startup_reply(_message(b"E", b"C28\x1b[31m\x00Mx\x00\x00"))
    assert reply.sqlstate is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"R\x00\x00",
        b"X\x00\x00\x00\x08abcd",
        b"E\x00\x00\x00\x02",
        b"E\xff\xff\xff\xff",
        _message(b"R", b"\x00\x00"),
    ],
)
def test_malformed_startup_replies(data: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_startup_reply(data)


def test_length_limit_protects_the_reader() -> None:
    with pytest.raises(ProtocolViolation, match="impossible length"):
        message_length(b"E" + struct.pack("!I", MAX_MESSAGE + 1))


@given(st.binary(max_size=64))
def test_startup_reply_parser_only_raises_protocol_violation(data: bytes) -> None:
    try:
        reply = parse_startup_reply(data)
    except ProtocolViolation:
        return
    assert reply.kind in (StartupReplyKind.AUTHENTICATION, StartupReplyKind.ERROR)
    assert reply.sqlstate is None or (len(reply.sqlstate) == 5 and reply.sqlstate.isalnum())


# --- authentication requests and a session's start (--check-auth) ------------------


def _request(code: int, extra: bytes = b"") -> bytes:
    return _message(b"R", struct.pack("!I", code) + extra)


def test_sasl_mechanisms_are_kept_in_the_servers_order() -> None:
    reply = parse_startup_reply(_request(10, b"SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"))
    assert reply.auth_code == AuthCode.SASL
    assert reply.mechanisms == ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")


def test_an_empty_sasl_list_is_kept_empty() -> None:
    assert parse_startup_reply(_request(10, b"\x00")).mechanisms == ()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (b"", "not terminated"),
        (b"SCRAM-SHA-256", "not terminated"),
        (b"SCRAM-SHA-256\x00", "not terminated"),
        (b"SCRAM-SHA-256\x00\x00X", "data after its list"),
        (b"scram-sha-256\x00\x00", "impossible name"),
        (b"SCRAM SHA\x00\x00", "impossible name"),
        (b"A" * 21 + b"\x00\x00", "impossible name"),
        (b"\xff\x00\x00", "impossible name"),
    ],
)
def test_malformed_sasl_lists(extra: bytes, reason: str) -> None:
    with pytest.raises(ProtocolViolation, match=reason):
        parse_startup_reply(_request(10, extra))


@pytest.mark.parametrize(
    ("code", "extra"),
    [(0, b"x"), (3, b"\x00"), (5, b"abc"), (5, b"abcde"), (7, b"x"), (9, b"x"), (2, b"x")],
)
def test_requests_of_fixed_length_must_have_it(code: int, extra: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="malformed authentication request"):
        parse_startup_reply(_request(code, extra))


@pytest.mark.parametrize("code", [0, 2, 3, 6, 7, 9])
def test_requests_without_data(code: int) -> None:
    assert parse_startup_reply(_request(code)).auth_code == code


def test_md5_request_carries_a_four_byte_salt() -> None:
    assert parse_startup_reply(_request(5, b"salt")).auth_code == AuthCode.MD5_PASSWORD


@pytest.mark.parametrize("code", [8, 11, 12])
def test_a_continuation_cannot_come_first(code: int) -> None:
    with pytest.raises(ProtocolViolation, match="had not begun"):
        parse_startup_reply(_request(code, b"data"))


def test_an_unknown_request_code_is_kept_for_the_judgement() -> None:
    reply = parse_startup_reply(_request(99, b"anything"))
    assert reply.kind is StartupReplyKind.AUTHENTICATION
    assert reply.auth_code == 99


def test_terminate_bytes() -> None:
    assert TERMINATE == b"X\x00\x00\x00\x04"


@pytest.mark.parametrize(
    ("message", "kind", "sqlstate"),
    [
        (_message(b"S", b"server_version\x0015.18\x00"), "S", None),
        (_message(b"K", bytes(8)), "K", None),
        (_message(b"N", b"SNOTICE\x00C00000\x00Mhi\x00\x00"), "N", None),
        (_message(b"Z", b"I"), "Z", None),
        (_message(b"Z", b"T"), "Z", None),
        (_message(b"E", b"SFATAL\x00C3D000\x00Mno such database <x>\x00\x00"), "E", "3D000"),
    ],
)
def test_session_messages(message: bytes, kind: str, sqlstate: str | None) -> None:
    parsed = parse_session_message(message)
    assert parsed.kind == kind
    assert parsed.sqlstate == sqlstate
    assert parsed.ends_start == (kind in "ZE")
    assert "<x>" not in repr(parsed)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "without answering the login"),
        (b"Z\x00\x00", "without answering the login"),
        (_message(b"R", struct.pack("!I", 0)), "byte 0x52"),
        (_message(b"D", b""), "byte 0x44"),
        (b"S" + struct.pack("!I", MAX_MESSAGE + 1), "impossible length"),
        (b"S" + struct.pack("!I", 3), "impossible length"),
        (b"S" + struct.pack("!I", 10) + b"abc", "truncated"),
        (_message(b"Z", b""), "malformed ReadyForQuery"),
        (_message(b"Z", b"X"), "malformed ReadyForQuery"),
        (_message(b"Z", b"II"), "malformed ReadyForQuery"),
    ],
)
def test_malformed_session_messages(message: bytes, reason: str) -> None:
    with pytest.raises(ProtocolViolation, match=re.escape(reason)):
        parse_session_message(message)


def test_session_header_length() -> None:
    assert session_message_length(b"Z" + struct.pack("!I", 5)) == 1


@given(st.binary(max_size=64))
def test_session_parser_only_raises_protocol_violation(data: bytes) -> None:
    try:
        parsed = parse_session_message(data)
    except ProtocolViolation:
        return
    assert parsed.kind in "SKNZE"
