"""Running many checks at once, with a bounded number of open sockets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["DEFAULT_WORKERS", "run_all"]

#: Enough to hide network latency; few enough not to look like a flood to a
#: server, or to run a small monitoring host out of file descriptors.
DEFAULT_WORKERS = 16


_T = TypeVar("_T")


def run_all(jobs: Sequence[Callable[[], _T]], workers: int = DEFAULT_WORKERS) -> list[_T]:
    """Run every job, ``workers`` at a time, and return their results in order.

    Each job probes one server within its own deadline, so a dead server
    holds up one worker for at most that long. The judgement runs in the
    worker too, overlapping other servers' network waits.
    """
    # Imported here: a single check does not pay for a thread pool.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        # result() re-raises a job's unexpected error here.
        return [future.result() for future in [pool.submit(job) for job in jobs]]
