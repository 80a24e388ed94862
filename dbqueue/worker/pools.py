"""Execution pools for sync tasks: threads and solo (prefork lives in prefork.py).

A pool receives claimed jobs from the worker loop and calls ``release(job_ids)`` once the jobs'
outcomes are handed over to be committed, which frees their slots.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from dbqueue.storage import ClaimedJob
from dbqueue.worker.runner import JobRunner

logger = logging.getLogger("dbqueue.worker")

#: Frees the slots of jobs whose outcomes are handed over.
Release = Callable[[Sequence[str]], None]
#: Most jobs a thread takes from the shared queue at once (only when the queue is long).
MAX_BITE = 32
#: Seconds a thread's current job may run before idle threads steal the rest of its bite.
STEAL_AFTER = 0.02


class ThreadPool:
    """``-P threads``: N threads taking jobs from one in-memory queue.

    A thread takes one job at a time while the queue is short, and a fair share of it (up to
    ``MAX_BITE``) when it is long, so a burst of short jobs costs one wake-up per bite. A bite's
    jobs stay stealable until they start: a thread with nothing to do takes half of the bite of
    a thread whose current job has run for ``STEAL_AFTER``, so a job never waits long behind a
    long one while another thread is idle.
    """

    name = "threads"

    def __init__(self, size: int, runner: JobRunner, release: Release) -> None:
        self.size = size
        self.runner = runner
        self.release = release
        self._queue: collections.deque[ClaimedJob] = collections.deque()
        #: Each thread's bite: jobs it took and has not started yet.
        self._bites: list[collections.deque[ClaimedJob]] = [
            collections.deque() for _ in range(size)
        ]
        #: When each thread started its current job (monotonic seconds).
        self._since = [0.0] * size
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"dbqueue-thread-{i}", daemon=True)
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
        """Take back jobs no thread has started yet (warm shutdown releases them)."""
        with self._cond:
            jobs = list(self._queue)
            self._queue.clear()
            for bite in self._bites:
                jobs.extend(bite)
                bite.clear()
        return jobs

    def _fill(self, index: int) -> bool:
        """Wait for work and put some in this thread's bite: from the queue, else stolen from a
        bite stuck behind a long job. False once the pool stops."""
        bite = self._bites[index]
        with self._cond:
            while True:
                if self._queue:
                    count = min(MAX_BITE, max(1, len(self._queue) // self.size))
                    bite.extend(self._queue.popleft() for _ in range(count))
                    if count > 1:
                        self._cond.notify()  # an idle thread watches it, to steal if it stalls
                    break
                if bite:
                    break
                wait = self._steal(bite)
                if wait == 0.0:
                    break
                if self._stopping:
                    return False
                self._cond.wait(wait)
            self._since[index] = time.monotonic()  # under the lock: no thief sees it stale
        return True

    def _steal(self, bite: collections.deque[ClaimedJob]) -> float | None:
        """Take half of the largest stealable bite into ``bite`` (0.0); else how long to wait
        until one may become stealable, or None when no bite holds a job."""
        now = time.monotonic()
        victim: collections.deque[ClaimedJob] | None = None
        soonest: float | None = None
        for other, since in zip(self._bites, self._since, strict=True):
            if not other:
                continue
            ripe = since + STEAL_AFTER - now
            if ripe <= 0.0:
                if victim is None or len(other) > len(victim):
                    victim = other
            elif soonest is None or ripe < soonest:
                soonest = ripe
        if victim is None:
            return soonest
        for _ in range((len(victim) + 1) // 2):
            try:
                bite.appendleft(victim.pop())
            except IndexError:  # its owner started the last ones meanwhile
                break
        return 0.0 if bite else STEAL_AFTER

    def _started(self, index: int, started: list[ClaimedJob]) -> Iterator[ClaimedJob]:
        """This thread's bite, one job at a time, each taken (and added to ``started``) as it
        starts; deque pops are atomic, so a thief and the owner never take the same job."""
        bite = self._bites[index]
        while True:
            try:
                job = bite.popleft()
            except IndexError:
                return
            self._since[index] = time.monotonic()
            started.append(job)
            yield job

    def _work(self, index: int) -> None:
        while self._fill(index):
            started: list[ClaimedJob] = []
            try:
                self.runner.run_many(self._started(index, started), self.release)
            except BaseException:
                task = started[-1].task if started else "none"
                logger.exception("Worker thread stopped by a job of %s", task)
                self.release([job.id for job in started])

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
