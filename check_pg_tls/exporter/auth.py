"""HTTP basic authentication against bcrypt hashes, as exporter-toolkit does it.

bcrypt at cost 10 costs tens of milliseconds per check, on purpose; a
scrape every few seconds must not pay that each time. A verified
(user, hash, password) is remembered in memory only, under an HMAC with a
key made at start and never stored: the password itself is not kept, a
changed hash or password never matches an old entry, and the cache says
nothing to whoever reads the process's memory that bcrypt would not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

__all__ = ["BasicAuth", "is_bcrypt_hash"]

#: bcrypt reads at most 72 bytes; a longer password is refused rather than
#: cut, so that two passwords never pass for each other.
_MAX_PASSWORD = 72
_CACHE_SIZE = 1024
# A hash of a random password: an unknown user costs as much as a known
# one, so that timing does not tell which users exist.
_DECOY = b"$2b$10$8OJeB3OvVoeqq7Vj4OqTguvBT9.vqBUcVjA6AtcyOg2JvKagi0ReC"


def is_bcrypt_hash(text: str) -> bool:
    """Whether ``text`` is a bcrypt hash as htpasswd and exporter-toolkit write them."""
    import re

    match = re.fullmatch(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}", text)
    return match is not None and 4 <= int(match.group(1)) <= 31


class BasicAuth:
    """Checks ``Authorization: Basic ...`` against users and their bcrypt hashes."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        # One bcrypt at a time, as exporter-toolkit: a flood of wrong
        # passwords takes one core, not all of them.
        self._bcrypt = threading.Lock()

    def check(self, users: Mapping[str, str], header: str | None) -> bool:
        """Whether ``header`` names a user of ``users`` with the right password."""
        credentials = _parse(header)
        if credentials is None:
            return False
        user, password = credentials
        known = users.get(user)
        hashed = known.encode() if known is not None else _DECOY
        token = hmac.new(
            self._key,
            b"\0".join([user.encode("utf-8", "surrogateescape"), hashed, password]),
            hashlib.sha256,
        ).digest()
        with self._lock:
            if token in self._verified:
                self._verified.move_to_end(token)
                return known is not None
        if len(password) > _MAX_PASSWORD:
            return False
        with self._bcrypt:
            try:
                good = bcrypt.checkpw(password, hashed)
            except ValueError:
                good = False
        if not (good and known is not None):
            return False
        with self._lock:
            self._verified[token] = None
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return True


def _parse(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user.decode("utf-8", "surrogateescape"), password
