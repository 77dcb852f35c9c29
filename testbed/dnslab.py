"""A DNSSEC-validating resolver on loopback: unbound serving our own signed zones.

One daemon does it all: each zone is an ``auth-zone`` that unbound loads
from a file and validates against a ``trust-anchor`` we give it, exactly as
it validates data it fetched from the Internet. Zones are signed with
dnspython (ECDSA P-256, a KSK and a ZSK). A zone without an anchor is
served unsigned and answers with AD=0, as an insecure delegation would.
Nothing here listens beyond 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

from .pgcluster import PORT_ATTEMPTS, ServerProcess, lost_port

__all__ = ["RefusingResolver", "Unbound", "ZoneFile", "free_udp_port", "make_zone", "tamper_tlsa"]

_HEADER = """\
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 300
@ IN NS ns1
ns1 IN A 127.0.0.1
"""


@dataclass(frozen=True)
class ZoneFile:
    """A zone as unbound loads it, and the DS record that anchors it (None: unsigned)."""

    origin: str
    text: str
    anchor: str | None


def make_zone(origin: str, records: Sequence[str], signed: bool = True) -> ZoneFile:
    """A zone with ``records`` (zone file lines, names relative to ``origin``).

    Signed zones get fresh keys and signatures valid from an hour ago for 30 days.
    """
    origin = origin.rstrip(".") + "."
    text = _HEADER + "".join(f"{line}\n" for line in records)
    if not signed:
        return ZoneFile(origin, text, None)
    zone = dns.zone.from_text(text, origin=origin, relativize=False)
    ksk_key = ec.generate_private_key(ec.SECP256R1())
    zsk_key = ec.generate_private_key(ec.SECP256R1())
    algorithm = dns.dnssec.Algorithm.ECDSAP256SHA256  # type: ignore[attr-defined]
    ksk = dns.dnssec.make_dnskey(ksk_key.public_key(), algorithm, flags=257)
    zsk = dns.dnssec.make_dnskey(zsk_key.public_key(), algorithm, flags=256)
    now = dt.datetime.now(dt.timezone.utc)
    with zone.writer() as txn:
        dns.dnssec.sign_zone(
            zone,
            txn=txn,
            keys=[(ksk_key, ksk), (zsk_key, zsk)],
            inception=now - dt.timedelta(hours=1),
            expiration=now + dt.timedelta(days=30),
            dnskey_ttl=300,
        )
    ds = dns.dnssec.make_ds(origin, ksk, "SHA256")
    return ZoneFile(origin, zone.to_text(relativize=False), f"{origin} DS {ds.to_text()}")


def tamper_tlsa(zone: ZoneFile, owner: str, rdata: str) -> ZoneFile:
    """The same signed zone with ``owner``'s TLSA data replaced, signatures kept.

    What an attacker on the path (or a broken signer) would serve: a
    validating resolver must answer SERVFAIL.
    """
    parsed = dns.zone.from_text(zone.text, origin=zone.origin, relativize=False)
    name = dns.name.from_text(owner, dns.name.from_text(zone.origin))
    node = parsed.find_node(name)
    rdataset = node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.TLSA)
    ttl = rdataset.ttl
    rdataset.clear()  # type: ignore[no-untyped-call]
    rdataset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, rdata), ttl)
    return ZoneFile(zone.origin, parsed.to_text(relativize=False), zone.anchor)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port free now for UDP and for TCP (unbound listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
        return port


class Unbound(ServerProcess):
    """unbound in the foreground, validating our zones against our anchors only.

    Our own configuration file keeps the system's (its root trust anchor,
    its control socket) out of the picture. Runs as root (``username: ""``)
    from a directory it can read.
    """

    def __init__(
        self,
        directory: Path,
        zones: Sequence[ZoneFile],
        address: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.directory = directory
        self.address = address
        #: A port the caller chose is kept; one we chose may be taken by
        #: another program before unbound binds it: start() takes another.
        self._chosen_port = port is None
        self.port = port or free_udp_port(address)
        self.log_path = directory / "unbound.log"
        lines = [
            "server:",
            f"    interface: {address}@{self.port}",
            f"    port: {self.port}",
            "    do-ip6: no",
            "    do-daemonize: no",
            '    username: ""',
            '    chroot: ""',
            f'    directory: "{directory}"',
            '    pidfile: ""',
            "    use-syslog: no",
            '    logfile: ""',
            "    verbosity: 1",
            # Why validation failed, in the log and as Extended DNS Error text.
            "    val-log-level: 2",
            "    ede: yes",
            # A bogus answer from the cache carries the EDE code but not its
            # text: validate again for every query.
            "    val-bogus-ttl: 0",
            "    access-control: 127.0.0.0/8 allow",
            '    module-config: "validator iterator"',
            # .test is one of unbound's built-in local zones: it would answer
            # NXDOMAIN itself instead of looking at our auth-zones.
            '    local-zone: "test." nodefault',
            "    num-threads: 1",
            # No RFC 8145 key tag queries: nothing but the tests' own questions.
            "    trust-anchor-signaling: no",
            # Never ask anyone else: the only root server is on loopback,
            # which unbound does not query (do-not-query-localhost is on).
            f'    root-hints: "{directory / "root.hints"}"',
        ]
        for zone in zones:
            if zone.anchor is not None:
                lines.append(f'    trust-anchor: "{zone.anchor}"')
        lines += ["remote-control:", "    control-enable: no"]
        for zone in zones:
            path = directory / f"{zone.origin}zone"
            path.write_text(zone.text)
            lines += [
                "auth-zone:",
                f'    name: "{zone.origin}"',
                f'    zonefile: "{path}"',
                "    for-upstream: yes",
                "    for-downstream: no",
                "    fallback-enabled: no",
            ]
        (directory / "root.hints").write_text(
            ". 3600 IN NS a.root.test.\na.root.test. 3600 IN A 127.0.0.1\n"
        )
        self._probe_name = zones[0].origin if zones else "."
        self.config = directory / "unbound.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def server(self) -> str:
        """The ``--dns-server`` value that reaches this resolver."""
        return f"{self.address}:{self.port}"

    def start(self, timeout: float = 20) -> Unbound:
        """Start; if another program took our port meanwhile, start on a new one."""
        binary = shutil.which("unbound") or "/usr/sbin/unbound"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            logged = len(self.log())
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [binary, "-d", "-c", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.directory,
                )
            try:
                self._wait_ready(timeout)
            except RuntimeError:
                lost = lost_port(self.log()[logged:])
                if not (lost and self._chosen_port) or attempt == PORT_ATTEMPTS:
                    raise
                old, self.port = self.port, free_udp_port(self.address)
                text = self.config.read_text()
                text = text.replace(f"@{old}\n", f"@{self.port}\n")
                text = text.replace(f"port: {old}\n", f"port: {self.port}\n")
                self.config.write_text(text)
                continue
            return self
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        # Ready means it answers a query. A closed UDP port does not refuse,
        # it stays silent: poll with a short per-query timeout.
        assert self.process is not None
        query = dns.message.make_query(self._probe_name, "SOA")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"unbound exited with {self.process.returncode}:\n{self.log()}")
            try:
                dns.query.udp(query, self.address, timeout=0.01, port=self.port)
            except dns.exception.Timeout:
                continue
            except OSError:
                time.sleep(0.005)
                continue
            return
        raise TimeoutError(f"unbound not ready after {timeout} s:\n{self.log()}")

    def query(self, name: str, rdtype: str = "TLSA", cd: bool = False) -> dns.message.Message:
        """A query as a validating client makes it (AD set), for the tests' own eyes."""
        message = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        message.flags = dns.flags.RD | dns.flags.AD | (dns.flags.CD if cd else 0)
        return dns.query.udp(message, self.address, timeout=2, port=self.port)


class RefusingResolver:
    """A resolver on loopback that answers every query at once with REFUSED.

    For tests that need a lookup to end quickly with an answer: a closed UDP
    port is silent (the ICMP error does not reach an unconnected socket), and
    a lookup then waits for its whole timeout.
    """

    def __init__(self, address: str = "127.0.0.1") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((address, 0))
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self.server = f"{address}:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            try:
                reply = dns.message.make_response(dns.message.from_wire(data))
            except dns.exception.DNSException:
                continue
            reply.set_rcode(dns.rcode.REFUSED)
            self._socket.sendto(reply.to_wire(), peer)

    def __enter__(self) -> RefusingResolver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()
