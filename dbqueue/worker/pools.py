"""Execution pools for sync tasks: threads and solo (prefork lives in prefork.py).

A pool receives claimed jobs from the worker loop and calls ``on_done(job_id)`` once a job's
outcome is committed, which frees its slot.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from dbqueue.storage import ClaimedJob
from dbqueue.worker.completer import Receipt
from dbqueue.worker.runner import JobRunner

logger = logging.getLogger("dbqueue.worker")


def _finisher(on_done: Callable[[str], None], job_id: str) -> Callable[[Receipt], None]:
    """Free the job's slot once its outcome is committed."""

    def finished(_: Receipt) -> None:
        on_done(job_id)

    return finished


class ThreadPool:
    """``-P threads``: N threads taking jobs from one in-memory queue."""

    name = "threads"

    def __init__(self, size: int, runner: JobRunner, on_done: Callable[[str], None]) -> None:
        self.size = size
        self.runner = runner
        self.on_done = on_done
        self._queue: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"dbqueue-thread-{i}", daemon=True)
            for i in range(size)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, job: ClaimedJob) -> None:
        self._queue.put(job)

    def drain_unstarted(self) -> list[ClaimedJob]:
        """Take back jobs no thread has picked up yet (warm shutdown releases them)."""
        jobs: list[ClaimedJob] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                jobs.append(job)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                future = self.runner.run(job)
            except BaseException:
                logger.exception("Worker thread stopped by job %s", job.id)
                self.on_done(job.id)
                continue
            future.add_done_callback(_finisher(self.on_done, job.id))

    def stop(self, timeout: float) -> None:
        """Ask every thread to exit; wait for them together for at most ``timeout`` seconds."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class SoloPool:
    """``-P solo``: jobs run one at a time in the worker's main loop thread."""

    name = "solo"
    size = 1

    def __init__(self, size: int, runner: JobRunner, on_done: Callable[[str], None]) -> None:
        self.runner = runner
        self.on_done = on_done

    def start(self) -> None:
        """Nothing to start: the loop thread is the pool."""

    def submit(self, job: ClaimedJob) -> None:
        try:
            future = self.runner.run(job)
        except BaseException:
            self.on_done(job.id)
            raise
        future.add_done_callback(_finisher(self.on_done, job.id))

    def drain_unstarted(self) -> list[ClaimedJob]:
        return []

    def stop(self, timeout: float) -> None:
        """Nothing to stop."""
