"""Group commit: outcomes from every running job are written in as few transactions as possible.

A job's runner submits its outcome and waits on the returned future; the completer writes
everything that arrived since its last write in one transaction, then resolves the futures
with whether the job was still ours. Nothing is reported done before it is committed, and an
outage only delays the write: outcomes are retried until the database is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dbqueue.exceptions import StorageUnavailable
from dbqueue.storage import Outcome, Storage

logger = logging.getLogger("dbqueue.worker")

#: Longest batch written in one transaction.
MAX_BATCH = 500


class Receipt:
    """The promise of a commit: resolves to whether the job was still ours when written.

    A lighter ``concurrent.futures.Future`` (one per job, so it matters): callbacks run in the
    thread that resolves it, and an event is only made for a caller that actually waits.
    """

    __slots__ = ("_callbacks", "_done", "_event", "_lock", "_owned")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._owned = False
        self._callbacks: list[Callable[[Receipt], None]] = []
        self._event: threading.Event | None = None

    @classmethod
    def resolved(cls, owned: bool) -> Receipt:
        receipt = cls()
        receipt.set_result(owned)
        return receipt

    def set_result(self, owned: bool) -> None:
        with self._lock:
            self._owned, self._done = owned, True
            callbacks, self._callbacks = self._callbacks, []
            event = self._event
        if event is not None:
            event.set()
        for callback in callbacks:
            callback(self)

    def add_done_callback(self, callback: Callable[[Receipt], None]) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> bool:
        """Wait for the commit; True if the job was still this worker's."""
        if not self._done:
            with self._lock:
                if not self._done and self._event is None:
                    self._event = threading.Event()
                event = self._event
            if event is not None and not event.wait(timeout):
                raise TimeoutError("the outcome was not committed in time")
        return self._owned


class Completer:
    """A thread writing outcomes in batches for one worker."""

    def __init__(
        self,
        storage_getter: Callable[[], Storage],
        worker_id: str,
        on_written: Callable[[], None] = lambda: None,
    ) -> None:
        self._storage_getter = storage_getter
        self.worker_id = worker_id
        self.on_written = on_written
        #: Sees every committed batch, with whether each job was still ours, while set (the
        #: worker's events and pause landings).
        self.observer: Callable[[list[tuple[Outcome, bool]]], None] | None = None
        self._pending: list[tuple[Outcome, Receipt | None]] = []
        self._writing = 0
        self._writing_ids: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dbqueue-completer", daemon=True)

    @property
    def storage(self) -> Storage:
        return self._storage_getter()

    def start(self) -> None:
        self._thread.start()

    def job_ids(self) -> set[str]:
        """Jobs whose outcome is handed over and not yet committed."""
        with self._cond:
            return {o.job_id for o, _ in self._pending} | self._writing_ids

    @property
    def backlog(self) -> int:
        """Outcomes handed over and not yet committed."""
        return len(self._pending) + self._writing

    def submit(self, outcome: Outcome, wait: bool = True) -> Receipt:
        """Queue an outcome; the future resolves to True once committed while still owned."""
        future = Receipt()
        with self._cond:
            self._pending.append((outcome, future))
            self._cond.notify()
        return future

    def submit_many(self, outcomes: list[Outcome]) -> None:
        """Queue outcomes nobody waits for (successes with no handler, signal or log line)."""
        with self._cond:
            self._pending.extend([(outcome, None) for outcome in outcomes])
            self._cond.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending and self._stopping:
                    return
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self._writing = len(batch)
                self._writing_ids = {o.job_id for o, _ in batch}
            owned = self._write(batch)
            with self._cond:
                self._writing, self._writing_ids = 0, set()
            self.on_written()
            observer = self.observer
            if observer is not None:
                try:
                    observer([(outcome, outcome.job_id in owned) for outcome, _ in batch])
                except Exception:
                    logger.exception("Observing committed outcomes failed")

    def _write(self, batch: list[tuple[Outcome, Receipt | None]]) -> set[str]:
        """Commit a batch (one by one if the batch is refused); returns the ids still ours."""
        outcomes = [outcome for outcome, _ in batch]
        try:
            owned = self._finish(outcomes)
        except Exception:
            if len(batch) > 1:
                owned = set()
                for item in batch:
                    owned |= self._write([item])
                return owned
            owned = self._record_unwritable(outcomes[0])
        for outcome, future in batch:
            if future is not None:
                future.set_result(outcome.job_id in owned)
        return owned

    def _finish(self, outcomes: list[Outcome]) -> set[str]:
        """Write outcomes, waiting out database outages for as long as they last."""
        failures = 0
        while True:
            try:
                return self.storage.finish(self.worker_id, outcomes)
            except StorageUnavailable as error:
                failures += 1
                delay = min(5.0, 0.5 * failures)
                logger.error(
                    "Cannot record %d job outcome(s), retrying in %.1fs: %s",
                    len(outcomes),
                    delay,
                    error,
                )
                threading.Event().wait(delay)

    def _record_unwritable(self, outcome: Outcome) -> set[str]:
        """An outcome the database refuses (too large, bad bytes) fails the job, saying why."""
        logger.exception("Job %s: its outcome could not be stored", outcome.job_id)
        fallback = Outcome(
            "fail",
            outcome.job_id,
            error_type="dbqueue.exceptions.EncodeError",
            error=f"the job's {outcome.kind} outcome could not be stored",
        )
        try:
            return self._finish([fallback])
        except Exception:
            logger.exception("Job %s: even its failure could not be stored", outcome.job_id)
            return set()
