"""A bounded pool of probes: each starts with its whole timeout, or not at all.

At most ``size`` probes run at once, in threads of their own; a request
beyond that waits for a free one. A probe that waited must not judge a
healthy server by what the wait left of its time (a server 40 ms away
needs more than 0.2 s for a handshake): one that found a free slot starts
at once, one that had to wait starts only while it can still have its
whole share before the request's deadline, and otherwise the request is
told the exporter was busy (:class:`NotStarted`), which the
HTTP side answers with 503, never ``probe_success 0``. The request also
stops waiting at its deadline if the probe overruns it (:class:`Overran`);
the probe's thread then finishes on its own, still counted against
``size``, so a stuck probe cannot make the exporter start more threads.

The threads are daemon threads: a process told to stop (:meth:`ProbePool.stop`)
answers the requests still waiting at a cutoff (:class:`Stopped`) and
exits without waiting for a probe that may take its whole timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["DEFAULT_SIZE", "MIN_BUDGET", "NotStarted", "Overran", "ProbePool", "Stopped"]

#: Probes at once by default: enough for a Prometheus scraping a few
#: thousand targets a minute, few enough for a small host's memory and
#: file descriptors (each probe holds a socket or two).
DEFAULT_SIZE = 32
#: A probe is given at least this many seconds, or is not asked for (the
#: HTTP side refuses a shorter scrape timeout).
MIN_BUDGET = 0.05

_T = TypeVar("_T")


class NotStarted(Exception):
    """No probe slot became free while the probe could still have its whole time."""


class Overran(Exception):
    """The probe started but had not finished at the request's deadline."""


class Stopped(Exception):
    """The exporter is stopping: the probe was not started, or not waited for."""


class _Ticket(Generic[_T]):
    def __init__(self, job: Callable[[float], _T], share: float, deadline: float) -> None:
        self.job = job
        self.share = share
        self.deadline = deadline
        #: Set whenever ``state`` changes, or the pool stops.
        self.changed = threading.Event()
        self.state = "queued"  # queued, running, done, late
        #: A thread was free for it when it came: it starts even if the
        #: thread wakes up late (a busy machine's scheduling is not the pool's wait).
        self.admitted = False
        self.result: _T | None = None
        self.error: BaseException | None = None

    def latest_start(self) -> float:
        if self.admitted:
            # Only the machine's scheduling made it late: up to half its
            # share (a tenth of a second at most) is forgiven.
            return self.deadline - self.share + min(0.1, 0.5 * self.share)
        # The whole share, less a little.
        return self.deadline - self.share + min(0.1, 0.05 * self.share)


class ProbePool:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._queue: deque[_Ticket[object]] = deque()
        self._live: set[_Ticket[object]] = set()
        self._ready = threading.Condition(self._lock)
        self._threads = 0
        self._idle = 0
        self._cutoff: float | None = None
        self.running = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def run(self, job: Callable[[float], _T], share: float, deadline: float) -> _T:
        """``job(budget)`` in a pool thread, ``budget`` being ``share`` seconds or
        a hair less; it must have returned by ``deadline`` (a :func:`time.monotonic` time).

        Raises:
            NotStarted: no slot was free while the whole share still fitted.
            Overran: the job did not finish by the deadline.
            Stopped: the pool was stopped before the job started or finished.
        """
        ticket: _Ticket[_T] = _Ticket(job, share, deadline)
        with self._lock:
            if self._cutoff is not None:
                raise Stopped()
            self._queue.append(ticket)  # type: ignore[arg-type]
            self._live.add(ticket)  # type: ignore[arg-type]
            if self._idle:
                # Claimed here, so that a burst of requests wakes as many threads.
                self._idle -= 1
                self._ready.notify()
                ticket.admitted = True
            elif self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._work, name="probe", daemon=True).start()
                ticket.admitted = True
        try:
            return self._wait(ticket)
        finally:
            with self._lock:
                self._live.discard(ticket)

    def _wait(self, ticket: _Ticket[_T]) -> _T:
        while True:
            ticket.changed.clear()
            with self._lock:
                state, cutoff = ticket.state, self._cutoff
                now = time.monotonic()
                if state == "queued" and (cutoff is not None or now > ticket.latest_start()):
                    self._queue.remove(ticket)  # type: ignore[arg-type]
                    raise Stopped() if cutoff is not None else NotStarted()
            if state == "late":
                raise NotStarted()
            if state == "done":
                if ticket.error is not None:
                    raise ticket.error
                return ticket.result  # type: ignore[return-value]
            if state == "running":
                end = min(ticket.deadline, cutoff) if cutoff is not None else ticket.deadline
                if now >= end:
                    stopped = cutoff is not None and cutoff < ticket.deadline
                    raise Stopped() if stopped else Overran()
            else:
                end = ticket.latest_start()
            ticket.changed.wait(max(0.0, end - now) + 0.001)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._idle += 1
                    self._ready.wait()
                ticket = self._queue.popleft()
                now = time.monotonic()
                budget = min(ticket.share, ticket.deadline - now)
                if now > ticket.latest_start():
                    ticket.state = "late"
                    ticket.changed.set()
                    continue
                ticket.state = "running"
                self.running += 1
            ticket.changed.set()
            try:
                ticket.result = ticket.job(budget)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                ticket.error = exc
            with self._lock:
                self.running -= 1
                ticket.state = "done"
            ticket.changed.set()

    def stop(self, cutoff: float) -> None:
        """Start nothing more; a request still waiting for its probe at ``cutoff``
        (a :func:`time.monotonic` time) or after is told :class:`Stopped`."""
        with self._lock:
            self._cutoff = cutoff
            live = list(self._live)
        for ticket in live:
            ticket.changed.set()
