"""The text of a libpq connection string: its two grammars, and its secrets masked.

:func:`parse_options` reads a ``key=value`` string (blanks between pairs,
values quoted with ``'`` or not, ``\\`` escaping the next character) or a
``postgresql://`` URI (percent-encoded parts, ``?key=value&...``) into
keyword values as libpq 18's ``PQconninfoParse`` does
(fe-connect.c: conninfo_parse, conninfo_uri_parse_options,
conninfo_uri_decode). :func:`mask` renders any text, valid or not, with its
secrets replaced, as libpq's ``PQconninfo`` hides them; no message of this
module quotes a secret.

Pure text in, plain records out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["KEYWORDS", "MASKED", "SECRETS", "mask", "parse_options"]

#: Every keyword libpq 18 knows (``PQconndefaults``); any other is libpq's
#: "invalid connection option".
KEYWORDS = frozenset(
    {
        "service", "user", "password", "passfile", "channel_binding", "connect_timeout",
        "dbname", "host", "hostaddr", "port", "client_encoding", "options",
        "application_name", "fallback_application_name", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout", "sslmode",
        "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslcertmode",
        "sslpassword", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
        "require_auth", "min_protocol_version", "max_protocol_version",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "gssencmode", "krbsrvname",
        "gsslib", "gssdelegation", "replication", "target_session_attrs",
        "load_balance_hosts", "scram_client_key", "scram_server_key", "oauth_issuer",
        "oauth_client_id", "oauth_client_secret", "oauth_scope", "sslkeylogfile",
    }
)  # fmt: skip

#: Keywords whose value is a secret: libpq's password fields (shown as ``*``
#: by ``PQconndefaults``) and the SCRAM keys.
SECRETS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)

#: What :func:`mask` puts in place of a secret.
MASKED = "***"


_URI_PREFIXES = ("postgresql://", "postgres://")
#: C's isspace() in the C locale: what ends a key or an unquoted value.
_SPACE = " \t\n\v\f\r"

# --- reading: the text into keyword values, as PQconninfoParse ----------------


class _Item(NamedTuple):
    """A keyword and its value, or why libpq stops reading."""

    keyword: str
    value: str
    error: str | None = None


def parse_options(text: str) -> dict[str, str]:
    """The keyword values of a connection string, as libpq's ``PQconninfoParse`` gives them.

    A keyword given twice keeps its last value; ``requiressl`` and a URI's
    ``ssl=true`` become ``sslmode``, as in libpq.

    Raises:
        ValueError: libpq refuses the text; the message is libpq's, without secrets.
    """
    if "\x00" in text:
        raise ValueError("NUL character in connection string")
    uri = text.startswith(_URI_PREFIXES)
    options: dict[str, str] = {}
    for item in _uri_items(text) if uri else _keyword_items(text):
        if item.error is not None:
            raise ValueError(item.error)
        keyword, value = _renamed(item.keyword, item.value)
        if uri and (keyword, value) == ("ssl", "true"):
            keyword, value = "sslmode", "require"  # libpq's nod to JDBC
        if keyword not in KEYWORDS:
            if uri:
                raise ValueError(f'invalid URI query parameter: "{keyword}"')
            raise ValueError(f'invalid connection option "{keyword}"')
        options[keyword] = value
    return options


#: Shown instead of a word without '=' that follows a masked value: it may be
#: the rest of it (an unquoted password with a blank, a URI password with an '&').
_AFTER_SECRET = "(the text after a masked value)"  # noqa: S105 - words, not a password


def _renamed(keyword: str, value: str) -> tuple[str, str]:
    # libpq's conninfo_storeval: requiressl=1 is sslmode=require, any other
    # value sslmode=prefer.
    if keyword == "requiressl":
        return "sslmode", "require" if value.startswith("1") else "prefer"
    return keyword, value


def _keyword_items(text: str) -> Iterator[_Item]:
    """``key = value`` pairs: blanks between, a value quoted with ``'`` or not,
    ``\\`` escaping the next character in either."""
    position, end = 0, len(text)
    after_secret = False
    while position < end:
        if text[position] in _SPACE:
            position += 1
            continue
        start = position
        while position < end and text[position] != "=" and text[position] not in _SPACE:
            position += 1
        keyword = text[start:position]
        while position < end and text[position] in _SPACE:
            position += 1
        if position == end or text[position] != "=":
            shown = _AFTER_SECRET if after_secret else f'"{keyword}"'
            yield _Item(keyword, "", f'missing "=" after {shown} in connection info string')
            return
        position += 1
        while position < end and text[position] in _SPACE:
            position += 1
        value, position, error = _keyword_value(text, position)
        yield _Item(keyword, value, error)
        after_secret = _hidden(keyword)


def _keyword_value(text: str, position: int) -> tuple[str, int, str | None]:
    """The value that starts at ``position``: its text, where it ends, libpq's complaint."""
    out: list[str] = []
    end = len(text)
    quoted = position < end and text[position] == "'"
    if quoted:
        position += 1
    while position < end:
        char = text[position]
        if not quoted and char in _SPACE:
            return "".join(out), position, None
        if quoted and char == "'":
            return "".join(out), position + 1, None
        if char == "\\":
            position += 1
            if position < end:
                out.append(text[position])
                position += 1
            continue
        out.append(char)
        position += 1
    if quoted:
        return "".join(out), end, "unterminated quoted string in connection info string"
    return "".join(out), end, None


