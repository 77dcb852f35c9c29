"""The floor: the least a Python check can do for what check_pg_tls is asked.

SSLRequest; a handshake that verifies the chain against the root file and
the server's name, as the plugin does with its default sslmode (verify-full)
and ``--sslrootcert``; parse the leaf with cryptography; print its notAfter;
close as the plugin closes (one close_notify sent, the server's not awaited),
with the garbage collector paused as the plugin pauses it. No options, no
output format, no judgement beyond OpenSSL's.

    python floor.py HOST PORT SERVERNAME ROOT_FILE [--libraries]

``--libraries`` first imports what this project must use, as the plugin
imports it (nagiosplugin, pyOpenSSL, cryptography's x509): the second floor,
which every check built on these libraries pays. The difference between the
two floors is their import; what check_pg_tls costs beyond the second is
its own.

bench/floor_fleet.py imports this module for the same work, many at a time.
"""

from __future__ import annotations

import gc
import sys

if __name__ == "__main__":
    # As check_pg_tls runs: the garbage collector paused for a run that ends
    # the process, what exists left out of the collection at exit (see
    # main()). A floor that collects what the plugin does not would be no floor.
    gc.disable()

if __name__ == "__main__" and "--libraries" in sys.argv[1:]:
    import nagiosplugin  # noqa: F401
    from OpenSSL import SSL, crypto  # noqa: F401

import contextlib
import socket
import ssl
import struct

from cryptography import x509

SSL_REQUEST = struct.pack("!II", 8, 80877103)


def client_context(root_file: str) -> ssl.SSLContext:
    """Verifies the chain against ``root_file`` and the name (verify-full)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(root_file)
    return context


def close_politely(tls: ssl.SSLSocket) -> None:
    """One close_notify, as check_pg_tls sends it; the server's is not awaited.

    ``unwrap()`` on a blocking socket would wait for the server's
    close_notify: a round trip and a server's shutdown the plugin never
    waits for. Non-blocking, OpenSSL sends ours and returns at once.
    """
    tls.setblocking(False)
    with contextlib.suppress(ssl.SSLError, OSError):
        tls.unwrap()


def not_after(context: ssl.SSLContext, host: str, port: int, servername: str) -> str:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(SSL_REQUEST)
        if sock.recv(1) != b"S":
            raise ConnectionError("server does not offer TLS")
        with context.wrap_socket(sock, server_hostname=servername) as tls:
            der = tls.getpeercert(binary_form=True)
            close_politely(tls)
    if der is None:
        raise ssl.SSLError("no certificate")
    return str(x509.load_der_x509_certificate(der).not_valid_after_utc)


def main(argv: list[str]) -> int:
    host, port, servername, root_file = argv[:4]
    print(not_after(client_context(root_file), host, int(port), servername))
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    gc.freeze()
    sys.exit(code)
