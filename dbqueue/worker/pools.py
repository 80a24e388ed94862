"""Execution pools for sync tasks: threads and solo (prefork lives in prefork.py).

A pool receives claimed jobs from the worker loop and calls ``release(job_ids)`` once the jobs'
outcomes are handed over to be committed, which frees their slots.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence

from dbqueue.storage import ClaimedJob
from dbqueue.worker.runner import JobRunner

logger = logging.getLogger("dbqueue.worker")

#: Frees the slots of jobs whose outcomes are handed over.
Release = Callable[[Sequence[str]], None]
#: Most jobs a thread takes from the shared queue at once (only when the queue is long).
MAX_BITE = 32


class ThreadPool:
    """``-P threads``: N threads taking jobs from one in-memory queue.

    A thread takes one job at a time while the queue is short, and a fair share of it (up to
    ``MAX_BITE``) when it is long, so a burst of short jobs costs one wake-up per bite.
    """

    name = "threads"

    def __init__(self, size: int, runner: JobRunner, release: Release) -> None:
        self.size = size
        self.runner = runner
        self.release = release
        self._queue: collections.deque[ClaimedJob] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"dbqueue-thread-{i}", daemon=True)
            for i in range(size)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, job: ClaimedJob) -> None:
        self.submit_many([job])

    def submit_many(self, jobs: Sequence[ClaimedJob]) -> None:
        with self._cond:
            self._queue.extend(jobs)
            self._cond.notify(len(jobs))

    def drain_unstarted(self) -> list[ClaimedJob]:
        """Take back jobs no thread has picked up yet (warm shutdown releases them)."""
        with self._cond:
            jobs = list(self._queue)
            self._queue.clear()
        return jobs

    def _take(self) -> list[ClaimedJob] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            count = min(MAX_BITE, max(1, len(self._queue) // self.size))
            return [self._queue.popleft() for _ in range(count)]

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            try:
                self.runner.run_many(jobs, self.release)
            except BaseException:
                logger.exception("Worker thread stopped by a job of %s", jobs[0].task)
                self.release([job.id for job in jobs])

    def stop(self, timeout: float) -> None:
        """Ask every thread to exit; wait for them together for at most ``timeout`` seconds."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class SoloPool:
    """``-P solo``: jobs run one at a time in the worker's main loop thread."""

    name = "solo"
    size = 1

    def __init__(self, size: int, runner: JobRunner, release: Release) -> None:
        self.runner = runner
        self.release = release

    def start(self) -> None:
        """Nothing to start: the loop thread is the pool."""

    def submit(self, job: ClaimedJob) -> None:
        self.submit_many([job])

    def submit_many(self, jobs: Sequence[ClaimedJob]) -> None:
        try:
            self.runner.run_many(jobs, self.release)
        except BaseException:
            self.release([job.id for job in jobs])
            raise

    def drain_unstarted(self) -> list[ClaimedJob]:
        return []

    def stop(self, timeout: float) -> None:
        """Nothing to stop."""
