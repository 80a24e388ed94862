"""Time limits and stop requests for jobs running in threads: an exception raised into the
job's thread.

CPython raises an asynchronous exception at the thread's next bytecode, so a job stuck in a
long C call (a blocking socket read, time.sleep) only sees it when that call returns. Prefork
children get real limits: the parent signals (soft) or kills (hard) the child.

Both take a lock around arming, disarming and the raise, so an exception is only ever raised
while the job's body runs (or is just leaving it, still inside the tracer's exception handler).
The stopper's locks are per thread: arming it for every job never contends.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

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
    """Starts and stops the clock around a job body."""

    def arm(self, soft: float | None, hard: float | None) -> int | None: ...

    def disarm(self, token: int | None) -> None: ...


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
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dbqueue-watchdog", daemon=True)
        self._thread.start()

    def arm(self, soft: float | None, hard: float | None) -> int | None:
        """Start the clock for the calling thread's job; returns a token for :meth:`disarm`."""
        if not soft and not hard:
            return None
        token = next(self._seq)
        thread_id = threading.get_ident()
        now = time.monotonic()
        with self._cond:
            self._armed[thread_id] = token
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

    def disarm(self, token: int | None) -> None:
        """Stop the clock; after this returns nothing more is raised into the thread."""
        if token is None:
            return
        with self._cond:
            if self._armed.get(threading.get_ident()) == token:
                del self._armed[threading.get_ident()]

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


class Stopper:
    """Knows which job body each pool thread runs, to raise an exception into it on request
    (an aggressive pause, a termination)."""

    def __init__(self) -> None:
        self._slots: dict[int, StopSlot] = {}
        self._jobs: dict[str, StopSlot] = {}

    def prepare(self, job_id: str) -> StopSlot:
        """The calling thread's slot, ready to be entered around ``job_id``'s body."""
        thread_id = threading.get_ident()
        slot = self._slots.get(thread_id)
        if slot is None:
            slot = self._slots[thread_id] = StopSlot(self, thread_id)
        slot.next = job_id
        return slot

    def interrupt(self, job_id: str, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` into the thread running ``job_id``'s body, once per run; False
        if no body runs it."""
        slot = self._jobs.get(job_id)
        if slot is None:
            return False
        with slot.lock:
            if slot.job != job_id:
                return False
            if slot.interrupted:
                return True
            slot.interrupted = True
            return raise_in_thread(slot.thread_id, exc_type)


class StopSlot:
    """One pool thread's current job body; a context manager reused for each of its jobs."""

    __slots__ = ("interrupted", "job", "lock", "next", "stopper", "thread_id")

    def __init__(self, stopper: Stopper, thread_id: int) -> None:
        self.stopper = stopper
        self.thread_id = thread_id
        self.lock = threading.Lock()
        self.job: str | None = None
        self.next: str | None = None
        self.interrupted = False

    def __enter__(self) -> None:
        # No lock needed here: a raise that lands now is inside the tracer's handler already.
        self.interrupted = False
        self.job = self.next
        self.stopper._jobs[self.next] = self  # type: ignore[index]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        job = self.job
        with self.lock:
            self.job = None
        if job is not None:
            self.stopper._jobs.pop(job, None)


class LimitGuard:
    """Time limits around a job body, inside the stop slot (the rare path: limits are set)."""

    __slots__ = ("hard", "inner", "limiter", "soft", "token")

    def __init__(
        self, limiter: Limiter, soft: float | None, hard: float | None, inner: object | None
    ) -> None:
        self.limiter, self.soft, self.hard, self.inner = limiter, soft, hard, inner
        self.token: int | None = None

    def __enter__(self) -> None:
        if self.inner is not None:
            self.inner.__enter__()  # type: ignore[attr-defined]
        self.token = self.limiter.arm(self.soft, self.hard)

    def __exit__(self, *exc: object) -> None:
        try:
            self.limiter.disarm(self.token)
        finally:
            if self.inner is not None:
                self.inner.__exit__(None, None, None)  # type: ignore[attr-defined]
