"""The floor: the least a Python check can do. SSLRequest, handshake, parse, print.

No options, no verification, no output format: whatever check_pg_tls costs
beyond this is the price of being a real plugin.
"""

import socket
import ssl
import struct
import sys

from cryptography import x509

host, port = sys.argv[1], int(sys.argv[2])
sock = socket.create_connection((host, port), timeout=10)
sock.sendall(struct.pack("!II", 8, 80877103))
if sock.recv(1) != b"S":
    sys.exit(2)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
tls = context.wrap_socket(sock)
der = tls.getpeercert(binary_form=True)
tls.unwrap()
tls.close()
print(x509.load_der_x509_certificate(der).not_valid_after_utc)
