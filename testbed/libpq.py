"""libpq's own connection-string parser, through ctypes, for the tests to compare with.

Two libpq builds are at hand: the system's (PostgreSQL 15, Debian's
``libpq5``) and PostgreSQL 18's, bundled with the test bed's 18 binaries.
Both load side by side in one process (each by its path, with local
symbols). Only ``PQconninfoParse`` and ``PQconndefaults`` are called: they
parse text and never connect. The plugin itself never loads libpq.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from .pg18 import pg18_bindir

__all__ = ["Libpq", "libpq15", "libpq18"]


def _system_libpq() -> Path:
    # By its path, never its soname: the loader would hand back whichever
    # libpq.so.5 is loaded already.
    for found in [*sorted(Path("/usr/lib").glob("*/libpq.so.5")), Path("/usr/lib64/libpq.so.5")]:
        if found.is_file():
            return found
    raise FileNotFoundError("the system's libpq.so.5 not found: apt-get install libpq5")


class _Option(ctypes.Structure):
    # libpq-fe.h: PQconninfoOption.
    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


class Libpq:
    """One libpq build."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
        lib.PQconninfoParse.restype = ctypes.POINTER(_Option)
        lib.PQconninfoParse.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.PQconndefaults.restype = ctypes.POINTER(_Option)
        lib.PQconninfoFree.argtypes = [ctypes.POINTER(_Option)]
        lib.PQfreemem.argtypes = [ctypes.c_void_p]
        lib.PQlibVersion.restype = ctypes.c_int
        self._lib = lib
        self.version: int = lib.PQlibVersion()

    def parse(self, conninfo: str) -> dict[str, str] | str:
        """The keyword values of ``conninfo`` as libpq reads them, or libpq's error message."""
        error = ctypes.c_void_p()
        options = self._lib.PQconninfoParse(
            conninfo.encode("utf-8", "surrogateescape"), ctypes.byref(error)
        )
        if not options:
            message = ctypes.cast(error, ctypes.c_char_p).value or b""
            self._lib.PQfreemem(error)
            return message.decode("utf-8", "surrogateescape").strip()
        try:
            return {
                option.keyword.decode(): option.val.decode("utf-8", "surrogateescape")
                for option in self._walk(options)
                if option.val is not None
            }
        finally:
            self._lib.PQconninfoFree(options)

    def keywords(self) -> dict[str, str]:
        """Every keyword this libpq knows, with its display character (``*``: a secret)."""
        options = self._lib.PQconndefaults()
        try:
            return {o.keyword.decode(): (o.dispchar or b"").decode() for o in self._walk(options)}
        finally:
            self._lib.PQconninfoFree(options)

    @staticmethod
    def _walk(options: ctypes._Pointer[_Option]) -> list[_Option]:
        found = []
        index = 0
        while options[index].keyword:
            found.append(options[index])
            index += 1
        return found


@functools.cache
def libpq15() -> Libpq:
    return Libpq(_system_libpq())


@functools.cache
def libpq18() -> Libpq:
    return Libpq(pg18_bindir().parent / "lib" / "libpq.so.5")
