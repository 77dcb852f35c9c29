"""Escaping certificate text before it reaches a terminal or a status line."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from check_pg_tls.text import printable, safe, span

LIMIT = 200


def printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(char) < 0x7F for char in text)


def test_plain_text_is_unchanged() -> None:
    assert safe("CN=db.example.com,O=Example Ltd") == "CN=db.example.com,O=Example Ltd"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a\nb", "a\\x0ab", id="newline"),
        pytest.param("a\r\nb", "a\\x0d\\x0ab", id="crlf"),
        pytest.param("a\tb", "a\\x09b", id="tab"),
        pytest.param("\x1b[31mred", "\\x1b[31mred", id="terminal-escape"),
        pytest.param("\x00", "\\x00", id="nul"),
        pytest.param("\x7f", "\\x7f", id="delete"),
        pytest.param("a|b", "a\\x7cb", id="perfdata-separator"),
        pytest.param("a\\b", "a\\x5cb", id="backslash"),
        pytest.param("\x85", "\\x85", id="c1-control"),
        pytest.param("caf\u00e9", "caf\\xe9", id="latin-1"),
        pytest.param("\u20ac", "\\u20ac", id="bmp"),
        pytest.param("\u202e", "\\u202e", id="bidi-override"),
        pytest.param("\U0001f600", "\\U0001f600", id="astral"),
    ],
)
def test_unsafe_characters_are_escaped(text: str, expected: str) -> None:
    assert safe(text) == expected


def test_long_text_is_capped() -> None:
    result = safe("a" * 1000)
    assert len(result) == LIMIT
    assert result.endswith("...")


def test_text_at_the_limit_is_not_cut() -> None:
    assert safe("a" * LIMIT) == "a" * LIMIT


def test_cap_counts_the_escaped_length() -> None:
    result = safe("\n" * 100)
    assert len(result) == LIMIT


def test_limit_can_be_chosen() -> None:
    assert len(safe("a" * 1000, limit=50)) == 50


@given(st.text())
@example("|" * 300)
@example("\\" * 300)
@example("\U0010ffff" * 30)
def test_result_is_short_printable_ascii_without_pipe(text: str) -> None:
    result = safe(text)
    assert printable_ascii(result)
    assert "|" not in result
    assert len(result) <= LIMIT


@given(st.text(max_size=20))
@example("\\x41")
@example("a\\u20acb")
def test_escaping_is_reversible_when_not_capped(text: str) -> None:
    # Backslash itself is escaped, so no two texts give the same result.
    assert safe(text).encode("ascii").decode("unicode_escape") == text


@given(st.text())
def test_printable_leaves_safe_text_alone(text: str) -> None:
    assert printable(safe(text)) == safe(text)


@given(st.text())
def test_printable_is_printable_ascii(text: str) -> None:
    assert printable_ascii(printable(text))


def test_printable_escapes_only_what_is_not_printable_ascii() -> None:
    assert printable("d\u00e9.test | a\\b\x00") == "d\\xe9.test | a\\b\\x00"


def test_bytes_kept_by_surrogateescape_show_as_bytes() -> None:
    assert safe(b"bad\xffname".decode("utf-8", "surrogateescape")) == "bad\\xffname"


@pytest.mark.parametrize(
    ("days", "text"),
    [
        (400.7, "400 days"),
        (2.0, "2 days"),
        (1.99, "47 hours"),
        (1 / 24, "1 hour"),
        (1 / 24 - 1e-9, "59 minutes"),
        (2 / 1440, "2 minutes"),
        (1 / 1440, "1 minute"),
        (1 / 1440 - 1e-9, "less than a minute"),
        (0.0, "less than a minute"),
    ],
)
def test_span_says_the_largest_whole_unit(days: float, text: str) -> None:
    assert span(days) == text


@given(st.floats(min_value=0, max_value=1e6))
def test_span_never_says_zero(days: float) -> None:
    assert not span(days).startswith("0 ")
