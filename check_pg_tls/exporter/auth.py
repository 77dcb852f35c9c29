"""HTTP basic authentication against bcrypt hashes, as exporter-toolkit does it.

bcrypt at cost 10 costs tens of milliseconds per check, on purpose; a
scrape every few seconds must not pay that each time. A verified
(user, hash, password) is remembered in memory only, under an HMAC with a
key made at start and never stored: the password itself is not kept, a
changed hash or password never matches an old entry, and the cache says
nothing to whoever reads the process's memory that bcrypt would not.

One bcrypt runs at a time, as in exporter-toolkit, and only a few requests
may wait for it: beyond that a request is turned away at once
(:attr:`Verdict.BUSY`), so that a flood of wrong passwords costs one core
and never holds the threads that answer Prometheus, whose verified
password is in the cache.
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
from enum import Enum

import bcrypt

__all__ = ["BasicAuth", "Verdict", "is_bcrypt_hash"]

#: bcrypt reads at most 72 bytes of a password. As node_exporter (Go's
#: bcrypt), a longer one is compared by those: the hash holds nothing of
#: the rest, so refusing it would keep out a long password that works with
#: the same file elsewhere, and keep out nobody who knows its first 72 bytes.
_BCRYPT_BYTES = 72
#: Requests that may wait for the one bcrypt at a time.
_BCRYPT_WAITING = 4
_CACHE_SIZE = 1024
# A hash of a random password: an unknown user costs as much as a known
# one, so that timing does not tell which users exist.
_DECOY = b"$2b$10$8OJeB3OvVoeqq7Vj4OqTguvBT9.vqBUcVjA6AtcyOg2JvKagi0ReC"


def is_bcrypt_hash(text: str) -> bool:
    """Whether ``text`` is a bcrypt hash as htpasswd and exporter-toolkit write them."""
    import re

    match = re.fullmatch(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}", text)
    return match is not None and 4 <= int(match.group(1)) <= 31


class Verdict(Enum):
    OK = "ok"
    #: No credentials, or wrong ones: 401.
    DENIED = "denied"
    #: Too many passwords waiting to be checked: try again (503).
    BUSY = "busy"


class BasicAuth:
    """Checks ``Authorization: Basic ...`` against users and their bcrypt hashes."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        # One bcrypt at a time, as exporter-toolkit: a flood of wrong
        # passwords takes one core, not all of them.
        self._bcrypt = threading.Lock()
        self._waiting = threading.BoundedSemaphore(_BCRYPT_WAITING)

    def check(self, users: Mapping[str, str], header: str | None) -> Verdict:
        """Whether ``header`` names a user of ``users`` with the right password."""
        credentials = _parse(header)
        if credentials is None:
            return Verdict.DENIED
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
                return Verdict.OK if known is not None else Verdict.DENIED
        if not self._waiting.acquire(blocking=False):
            return Verdict.BUSY
        try:
            with self._bcrypt:
                try:
                    good = bcrypt.checkpw(password[:_BCRYPT_BYTES], hashed)
                except ValueError:
                    good = False
        finally:
            self._waiting.release()
        if not (good and known is not None):
            return Verdict.DENIED
        with self._lock:
            self._verified[token] = None
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return Verdict.OK


def _parse(header: str | None) -> tuple[str, bytes] | None:
    # As Go's Request.BasicAuth: "Basic" in any case, one space, and
    # standard base64 with its padding, nothing before or after.
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user.decode("utf-8", "surrogateescape"), password
