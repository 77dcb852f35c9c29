"""The concurrent floor: floor.py's work for every target, 16 at a time.

Reads ``host:port`` lines from a file; prints each notAfter in input order.
"""

import socket
import ssl
import struct
import sys
from concurrent.futures import ThreadPoolExecutor

from cryptography import x509

REQUEST = struct.pack("!II", 8, 80877103)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE


def check(line: str) -> str:
    host, port = line.rsplit(":", 1)
    try:
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(REQUEST)
        if sock.recv(1) != b"S":
            return "no TLS"
        tls = context.wrap_socket(sock)
        der = tls.getpeercert(binary_form=True)
        tls.unwrap()
        tls.close()
    except OSError as exc:
        return str(exc)
    return str(x509.load_der_x509_certificate(der).not_valid_after_utc)


with open(sys.argv[1]) as handle:
    targets = [line.strip() for line in handle if line.strip()]
with ThreadPoolExecutor(16) as pool:
    for result in pool.map(check, targets):
        print(result)