def _uri_items(uri: str) -> Iterator[_Item]:
    """The parts of ``postgresql://[user[:password]@][host][:port][,...][/dbname][?k=v&...]``.

    Every part may be percent-encoded; libpq decodes it, and libpq 18 also
    drops blanks around it and refuses blanks inside it.
    """
    position = len(next(p for p in _URI_PREFIXES if uri.startswith(p)))
    end = len(uri)
    # An '@' before the first '/' ends user[:password]; the first ':' splits them.
    look = position
    while look < end and uri[look] not in "@/":
        look += 1
    if look < end and uri[look] == "@":
        colon = uri.find(":", position, look)
        user_end = colon if colon >= 0 else look
        if user_end > position:
            yield _decoded("user", uri[position:user_end])
        if 0 <= colon < look - 1:
            yield _decoded("password", uri[colon + 1 : look])
        position = look + 1
    hosts: list[str] = []
    ports: list[str] = []
    while True:
        if position < end and uri[position] == "[":
            bracket = uri.find("]", position + 1)
            if bracket < 0:
                yield _Item(
                    "host",
                    "",
                    'end of string reached when looking for matching "]" '
                    "in IPv6 host address in URI",
                )
                return
            if bracket == position + 1:
                yield _Item("host", "", "IPv6 host address may not be empty in URI")
                return
            hosts.append(uri[position + 1 : bracket])
            position = bracket + 1
            if position < end and uri[position] not in ":/?,":
                yield _Item(
                    "host",
                    "",
                    f'unexpected character "{uri[position]}" at position {_byte(uri, position)} '
                    'in URI (expected ":" or "/")',
                )
                return
        else:
            start = position
            while position < end and uri[position] not in ":/?,":
                position += 1
            hosts.append(uri[start:position])
        ports.append("")
        if position < end and uri[position] == ":":
            start = position = position + 1
            while position < end and uri[position] not in "/?,":
                position += 1
            ports[-1] = uri[start:position]
        if position == end or uri[position] != ",":
            break
        position += 1
    # libpq decodes the lists as a whole: a %2C is a comma between hosts.
    for keyword, values in (("host", hosts), ("port", ports)):
        if ",".join(values):
            yield _decoded(keyword, ",".join(values))
    if position < end and uri[position] == "/":
        start = position = position + 1
        while position < end and uri[position] != "?":
            position += 1
        if position > start:
            yield _decoded("dbname", uri[start:position])
    if position < end:  # at '?'
        yield from _query_items(uri, position + 1)


def _byte(text: str, position: int) -> int:
    """libpq counts bytes, from 1."""
    return len(text[:position].encode("utf-8", "surrogateescape")) + 1


def _query_items(uri: str, position: int) -> Iterator[_Item]:
    end = len(uri)
    after_secret = False
    while position < end:
        start = position
        equals = -1
        while position < end and uri[position] != "&":
            if uri[position] == "=":
                if equals >= 0:
                    yield _Item(
                        "",
                        "",
                        'extra key/value separator "=" in URI query parameter: '
                        f'"{uri[start:equals]}"',
                    )
                    return
                equals = position
            position += 1
        if equals < 0:
            shown = _AFTER_SECRET if after_secret else f'"{uri[start:position]}"'
            yield _Item("", "", f'missing key/value separator "=" in URI query parameter: {shown}')
            return
        keyword, error = _uri_decode(uri[start:equals])
        if error is not None:
            yield _Item("", "", error.format(f'"{uri[start:equals]}"'))
            return
        item = _decoded(keyword, uri[equals + 1 : position])
        yield item
        if item.error is not None:
            return
        after_secret = _hidden(keyword)
        position += 1  # past '&', or past the end


