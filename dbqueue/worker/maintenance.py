"""The worker's housekeeping thread: heartbeat, stale-lock reaper, pruning.

* Heartbeat: one UPDATE of the worker's registry row per interval proves every job it holds
  is alive. If the row vanished (the worker was presumed dead), it registers again.
* Reaper: running jobs whose worker has been silent for ``stale_lock_age`` go back to the
  queue, or fail once their retry budget is spent. Every worker runs it; SKIP LOCKED (or
  SQLite's single writer) keeps two reapers from taking the same job.
* Pruning: finished jobs older than ``result_expires`` are deleted in small batches.
* Fan-outs (every reaper interval): timeouts, and the recovery backstop of
  ``dbqueue/durable/maintenance.py``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from dbqueue.storage import Storage
from dbqueue.storage.recount import recount

logger = logging.getLogger("dbqueue.worker")

#: Registry rows of workers silent this long, holding no job, are deleted.
DEAD_WORKER_AGE = 3600.0
#: Jobs pruned per statement, so pruning never holds long locks.
PRUNE_BATCH = 1000
#: Seconds between two recounts of miscounted fan-outs (each scans a few fan-outs' children).
RECOUNT_INTERVAL = 60.0


@dataclass
class Schedule:
    """Intervals in seconds; 0 disables a task."""

    heartbeat: float
    reap: float
    stale_age: float
    prune: float
    result_expires: float | None


class Maintenance:
    """Runs the periodic tasks until stopped; survives database outages."""

    def __init__(
        self,
        storage: Callable[[], Storage],
        worker_id: str,
        schedule: Schedule,
        register: Callable[[], None],
        on_reaped: Callable[[int], None],
    ) -> None:
        self._storage = storage
        self.worker_id = worker_id
        self.schedule = schedule
        self.register = register
        self.on_reaped = on_reaped
        #: Where the fan-out recount goes on next pass (it visits every fan-out in turn); each
        #: worker starts at a random place, so workers share the round instead of repeating it.
        self._recount_after = str(uuid.uuid4())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbqueue-maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        s = self.schedule
        jobs = [
            (s.heartbeat, self.heartbeat),
            (s.reap, self.reap),
            (s.reap, self.fan_outs),
            (s.prune if s.result_expires else 0.0, self.prune),
            (60.0, self.forget_dead_workers),
            (RECOUNT_INTERVAL, self.recount_fan_outs),
        ]
        due = {
            fn: time.monotonic() + (interval if fn == self.heartbeat else 0.0)
            for interval, fn in jobs
            if interval > 0
        }
        intervals = {fn: interval for interval, fn in jobs if interval > 0}
        while not self._stop.is_set():
            now = time.monotonic()
            for fn, at in list(due.items()):
                if at <= now:
                    try:
                        fn()
                    except Exception as error:
                        logger.warning("%s failed: %s", fn.__name__.replace("_", " "), error)
                    due[fn] = time.monotonic() + intervals[fn]
            self._stop.wait(max(0.0, min(due.values()) - time.monotonic()) if due else 1.0)

    def heartbeat(self) -> None:
        if not self._storage().heartbeat(self.worker_id):
            logger.warning("This worker's registry row was gone (presumed dead); registering again")
            self.register()

    def reap(self) -> None:
        reaped = self._storage().reap(self.schedule.stale_age)
        for job in reaped:
            if job.status == "failed":
                logger.error(
                    "Reaper: job %s of %s failed for good: its worker died during "
                    "attempt %d and its retries are spent",
                    job.id,
                    job.task,
                    job.attempt,
                )
            else:
                logger.warning(
                    "Reaper: job %s of %s returned to the queue: its worker stopped "
                    "heartbeating during attempt %d",
                    job.id,
                    job.task,
                    job.attempt,
                )
        if reaped:
            self.on_reaped(len(reaped))

    def fan_outs(self) -> None:
        from dbqueue.durable.maintenance import sweep

        sweep(self._storage())

    def recount_fan_outs(self) -> None:
        _, self._recount_after = recount(self._storage(), self._recount_after)

    def prune(self) -> None:
        expires = self.schedule.result_expires
        if not expires:
            return
        while self._storage().prune(expires, PRUNE_BATCH) >= PRUNE_BATCH:
            if self._stop.is_set():
                return

    def forget_dead_workers(self) -> None:
        self._storage().forget_dead_workers(max(DEAD_WORKER_AGE, 10 * self.schedule.stale_age))
