"""The text of a libpq connection string: its two grammars, and its secrets masked.

:func:`parse_options` reads a ``key=value`` string (blanks between pairs,
values quoted with ``'`` or not, ``\\`` escaping the next character) or a
``postgresql://`` URI (percent-encoded parts, ``?key=value&...``) into
keyword values as libpq 18's ``PQconninfoParse`` does
(fe-connect.c: conninfo_parse, conninfo_uri_parse_options,
conninfo_uri_decode). :func:`secret_spans` finds where a secret may be in
any text, valid or not: where libpq reads one, and where what libpq reads
may be part of one (the text after an unquoted password; a URI's password
with a ``/`` or an ``@`` of its own, which libpq reads as a host, a port or
a database name). :func:`mask` renders the text with those places replaced,
and no message of this module quotes text from them.

Pure text in, plain records out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .record import Record

__all__ = ["KEYWORDS", "MASKED", "SECRETS", "mask", "parse_options", "read_options", "secret_spans"]

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
#: Keywords whose value never holds an ``@``: one there is no part of the value.
_NO_AT = frozenset({"host", "hostaddr", "port"})

#: A part of the text: ``text[start:end]``.
Span = tuple[int, int]

# --- where secrets may be --------------------------------------------------------


def secret_spans(text: str, following: bool = True) -> list[Span]:
    """Where ``text`` may hold a secret, in order, overlapping spans merged.

    Where libpq reads one: a URI's password and the value of ``password``
    and the other secret keywords, quoted, escaped or percent-encoded; the
    value of a keyword libpq does not know (a misspelt ``password``). And
    where what libpq reads may be part of one: with ``following``, the text
    after a secret up to the next keyword libpq knows (an unquoted password
    with a blank in it, a URI's password with an ``&``); in a URI, from the
    user's ``:`` to an ``@`` libpq does not read as the end of the user info
    (a password with a ``/``, ``?`` or ``@`` of its own, which libpq takes
    for a host, a port or a database name). A ``user:password@host`` text
    without a scheme (or with another one) is read as a URI's user info too,
    from its first ``:`` to its last ``@``.
    """
    spans: list[Span] = []
    if "://" in text:
        spans += _uri_spans(text, text.index("://") + 3, following)
    if not text.startswith(_URI_PREFIXES):
        if "=" in text:
            spans += _keyword_spans(text, following)
        # Also beside another scheme: app://pw@host may be app's password.
        if "@" in text:
            spans += _bare_user_info(text)
    return _merged(spans)


def _merged(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def _keyword_spans(text: str, following: bool) -> list[Span]:
    """Secret values of ``key=value`` text, read as libpq reads it, and past its errors."""
    spans: list[Span] = []
    position, end = 0, len(text)
    # Inside the text after a secret: what may be the rest of it.
    after = False
    while position < end:
        if text[position] in _SPACE:
            position += 1
            continue
        start = position
        while position < end and text[position] != "=" and text[position] not in _SPACE:
            position += 1
        keyword, word_end = text[start:position], position
        while position < end and text[position] in _SPACE:
            position += 1
        if position == end or text[position] != "=":
            # A word without '=': libpq stops here; the reading goes on after it.
            if after and following:
                spans[-1] = (spans[-1][0], word_end)
            position = word_end
            continue
        position += 1
        while position < end and text[position] in _SPACE:
            position += 1
        value_start = position
        _, position, _ = _keyword_value(text, position)
        if after and _renamed(keyword, "")[0] not in KEYWORDS:
            if following:
                spans[-1] = (spans[-1][0], position)
        elif _hidden(keyword):
            spans.append((value_start, position))
            after = True
        else:
            after = False
    return spans


def _uri_spans(text: str, begin: int, following: bool) -> list[Span]:
    """Secrets of a URI (``begin``: just past ``://``), where libpq reads them or may."""
    end = len(text)
    spans: list[Span] = []
    #: Where each '@' libpq's reading accounts for is.
    explained: set[int] = set()
    # libpq: the user info ends at an '@' before the first '/'.
    look = begin
    while look < end and text[look] not in "@/":
        look += 1
    position = begin
    if look < end and text[look] == "@":
        explained.add(look)
        colon = text.find(":", begin, look)
        if colon >= 0:
            spans.append((colon + 1, look))
        position = look + 1
    # The host list ends at a '/' or '?' outside brackets.
    while position < end and text[position] not in "/?":
        if text[position] == "[":
            bracket = text.find("]", position)
            position = end if bracket < 0 else bracket
        position += 1
    query = text.find("?", position) if position < end else -1
    if query >= 0:
        spans += _query_spans(text, query + 1, following, explained)
    unexplained = [at for at in range(begin, end) if text[at] == "@" and at not in explained]
    if unexplained:
        # What libpq read as a host, a port or a database name (or a query)
        # may be the rest of a password: from the user's ':' to the last '@'.
        last = unexplained[-1]
        colon = text.find(":", begin, last)
        if colon >= 0:
            spans.append((colon + 1, last))
    return spans


def _query_spans(text: str, position: int, following: bool, explained: set[int]) -> list[Span]:
    """Secret values of a URI's query. Each '@' in the value of a keyword libpq knows
    (and that may hold one) goes in ``explained``; any other may end a password."""
    spans: list[Span] = []
    secret = False
    for part in text[position:].split("&"):
        part_end = position + len(part)
        key, equals, _ = part.partition("=")
        name = _renamed(_tolerant_decode(key).strip(" "), "")[0]
        known = name in KEYWORDS or name == "ssl"
        value_start = position + len(key) + len(equals)
        if equals and known and name not in _NO_AT:
            explained.update(at for at in range(value_start, part_end) if text[at] == "@")
        if secret and not (equals and known):
            # After a secret, up to the next keyword libpq knows: perhaps the rest of it.
            if following:
                spans[-1] = (spans[-1][0], part_end)
        elif equals and _hidden(name):
            spans.append((value_start, part_end))
            secret = True
        else:
            secret = False
        position = part_end + 1
    return spans


def _bare_user_info(text: str) -> list[Span]:
    """``user:password@host`` without a scheme: from the first ``:`` to the last ``@``.

    Not for a target spec (``host:port``, ``[v6]:port``) followed by other text.
    """
    start = len(text) - len(text.lstrip(_SPACE))
    colon, at = text.find(":", start), text.rfind("@")
    if colon <= start or at < colon or text[start] == "[":
        return []
    if any(char in "=/@" or char in _SPACE for char in text[start:colon]):
        return []
    word_end = colon + 1
    while word_end < len(text) and text[word_end] not in _SPACE:
        word_end += 1
    if text[colon + 1 : word_end].isdigit():
        return []
    return [(colon + 1, at)]


def _hidden(keyword: str) -> bool:
    """A secret's keyword, or one libpq does not know: a misspelt ``password`` too."""
    name = _renamed(keyword, "")[0]
    return name in SECRETS or (name not in KEYWORDS and name != "ssl")


def _tolerant_decode(raw: str) -> str:
    return re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), raw)


