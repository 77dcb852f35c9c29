"""Auxiliary findings fail alone: an exception in one is that finding's UNKNOWN.

The verdict (chain, name, dates) is what the check is for. Beside it run
checks of other things: revocation, DANE, unencrypted logins, the CRL audit,
the files on disk, the client certificate. They read odd input (certificate
extensions, CRLs, DNS answers, files) through libraries that raise on what
nobody foresaw. Such an exception must cost its own finding only: it becomes
an UNKNOWN line of that check (``dane: check failed: ValueError: ...``),
and the verdict and the other findings stand.

Every auxiliary finding goes through :func:`isolated`; a step that yields
more than findings catches for itself and words the failure with
:func:`failed`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ParamSpec

from .model import Check, Finding, State
from .text import safe

__all__ = ["failed", "isolated"]

_P = ParamSpec("_P")

#: Longest exception text in a failure: it may quote a certificate's content.
_TEXT = 150


def failed(check: Check, exc: Exception) -> Finding:
    """``check`` could not be made: UNKNOWN, with the exception's type and its text, escaped."""
    text = safe(str(exc), _TEXT)
    return Finding(
        check,
        f"{check}: check failed: {type(exc).__name__}{': ' + text if text else ''}",
        "check failed",
        State.UNKNOWN,
    )


def isolated(
    check: Check,
    judge: Callable[_P, Finding | Iterable[Finding] | None],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> tuple[Finding, ...]:
    """``judge(*args, **kwargs)`` as findings; whatever it raises, :func:`failed`.

    ``judge`` may return one finding, several, or None (nothing to report).
    """
    try:
        result = judge(*args, **kwargs)
        if result is None:
            return ()
        if isinstance(result, Finding):
            return (result,)
        return tuple(result)
    except Exception as exc:  # noqa: BLE001 - the point: any failure stays this finding's
        return (failed(check, exc),)
