"""The connection-string grammar against libpq's own parser, ``PQconninfoParse``.

Hypothesis writes ``key=value`` strings and URIs from the parts that make
them hard (quotes, backslashes, blanks, percent-encoding, brackets, commas,
``@``, ``&``, ``=``) and both libpq builds at hand read them through ctypes:
PostgreSQL 18's is the rule (every value equal, every refusal a refusal
with libpq's words), 15's may differ only where the README says it does.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from check_pg_tls.conninfo_text import KEYWORDS, SECRETS, mask, parse_options
from testbed.libpq import Libpq, libpq15, libpq18

#: Keywords libpq 16-18 added: libpq 15 calls each an invalid option.
NEWER = frozenset(
    {
        "sslnegotiation", "sslcertmode", "require_auth", "min_protocol_version",
        "max_protocol_version", "gssdelegation", "load_balance_hosts", "scram_client_key",
        "scram_server_key", "oauth_issuer", "oauth_client_id", "oauth_client_secret",
        "oauth_scope", "sslkeylogfile",
    }
)  # fmt: skip

_WORDS = [*sorted(KEYWORDS), "requiressl", "ssl", "bogus", "Host", ""]
_KEYWORD = st.sampled_from(_WORDS)
_CHARS = st.sampled_from([*list("ab1.:/@?&=,[]'\\ %\t"), "%2", "%20", "%41", "%zz", "%00", "é"])
_TEXT = st.lists(_CHARS, max_size=8).map("".join)


@st.composite
def keyword_strings(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        value = draw(_TEXT)
        if draw(st.booleans()):
            value = (
                "'"
                + value.replace("\\", "\\\\").replace("'", "\\'")
                + draw(st.sampled_from(["'", "", "'x"]))
            )
        blank = draw(st.sampled_from(["", " ", "  ", "\t"]))
        parts.append(f"{draw(_KEYWORD)}{blank}={draw(st.sampled_from(['', ' ']))}{value}")
    return draw(st.sampled_from([" ", "  ", "\n"])).join(parts) + draw(st.sampled_from(["", " "]))


@st.composite
def uris(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(["postgresql://", "postgres://"]))
    if draw(st.booleans()):
        text += draw(_TEXT) + draw(st.sampled_from(["", ":"])) + draw(_TEXT) + "@"
    hosts = []
    for _ in range(draw(st.integers(0, 3))):
        host = draw(st.one_of(_TEXT, _TEXT.map(lambda t: f"[{t}]")))
        if draw(st.booleans()):
            host += ":" + draw(_TEXT)
        hosts.append(host)
    text += ",".join(hosts)
    if draw(st.booleans()):
        text += "/" + draw(_TEXT)
    if draw(st.booleans()):
        params = [f"{draw(_KEYWORD)}{draw(st.sampled_from(['=', '', '==']))}{draw(_TEXT)}"
                  for _ in range(draw(st.integers(0, 3)))]  # fmt: skip
        text += "?" + "&".join(params)
    return text


def _ours(text: str) -> dict[str, str] | str:
    try:
        return parse_options(text)
    except ValueError as exc:
        return str(exc)


def _words(message: str) -> str:
    """A message without what it quotes: libpq quotes secrets, ours does not."""
    return re.sub(r'(the value of )?"[^"]*"|\(the text after a masked value\)', "Q", message)


def _agrees(text: str, libpq: Libpq) -> None:
    ours, theirs = _ours(text), libpq.parse(text)
    if isinstance(theirs, dict):
        assert ours == theirs
        return
    assert isinstance(ours, str), f"libpq refuses with {theirs!r}, the check reads {ours}"
    # The same words; libpq's URI messages go on to quote the whole URI.
    assert _words(theirs).startswith(_words(ours)), (ours, theirs)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(keyword_strings(), uris()))
@example("host=db\\.test")
@example("postgresql://app:hunter2@db/x?ssl=true")
@example("postgresql://db/x?application_name=%zz")
@example("postgresql://db/x?sslrootcert=%00")
@example("postgresql://db/x?sslmode= require ")
@example("postgresql://u:p@ss@h/x")
@example("postgresql://host?user=a@b")
@example("postgresql://h:5432%2C5433,b")
@example("host= port=5432")
def test_libpq18_reads_every_string_as_the_check_does(text: str) -> None:
    _agrees(text, libpq18())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(keyword_strings(), uris()))
@example("postgresql://db/x?sslmode= require ")
@example("postgresql://db/x?application_name=a b")
def test_libpq15_differs_only_where_the_readme_says(text: str) -> None:
    older, newer = libpq15().parse(text), libpq18().parse(text)
    if older == newer:
        return
    uses_newer = any(word in text for word in NEWER)
    # libpq 18 drops blanks around a URI's parts and refuses them inside; 15 keeps them.
    blanks_in_uri = text.startswith(("postgresql://", "postgres://")) and " " in text
    assert uses_newer or blanks_in_uri, (text, older, newer)


def test_the_check_knows_the_keywords_libpq18_knows() -> None:
    known = libpq18().keywords()
    assert set(known) == KEYWORDS
    # libpq's password fields (display character '*') are all masked.
    assert {key for key, shown in known.items() if shown == "*"} <= SECRETS
    assert set(libpq15().keywords()) == KEYWORDS - NEWER


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://app:hunter2@db/x?bogus=1", "postgresql://app:***@db/x?bogus=***"),
        ("postgresql://db/x?pasword=hunter2&ssl=true", "postgresql://db/x?pasword=***&ssl=true"),
        ("postgresql://app:hun%40ter2@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app:hun@ter2@db/x", "postgresql://app:***@db/x"),
        ("postgresql://db/x?password=hunter2&sslmode=require", "postgresql://db/x?password=***&sslmode=require"),
        ("postgresql://db/x?pass%77ord=hun&ter2&host=a", "postgresql://db/x?pass%77ord=***&host=a"),
        ("password=hunter2 bogus=1", "password=***"),
        ("pasword=hunter2 host=db", "pasword=*** host=db"),
        ("host=db password = 'hun ter\\'2' x=1", "host=db password = ***"),
        ("password=hun\\ ter2 host=db", "password=*** host=db"),
        ("password=hunter 2 3=x host=db", "password=*** host=db"),
        # What libpq reads as something else may be part of a password.
        ("password=hunter2 PW=tail", "password=***"),
        ("postgresql://app:hun/ter2@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app:5433/ter2@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app:hun?ter2@db/x?sslmode=require", "postgresql://app:***@db/x?sslmode=require"),
        ("postgresql://db:5432/x?user=admin@db", "postgresql://db:5432/x?user=admin@db"),
        ("app:hun#ter2@db", "app:***@db"),
        ("sslpassword=hunter2 requiressl=1", "sslpassword=*** requiressl=1"),
        ("host=db password='unterminated hunter2", "host=db password=***"),
        ("db.example.com:5432", "db.example.com:5432"),
    ],
)  # fmt: skip
def test_mask_hides_every_secret(text: str, masked: str) -> None:
    assert mask(text) == masked
