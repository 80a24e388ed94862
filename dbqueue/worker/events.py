"""A worker's events: its jobs started, completed, failed, retrying, released and paused, and
its own pause and resume.

Job events are built only while someone follows the stream (the control pass says so): claimed
batches in ``Worker._dispatch``, committed batches through the completer's observer. The
observer also sends ``job_paused`` when a retry or release landed a pause requested while the
job ran; a batch of plain completions costs it one scan and no query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dbqueue import events as ev
from dbqueue import signals, states
from dbqueue.control import mode_of

if TYPE_CHECKING:
    from dbqueue.storage import ClaimedJob, Outcome
    from dbqueue.worker.control import WorkerControl
    from dbqueue.worker.worker import Worker

logger = logging.getLogger("dbqueue.worker")

#: Longest error message carried by a job.failed or job.retrying event.
MAX_EVENT_ERROR = 500
#: Outcomes that land a pause requested while the job ran.
_MAY_PAUSE = ("retry", "release")


class WorkerEvents:
    """Publishes one worker's events on the app's event bus."""

    def __init__(self, worker: Worker, control: WorkerControl) -> None:
        self.worker = worker
        self.control = control
        #: Whether a subscriber follows the stream: job events are built only then.
        self.on = False
        self._meta: dict[str, tuple[str, str]] = {}

    def set_active(self, active: bool) -> None:
        self.worker.app.event_bus.set_active(active)
        if active != self.on:
            self.on = active
            if not active:
                self._meta.clear()

    def stop(self) -> None:
        """The worker stopped: build no more events; the bus looks subscribers up itself."""
        self.on = False
        self._meta.clear()
        self.worker.app.event_bus.unmanage()

    def started(self, jobs: Sequence[ClaimedJob]) -> None:
        """A claimed batch is about to run: one row per (task, queue, attempt)."""
        meta = self._meta
        groups: dict[tuple[str, str, int], list[str]] = {}
        for job in jobs:
            meta[job.id] = (job.task, job.queue)
            key = (job.task, job.queue, job.attempt)
            ids = groups.get(key)
            if ids is None:
                groups[key] = [job.id]
            else:
                ids.append(job.id)
        name, now = self.worker.name, time.time()
        self.worker.app.event_bus.emit_many(
            [
                (ev.JOB_STARTED, now, ids, task, queue, name, None, {"attempt": attempt})
                for (task, queue, attempt), ids in groups.items()
            ]
        )

    def finished(self, batch: Sequence[tuple[Outcome, bool]]) -> None:
        """A committed batch (the completer's observer), with whether each job was still ours.
        A retry or release may have landed a pause requested from anywhere: those, and only
        those, are looked up (one read)."""
        landing = [o.job_id for o, owned in batch if o.kind in _MAY_PAUSE and owned]
        paused = self._landed(landing) if landing else {}
        app = self.worker.app
        for job_id, pause_mode in paused.items():
            signals.job_paused.send(app, job_id=job_id, mode=pause_mode)
        if not self.on:
            return
        out: list[ev.Row] = []
        completed: dict[tuple[str | None, str | None], list[str]] = {}
        now, meta, name = time.time(), self._meta, self.worker.name
        for outcome, owned in batch:
            known = meta.pop(outcome.job_id, None)
            if not owned:
                continue
            task, queue = known if known is not None else (None, None)
            if outcome.kind == "complete" and outcome.error_type is None:
                ids = completed.get((task, queue))
                if ids is None:
                    completed[(task, queue)] = [outcome.job_id]
                else:
                    ids.append(outcome.job_id)
            else:
                out.append(self._event(outcome, task, queue, paused.get(outcome.job_id), now))
        for (task, queue), ids in completed.items():
            out.append((ev.JOB_COMPLETED, now, ids, task, queue, name, None, {}))
        if out:
            app.event_bus.emit_many(out)

    def _landed(self, ids: list[str]) -> dict[str, str]:
        try:
            found = self.worker.storage.landed_pauses(ids)
        except Exception as error:
            logger.warning("Cannot tell which released jobs were paused: %s", error)
            return {}
        return {job_id: mode_of(control) for job_id, control in found.items()}

    def _event(
        self, outcome: Outcome, task: str | None, queue: str | None, mode: str | None, now: float
    ) -> ev.Row:
        kind = outcome.kind
        data: dict[str, Any] = {}
        if mode is not None:
            kind_name, data = ev.JOB_PAUSED, {"mode": mode}
        elif kind == "complete":
            kind_name = ev.JOB_COMPLETED
            if outcome.error_type == states.IGNORED_MARK:
                data = {"ignored": True}
        elif kind in ("fail", "retry"):
            kind_name = ev.JOB_FAILED if kind == "fail" else ev.JOB_RETRYING
            error = (outcome.error or "")[:MAX_EVENT_ERROR]
            data = {"error_type": outcome.error_type, "error": error}
            if kind == "retry":
                data["delay"] = outcome.delay
        elif kind == "release":
            kind_name = ev.JOB_RELEASED
        else:
            kind_name, data = ev.JOB_CANCELLED, {"expired": True}
        return (kind_name, now, outcome.job_id, task, queue, self.worker.name, None, data)

    def worker_event(self, paused: bool, mode: str | None) -> None:
        """This worker was paused or resumed."""
        kind = ev.WORKER_PAUSED if paused else ev.WORKER_RESUMED
        data: dict[str, Any] = {"worker_id": self.worker.id}
        if paused:
            data["mode"] = mode
        self.worker.app.event_bus.publish_now(ev.encode(kind, worker=self.worker.name, data=data))