def mask(text: str) -> str:
    """``text`` with every place that may hold a secret (:func:`secret_spans`) as ``***``."""
    out, last = [], 0
    for start, end in secret_spans(text):
        out.append(text[last:start] + MASKED)
        last = end
    out.append(text[last:])
    return "".join(out)


class _Quoter:
    """Quotes a part of the text for a message, as libpq does, unless it may be secret."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.spans = secret_spans(text)

    def hides(self, start: int, end: int) -> bool:
        end = max(end, start + 1)
        return any(low < end and start < high for low, high in self.spans)

    def __call__(self, start: int, end: int, shown: str | None = None) -> str:
        """``"text"`` (or ``"shown"``, what libpq made of it), or ``"***"``."""
        if self.hides(start, end):
            return f'"{MASKED}"'
        return f'"{self.text[start:end] if shown is None else shown}"'


# --- reading: the text into keyword values, as PQconninfoParse ----------------


class _Item(Record):
    """A keyword and its value, or why libpq stops reading."""

    keyword: str
    value: str
    error: str | None = None
    #: Where the keyword and the value are in the text.
    keyword_at: Span = (0, 0)
    value_at: Span = (0, 0)


def parse_options(text: str) -> dict[str, str]:
    """The keyword values of a connection string, as libpq's ``PQconninfoParse`` gives them.

    A keyword given twice keeps its last value; ``requiressl`` and a URI's
    ``ssl=true`` become ``sslmode``, as in libpq.

    Raises:
        ValueError: libpq refuses the text; the message is libpq's, without secrets.
    """
    return read_options(text)[0]


def read_options(text: str) -> tuple[dict[str, str], frozenset[str]]:
    """:func:`parse_options`, and the keywords (other than secrets) whose values were
    read from a place that may hold a secret (see :func:`secret_spans`).

    Raises:
        ValueError: as :func:`parse_options`.
    """
    if "\x00" in text:
        raise ValueError("NUL character in connection string")
    quote = _Quoter(text)
    uri = text.startswith(_URI_PREFIXES)
    options: dict[str, str] = {}
    tainted: set[str] = set()
    for item in _uri_items(text, quote) if uri else _keyword_items(text, quote):
        if item.error is not None:
            raise ValueError(item.error)
        keyword, value = _renamed(item.keyword, item.value)
        if uri and (keyword, value) == ("ssl", "true"):
            keyword, value = "sslmode", "require"  # libpq's nod to JDBC
        if keyword not in KEYWORDS:
            name = quote(*item.keyword_at)
            if uri:
                raise ValueError(f"invalid URI query parameter: {name}")
            raise ValueError(f"invalid connection option {name}")
        options[keyword] = value
        if keyword not in SECRETS and quote.hides(*item.value_at):
            tainted.add(keyword)
        else:
            tainted.discard(keyword)
    return options, frozenset(tainted)


def _renamed(keyword: str, value: str) -> tuple[str, str]:
    # libpq's conninfo_storeval: requiressl=1 is sslmode=require, any other
    # value sslmode=prefer.
    if keyword == "requiressl":
        return "sslmode", "require" if value.startswith("1") else "prefer"
    return keyword, value


def _keyword_items(text: str, quote: _Quoter) -> Iterator[_Item]:
    """``key = value`` pairs: blanks between, a value quoted with ``'`` or not,
    ``\\`` escaping the next character in either."""
    position, end = 0, len(text)
    while position < end:
        if text[position] in _SPACE:
            position += 1
            continue
        start = position
        while position < end and text[position] != "=" and text[position] not in _SPACE:
            position += 1
        keyword, keyword_at = text[start:position], (start, position)
        while position < end and text[position] in _SPACE:
            position += 1
        if position == end or text[position] != "=":
            yield _Item(
                keyword, "", f'missing "=" after {quote(*keyword_at)} in connection info string'
            )
            return
        position += 1
        while position < end and text[position] in _SPACE:
            position += 1
        value_start = position
        value, position, error = _keyword_value(text, position)
        yield _Item(keyword, value, error, keyword_at, (value_start, position))


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


def _uri_items(uri: str, quote: _Quoter) -> Iterator[_Item]:
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
            yield _decoded("user", uri, position, user_end, quote)
        if 0 <= colon < look - 1:
            yield _decoded("password", uri, colon + 1, look, quote)
        position = look + 1
    hosts: list[str] = []
    ports: list[str] = []
    authority = position
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
                    f"unexpected character {quote(position, position + 1)} at position "
                    f'{_byte(uri, position)} in URI (expected ":" or "/")',
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
            yield _decoded(keyword, uri, authority, position, quote, ",".join(values))
    if position < end and uri[position] == "/":
        start = position = position + 1
        while position < end and uri[position] != "?":
            position += 1
        if position > start:
            yield _decoded("dbname", uri, start, position, quote)
    if position < end:  # at '?'
        yield from _query_items(uri, position + 1, quote)


def _byte(text: str, position: int) -> int:
    """libpq counts bytes, from 1."""
    return len(text[:position].encode("utf-8", "surrogateescape")) + 1


def _query_items(uri: str, position: int, quote: _Quoter) -> Iterator[_Item]:
    end = len(uri)
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
                        f"{quote(start, equals)}",
                    )
                    return
                equals = position
            position += 1
        if equals < 0:
            yield _Item(
                "",
                "",
                f'missing key/value separator "=" in URI query parameter: {quote(start, position)}',
            )
            return
        keyword, error = _uri_decode(uri[start:equals])
        if error is not None:
            yield _Item("", "", error.format(quote(start, equals)))
            return
        item = _decoded(keyword, uri, equals + 1, position, quote, keyword_at=(start, equals))
        yield item
        if item.error is not None:
            return
        position += 1  # past '&', or past the end


def _decoded(
    keyword: str,
    uri: str,
    start: int,
    end: int,
    quote: _Quoter,
    raw: str | None = None,
    keyword_at: Span | None = None,
) -> _Item:
    """``keyword`` with its percent-decoded value (``uri[start:end]``, or ``raw`` read
    from there); a decoding error names no secret."""
    value, error = _uri_decode(uri[start:end] if raw is None else raw)
    if error is not None:
        if not _hidden(keyword):
            shown = quote(start, end, raw)
        elif keyword_at is None:
            shown = f'the value of "{keyword}"'
        else:
            shown = f"the value of {quote(*keyword_at, keyword)}"
        return _Item(keyword, "", error.format(shown))
    return _Item(keyword, value, None, keyword_at or (start, end), (start, end))


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
