"""A worker's events: its jobs started, completed, failed, retrying, released and paused, and
its own pause and resume.

Job events are built only while someone follows the stream (the control pass says so): claimed
batches in ``Worker._dispatch``, committed batches through the completer's observer. The
observer also runs while pause requests on held jobs are known, to send ``job_paused`` when
such a pause lands. Nothing here runs for a plain job while nobody follows or pauses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dbqueue import events as ev
from dbqueue import signals, states

if TYPE_CHECKING:
    from dbqueue.storage import ClaimedJob, Outcome
    from dbqueue.worker.completer import Receipt
    from dbqueue.worker.control import WorkerControl
    from dbqueue.worker.worker import Worker

#: Longest error message carried by a job.failed or job.retrying event.
MAX_EVENT_ERROR = 500
_MODES = {"pause_graceful": "graceful", "pause_aggressive": "aggressive"}


class WorkerEvents:
    """Publishes one worker's events on the app's event bus."""

    def __init__(self, worker: Worker, control: WorkerControl) -> None:
        self.worker = worker
        self.control = control
        #: Whether a subscriber follows the stream: job events are built only then.
        self.on = False
        self._watching = False
        self._meta: dict[str, tuple[str, str]] = {}

    def set_active(self, active: bool) -> None:
        self.worker.app.event_bus.set_active(active)
        if active != self.on:
            self.on = active
            if not active:
                self._meta.clear()
            self._install()

    def watch_pauses(self, watching: bool) -> None:
        """Pause requests on held jobs are known (or no longer): observe what lands."""
        if watching != self._watching:
            self._watching = watching
            self._install()

    def _install(self) -> None:
        completer = getattr(self.worker, "completer", None)
        if completer is not None:
            completer.observer = self.finished if (self.on or self._watching) else None

    def started(self, jobs: Sequence[ClaimedJob]) -> None:
        """A claimed batch is about to run."""
        name, now, meta = self.worker.name, time.time(), self._meta
        batch = []
        for job in jobs:
            meta[job.id] = (job.task, job.queue)
            batch.append(
                ev.encode(
                    ev.JOB_STARTED,
                    job.id,
                    ts=now,
                    task=job.task,
                    queue=job.queue,
                    worker=name,
                    data={"attempt": job.attempt},
                )
            )
        self.worker.app.event_bus.emit_many(batch)

    def finished(self, batch: Sequence[tuple[Outcome, Receipt]]) -> None:
        """A committed batch (the completer's observer)."""
        publish = self.on
        out: list[dict[str, Any]] = []
        app, now = self.worker.app, time.time()
        for outcome, receipt in batch:
            task, queue = self._meta.pop(outcome.job_id, (None, None)) if publish else (None, None)
            if not receipt.result():
                continue
            mode = None
            if outcome.kind in ("retry", "release"):
                mode = _MODES.get(self.control.request_for(outcome.job_id) or "")
            if mode is not None:
                signals.job_paused.send(app, job_id=outcome.job_id, mode=mode)
            if publish:
                out.append(self._event(outcome, task, queue, mode, now))
        if out:
            app.event_bus.emit_many(out)

    def _event(
        self, outcome: Outcome, task: str | None, queue: str | None, mode: str | None, now: float
    ) -> dict[str, Any]:
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
            data = {
                "error_type": outcome.error_type,
                "error": (outcome.error or "")[:MAX_EVENT_ERROR],
            }
            if kind == "retry":
                data["delay"] = outcome.delay
        elif kind == "release":
            kind_name = ev.JOB_RELEASED
        else:
            kind_name, data = ev.JOB_CANCELLED, {"expired": True}
        return ev.encode(
            kind_name,
            outcome.job_id,
            ts=now,
            task=task,
            queue=queue,
            worker=self.worker.name,
            data=data,
        )

    def worker_event(self, paused: bool, mode: str | None) -> None:
        """This worker was paused or resumed."""
        kind = ev.WORKER_PAUSED if paused else ev.WORKER_RESUMED
        data = (
            {"worker_id": self.worker.id, "mode": mode} if paused else {"worker_id": self.worker.id}
        )
        self.worker.app.event_bus.publish_now(ev.encode(kind, worker=self.worker.name, data=data))