def _decoded(keyword: str, raw: str) -> _Item:
    """``keyword`` with its percent-decoded value; a decoding error names no secret."""
    value, error = _uri_decode(raw)
    if error is not None:
        return _Item(
            keyword,
            "",
            error.format(f'the value of "{keyword}"' if _hidden(keyword) else f'"{raw}"'),
        )
    return _Item(keyword, value)


def _uri_decode(raw: str) -> tuple[str, str | None]:
    """libpq's conninfo_uri_decode: ``%XX`` tokens decoded, ``%00`` refused,
    blanks around the value dropped and blanks inside it refused (libpq 18; 15 keeps them).

    The error is libpq's message with ``{}`` where it quotes the text.
    """
    out = bytearray()
    position, end = 0, len(raw)
    while position < end and raw[position] == " ":
        position += 1
    while position < end and raw[position] != " ":
        char = raw[position]
        if char != "%":
            out += char.encode("utf-8", "surrogateescape")
            position += 1
            continue
        digits = raw[position + 1 : position + 3]
        if len(digits) < 2 or not all(d in "0123456789abcdefABCDEF" for d in digits):
            return "", "invalid percent-encoded token: {}"
        if digits == "00":
            return "", "forbidden value %00 in percent-encoded value: {}"
        out.append(int(digits, 16))
        position += 3
    while position < end and raw[position] == " ":
        position += 1
    if position < end:
        return "", "unexpected spaces found in {}, use percent-encoded spaces (%20) instead"
    return out.decode("utf-8", "surrogateescape"), None


# --- masking --------------------------------------------------------------------


def mask(text: str) -> str:
    """``text`` with every secret replaced by ``***``, whether libpq can read it or not.

    The secrets are where libpq would find them: a URI's password, and the
    value of ``password`` and the other secret keywords, quoted, escaped or
    percent-encoded. The value of a keyword libpq does not know goes too: it
    may be a misspelt ``password``. Where the text stops making sense after a secret (an
    unquoted password with a blank in it, an ``&`` or ``@`` in a URI's
    password), everything up to the next ``keyword=`` goes too.
    """
    spans: list[tuple[int, int]] = []
    if "://" in text:
        spans += _uri_secret_spans(text)
    if not text.startswith(_URI_PREFIXES):
        spans += _keyword_secret_spans(text)
    out, last = [], 0
    for start, end in sorted(spans):
        start = max(start, last)
        if end <= start:
            continue
        out.append(text[last:start] + MASKED)
        last = end
    out.append(text[last:])
    return "".join(out)


_ASSIGNMENT = re.compile(r"([^\s=]+)\s*=")


def _keyword_secret_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    position, end = 0, len(text)
    while True:
        found = _ASSIGNMENT.search(text, position)
        if found is None:
            return spans
        start = found.end()
        while start < end and text[start] in _SPACE:
            start += 1
        _, stop, _ = _keyword_value(text, start)
        if _hidden(found.group(1)):
            # Up to the next keyword=: what an unquoted secret with a blank in
            # it left behind goes too.
            following = _ASSIGNMENT.search(text, stop)
            stop = following.start() if following else end
            spans.append((start, len(text[:stop].rstrip(_SPACE))))
        position = max(stop, found.end())


def _uri_secret_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    begin = text.index("://") + 3
    query = text.find("?", begin)
    # libpq ends the password at the first '@'; a password with an '@' or a
    # '/' of its own may end at a later one: hide up to the last.
    at = text.rfind("@", begin, query if query >= 0 else len(text))
    if at >= 0:
        colon = text.find(":", begin, at)
        if colon >= 0:
            spans.append((colon + 1, at))
    if query < 0:
        return spans
    position, secret = query + 1, False
    for part in text[query + 1 :].split("&"):
        keyword, equals, _ = part.partition("=")
        if equals and _hidden(_tolerant_decode(keyword).strip(" ")):
            spans.append((position + len(keyword) + len(equals), position + len(part)))
            secret = True
        elif secret and not equals:
            spans.append((position, position + len(part)))
        else:
            secret = False
        position += len(part) + 1
    return spans


def _hidden(keyword: str) -> bool:
    """A secret's keyword, or one libpq does not know: a misspelt ``password`` too."""
    name = _renamed(keyword, "")[0]
    return name in SECRETS or (name not in KEYWORDS and name != "ssl")


def _tolerant_decode(raw: str) -> str:
    return re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), raw)
