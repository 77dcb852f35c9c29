"""The DNS side of ``--dane``: ask a validating resolver for TLSA records.

The only module that imports dnspython (an optional extra), and only
``--dane`` imports it. One query, within a deadline, returning a
:class:`~.model.TlsaAnswer` that keeps the three things DANE needs apart: the
response code, the AD bit, and any Extended DNS Error the resolver gave.

The query sets AD and DO, so that a validating resolver reports what it
validated (it clears AD for a query with neither), and never CD, which would
ask the resolver to pass on data that failed validation.
"""

from __future__ import annotations

import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from .model import TlsaAnswer, TlsaRecord

__all__ = ["PendingLookup", "lookup_tlsa", "system_resolvers"]

# Big enough for a few TLSA records with their signatures; a resolver that
# needs more sets TC and the query is repeated over TCP.
_PAYLOAD = 1232


def system_resolvers() -> list[tuple[str, int]]:
    """The nameservers of the system's resolver configuration (/etc/resolv.conf).

    Raises:
        OSError: no usable configuration.
    """
    # Imported here: with --dns-server it is not needed, and it costs start-up time.
    import dns.resolver

    try:
        resolver = dns.resolver.Resolver(configure=True)
    except dns.resolver.NoResolverConfiguration:
        raise OSError("no nameserver in /etc/resolv.conf") from None
    servers = [(str(address), resolver.port) for address in resolver.nameservers]
    if not servers:
        raise OSError("no nameserver in /etc/resolv.conf")
    return servers


def lookup_tlsa(
    owner: str, server: tuple[str, int] | None, timeout: float, shown_timeout: float | None = None
) -> TlsaAnswer:
    """Ask ``server`` (or each system resolver in turn) for ``owner``'s TLSA records.

    Returns within ``timeout`` seconds; failures are in the answer, never
    raised. Messages name ``shown_timeout`` (the user's ``-t``) when given.
    """
    end = time.monotonic() + timeout
    source = "--dns-server" if server is not None else "/etc/resolv.conf"
    try:
        query = _make_query(owner)
    except dns.exception.DNSException as exc:
        # A host name near DNS's limit of 253 characters leaves no room for
        # _PORT._tcp.: no resolver is to blame.
        return TlsaAnswer(owner, "none", source, failure=f"{owner} is no DNS name: {exc}")
    if server is not None:
        servers = [server]
    else:
        try:
            servers = system_resolvers()
        except OSError as exc:
            return TlsaAnswer(owner, "none", source, failure=f"{exc}; give --dns-server")
    failure = "no resolver"
    resolver = "none"
    for index, (address, port) in enumerate(servers):
        resolver = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        # Like the system's resolver: each server gets its share of the time
        # left, and a silent one does not eat the others'.
        share = (end - time.monotonic()) / (len(servers) - index)
        if share <= 0:
            break
        try:
            response = _query(query, address, port, share)
        except dns.exception.Timeout:
            failure = (
                f"resolver {resolver} did not answer within {shown_timeout or timeout:g} seconds"
            )
            continue
        except OSError as exc:
            failure = f"resolver {resolver}: {(exc.strerror or str(exc)).lower()}"
            continue
        except dns.exception.DNSException as exc:
            failure = f"resolver {resolver} sent an unusable answer: {exc}"
            continue
        return _answer(owner, resolver, source, response)
    return TlsaAnswer(owner, resolver, source, failure=failure)


def _make_query(owner: str) -> dns.message.Message:
    query = dns.message.make_query(
        owner, dns.rdatatype.TLSA, use_edns=0, payload=_PAYLOAD, want_dnssec=True
    )
    query.flags = dns.flags.RD | dns.flags.AD
    return query


def _query(
    query: dns.message.Message, address: str, port: int, timeout: float
) -> dns.message.Message:
    started = time.monotonic()
    response = dns.query.udp(query, address, timeout=timeout, port=port)
    if response.flags & dns.flags.TC:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            raise dns.exception.Timeout
        response = dns.query.tcp(query, address, timeout=left, port=port)
    return response


def _answer(owner: str, resolver: str, source: str, response: dns.message.Message) -> TlsaAnswer:
    records = tuple(
        TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, rdata.cert)
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TLSA
        for rdata in rrset
    )
    errors = tuple(
        f"EDE {int(option.code)} {_ede_name(int(option.code))}"
        + (f": {option.text}" if option.text else "")
        for option in response.extended_errors()
    )
    return TlsaAnswer(
        owner=owner,
        resolver=resolver,
        source=source,
        rcode=dns.rcode.to_text(response.rcode()),
        authenticated=bool(response.flags & dns.flags.AD),
        records=records,
        extended_errors=errors,
    )


def _ede_name(code: int) -> str:
    import dns.edns

    try:
        return dns.edns.EDECode(code).name.replace("_", " ")
    except ValueError:
        return "unknown"


class PendingLookup:
    """A TLSA lookup running in a thread beside the TLS probe."""

    def __init__(self, owner: str, server: tuple[str, int] | None, timeout: float) -> None:
        self.owner = owner
        self.server = server
        self.timeout = timeout
        # As for the probe: a little less than -t, so that the plugin reports
        # a silent resolver itself before the monitoring system gives up.
        self._margin = min(0.5, timeout * 0.1)
        self._outcome: list[TlsaAnswer] = []
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()

    def _run(self) -> None:
        budget = self.timeout - self._margin
        self._outcome.append(lookup_tlsa(self.owner, self.server, budget, self.timeout))

    def wait(self, left: float) -> TlsaAnswer:
        """The answer; ``left`` is what remains of the target's timeout."""
        # The lookup gives up by itself a margin before -t; wait half that.
        self._worker.join(max(left - self._margin / 2, 0.0))
        if self._outcome:
            return self._outcome[0]
        server = self.server
        return TlsaAnswer(
            self.owner,
            f"{server[0]}:{server[1]}" if server else "system resolver",
            "--dns-server" if server else "/etc/resolv.conf",
            failure=f"no answer within {self.timeout:g} seconds",
        )
