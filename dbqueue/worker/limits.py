"""Time limits for jobs running in threads: an exception raised into the job's thread.

CPython raises an asynchronous exception at the thread's next bytecode, so a job stuck in a
long C call (a blocking socket read, time.sleep) only sees it when that call returns. Prefork
children get real limits: the parent signals (soft) or kills (hard) the child.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
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
