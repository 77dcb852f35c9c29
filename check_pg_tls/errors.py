"""The few ways a check can fail, sorted by whose fault it is.

The network modules translate ``OSError`` and OpenSSL's errors into the
probe errors at their boundary; everything above them deals only with these
types. A bad option or a file it names is the user's to fix.
"""

from __future__ import annotations

__all__ = [
    "BadTarget",
    "CheckFailed",
    "ClientRefused",
    "LocalFileError",
    "ProbeError",
    "ServerMisbehaved",
    "Unreachable",
    "UsageError",
]


class ProbeError(Exception):
    """A probe that produced no certificate chain. ``str()`` is the message."""


class Unreachable(ProbeError):
    """The server could not be reached or did not answer in time.

    Name resolution failures, refused connections, unreachable hosts and
    timeouts. CRITICAL by default, as the plugin guidelines ask; users may
    map these to another state.
    """


class ServerMisbehaved(ProbeError):
    """The server answered, but not with a usable TLS session.

    It refused TLS, sent an error, broke the protocol or failed the
    handshake. Always CRITICAL: a client could not connect securely.
    """


class ClientRefused(ProbeError):
    """libpq clients set up like this check fail on their own side: the kernel
    refuses a TCP setting of their connection string. Always CRITICAL: no such
    client connects to any server.
    """


class CheckFailed(ProbeError):
    """The check itself could not judge this server: UNKNOWN for this target only.

    A host name no resolver can take, or a bug of ours that one odd server
    brought out: either way the other servers of a fleet run keep their
    results.
    """


class BadTarget(CheckFailed):
    """There was nothing to probe: a line of a targets file names no server.

    UNKNOWN, as for any bad input; the other targets are still checked.
    """


class LocalFileError(Exception):
    """A file named on the command line cannot be used: UNKNOWN, with the reason."""


class UsageError(Exception):
    """A bad option: UNKNOWN, with a one-line reason."""
