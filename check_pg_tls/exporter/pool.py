"""A bounded pool of probes, each with the deadline of the request that asked for it.

At most ``size`` probes run at once, in threads of their own; a request
beyond that waits for a free one, but never past its own deadline: a probe
that could not start in time is dropped from the queue, and the request is
told so (:class:`NotStarted`). The request also stops waiting at its
deadline if the probe itself overruns it (:class:`Overran`); the probe's
thread then finishes on its own, still counted against ``size``, so a
stuck resolver cannot make the exporter start more threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

__all__ = ["DEFAULT_SIZE", "MIN_BUDGET", "NotStarted", "Overran", "ProbePool"]

#: Probes at once by default: enough for a Prometheus scraping a few
#: thousand targets a minute, few enough for a small host's memory and
#: file descriptors (each probe holds a socket or two).
DEFAULT_SIZE = 32
#: A probe that would get less time than this is not started at all.
MIN_BUDGET = 0.05

_T = TypeVar("_T")


class NotStarted(Exception):
    """No probe slot became free before the request's deadline."""


class Overran(Exception):
    """The probe started but had not finished at the request's deadline."""


class ProbePool:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="probe")
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0

    def run(self, job: Callable[[float], _T], deadline: float) -> _T:
        """``job(budget)`` in a pool thread, ``budget`` being the seconds left at its start.

        ``deadline`` is a :func:`time.monotonic` time.

        Raises:
            NotStarted: no slot was free in time (or too little time was left).
            Overran: the job did not finish by the deadline.
        """
        started = threading.Event()

        def wrapped() -> _T:
            with self._lock:
                self.waiting -= 1
            budget = deadline - time.monotonic()
            if budget < MIN_BUDGET:
                raise NotStarted()
            started.set()
            with self._lock:
                self.running += 1
            try:
                return job(budget)
            finally:
                with self._lock:
                    self.running -= 1

        with self._lock:
            self.waiting += 1
        future = self._executor.submit(wrapped)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            if future.cancel():
                with self._lock:
                    self.waiting -= 1
                raise NotStarted() from None
            if not started.is_set():
                # Picked up just now, too late to be worth running.
                raise NotStarted() from None
            raise Overran() from None
        except CancelledError:
            raise NotStarted() from None

    def close(self) -> None:
        """Drop the probes still queued; those running finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
