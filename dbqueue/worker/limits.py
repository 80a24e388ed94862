"""Time limits and stop requests for jobs running in threads: an exception raised into the
job's thread.

CPython raises an asynchronous exception at the thread's next bytecode, so a job stuck in a
long C call (a blocking socket read, time.sleep) only sees it when that call returns. Prefork
children get real limits: the parent signals (soft) or kills (hard) the child.

Arming and disarming happen under one lock with the raise, so an exception is only ever raised
while the job's body runs (or is leaving it, still inside the tracer's exception handler).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from dbqueue.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Ask CPython to raise ``exc_type`` in another thread; False if the thread is gone."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    if done > 1:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return done == 1


class Limiter(Protocol):
    """Starts and stops the clock around a job body, and knows which job runs where."""

    def arm(self, soft: float | None, hard: float | None, job_id: str | None = None) -> Any: ...

    def disarm(self, token: Any, job_id: str | None = None) -> None: ...


class Guard:
    """The context around one job body: arms the limiter on entry, disarms on exit."""

    __slots__ = ("hard", "job_id", "limiter", "soft", "token")

    def __init__(
        self, limiter: Limiter, soft: float | None, hard: float | None, job_id: str
    ) -> None:
        self.limiter, self.soft, self.hard, self.job_id = limiter, soft, hard, job_id
        self.token: Any = None

    def __enter__(self) -> None:
        self.token = self.limiter.arm(self.soft, self.hard, self.job_id)

    def __exit__(self, *exc: object) -> None:
        self.limiter.disarm(self.token, self.job_id)


@dataclass(order=True)
class _Deadline:
    at: float
    seq: int
    thread_id: int = field(compare=False)
    token: int = field(compare=False)
    exc_type: type[BaseException] = field(compare=False)


class Watchdog:
    """One thread raising SoftTimeLimitExceeded / TimeLimitExceeded into overrunning jobs."""

    def __init__(self) -> None:
        self._heap: list[_Deadline] = []
        self._armed: dict[int, int] = {}
        #: job id -> (thread id, token) of the body running it.
        self._jobs: dict[str, tuple[int, int]] = {}
        #: job id -> token of the run already interrupted (never raise twice into one run).
        self._interrupted: dict[str, int] = {}
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dbqueue-watchdog", daemon=True)
        self._thread.start()

    def arm(self, soft: float | None, hard: float | None, job_id: str | None = None) -> int | None:
        """Start the clock for the calling thread's job; returns a token for :meth:`disarm`.

        With ``job_id`` the job can also be stopped (:meth:`interrupt`) until disarmed.
        """
        if not soft and not hard and job_id is None:
            return None
        token = next(self._seq)
        thread_id = threading.get_ident()
        with self._cond:
            self._armed[thread_id] = token
            if job_id is not None:
                self._jobs[job_id] = (thread_id, token)
            if not soft and not hard:
                return token
            now = time.monotonic()
            if soft:
                heapq.heappush(
                    self._heap,
                    _Deadline(now + soft, next(self._seq), thread_id, token, SoftTimeLimitExceeded),
                )
            if hard:
                heapq.heappush(
                    self._heap,
                    _Deadline(now + hard, next(self._seq), thread_id, token, TimeLimitExceeded),
                )
            self._cond.notify()
        return token

    def disarm(self, token: int | None, job_id: str | None = None) -> None:
        """Stop the clock; after this returns nothing more is raised into the thread."""
        if token is None:
            return
        with self._cond:
            if self._armed.get(threading.get_ident()) == token:
                del self._armed[threading.get_ident()]
            if job_id is not None:
                self._jobs.pop(job_id, None)
                self._interrupted.pop(job_id, None)

    def interrupt(self, job_id: str, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` into the thread running ``job_id``'s body (once per run); False
        if no body runs it."""
        with self._cond:
            where = self._jobs.get(job_id)
            if where is None or self._armed.get(where[0]) != where[1]:
                return False
            if self._interrupted.get(job_id) == where[1]:
                return True
            self._interrupted[job_id] = where[1]
            return raise_in_thread(where[0], exc_type)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                due = heapq.heappop(self._heap)
                if self._armed.get(due.thread_id) == due.token:
                    raise_in_thread(due.thread_id, due.exc_type)
