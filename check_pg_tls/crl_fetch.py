"""Fetching CRLs from their distribution points (HTTP only), within the deadline.

Public CAs now publish revocation only as CRLs (Let's Encrypt ended OCSP in
2025), at the URL in each certificate's CRL Distribution Points. A fleet
run asks for each URL once: many servers share an issuer.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from typing import NamedTuple

__all__ = ["MAX_CRL_BYTES", "CrlFetcher", "Fetched"]

#: Larger than any real CRL shard (Let's Encrypt's are well under 1 MB),
#: small enough that a hostile URL cannot fill the monitoring host's memory.
MAX_CRL_BYTES = 10 * 1024 * 1024


class Fetched(NamedTuple):
    """The body of a CRL URL, or why there is none."""

    url: str
    body: bytes | None
    failure: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A CRL URL is exact (sharded CRLs are matched against it); a redirect
    # elsewhere is reported, not followed.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class CrlFetcher:
    """Fetches each URL at most once per run; safe to share between threads."""

    def __init__(self, max_bytes: int = MAX_CRL_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._done: dict[str, Fetched] = {}
        self._opener = urllib.request.build_opener(_NoRedirect())

    def fetch(self, url: str, timeout: float) -> Fetched:
        with self._lock:
            known = self._done.get(url)
        if known is not None:
            return known
        fetched = self._fetch(url, timeout)
        if fetched.body is not None or "timed out" not in (fetched.failure or ""):
            # A time-out may be this target's short deadline: another may fare better.
            with self._lock:
                self._done[url] = fetched
        return fetched

    def _fetch(self, url: str, timeout: float) -> Fetched:
        if not url.lower().startswith("http://"):
            return Fetched(url, None, "only http:// CRL URLs are fetched")
        if timeout <= 0:
            return Fetched(url, None, "no time left within the timeout")
        request = urllib.request.Request(url, headers={"User-Agent": "check_pg_tls"})  # noqa: S310
        try:
            with self._opener.open(request, timeout=timeout) as response:
                if response.status != 200:
                    return Fetched(url, None, f"HTTP {response.status}")
                body = response.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            return Fetched(url, None, f"HTTP {exc.code}")
        except TimeoutError:
            return Fetched(url, None, f"timed out after {timeout:.1f} seconds")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            text = str(reason) if not isinstance(reason, OSError) else str(reason.strerror)
            if "timed out" in text:
                return Fetched(url, None, f"timed out after {timeout:.1f} seconds")
            return Fetched(url, None, text.lower() or type(exc).__name__)
        if len(body) > self.max_bytes:
            return Fetched(url, None, f"larger than {self.max_bytes // (1024 * 1024)} MiB")
        return Fetched(url, body)
