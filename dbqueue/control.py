"""Pause, resume and cancel jobs, queues and workers, from any process (``app.pause_job``...).

Every request is written to the database, where the claim and the workers read it; workers in
this process are also told at once (:class:`LocalControl`), and on PostgreSQL every worker is
notified. Modes: ``"graceful"`` lets a running job finish its current run (a retry it ends in is
held); ``"aggressive"`` stops it at once without using up an attempt.

Jobs being stopped in this process are listed here too, so durable boundaries (``call``,
checkpoints) can stop a job between steps: :func:`raise_if_stopped`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dbqueue import events, signals, states
from dbqueue.exceptions import JobStateError, JobStopped, TaskNotFound, WorkerNotFound
from dbqueue.request import current_request
from dbqueue.storage.control import PAUSE_AGGRESSIVE, PAUSE_GRACEFUL

if TYPE_CHECKING:
    from dbqueue.app import DBQueue

logger = logging.getLogger("dbqueue.control")

GRACEFUL = "graceful"
AGGRESSIVE = "aggressive"
MODES = (GRACEFUL, AGGRESSIVE)

#: Jobs this process was asked to stop (aggressive pause, terminate); cleared as they leave.
_stopping: set[str] = set()


def check_mode(mode: str) -> str:
    """The mode, or a ValueError naming the modes there are."""
    if mode not in MODES:
        raise ValueError(f"pause mode must be 'graceful' or 'aggressive', got {mode!r}")
    return mode


def stop_requested(job_id: str | None = None) -> bool:
    """Whether this process was asked to stop the job (default: the job running here)."""
    if job_id is None:
        request = current_request()
        job_id = request.id if request is not None else None
    return job_id is not None and job_id in _stopping


def raise_if_stopped() -> None:
    """Raise :class:`JobStopped` if the job running here is being stopped (call it between
    steps: a sync job blocked in C code, or an async job between awaits, stops there)."""
    if _stopping and stop_requested():
        request = current_request()
        raise JobStopped(f"job {request.id if request else '?'} was stopped")


@dataclass(frozen=True)
class PausedJob:
    """A paused job: its id, task, queue, the status it returns to when resumed and the mode
    it was paused with."""

    id: str
    task: str
    queue: str
    resume_status: str
    mode: str


def mode_of(control: str | None) -> str:
    """The pause mode a ``control`` value stands for."""
    return AGGRESSIVE if control == PAUSE_AGGRESSIVE else GRACEFUL


class LocalControl(Protocol):
    """A worker in this process, told about requests at once (besides the database)."""

    def local_job_request(self, job_id: str, request: str | None) -> None: ...

    def local_queue(self, name: str, paused: bool) -> None: ...

    def local_worker(self, name: str, mode: str | None) -> bool: ...


class Controller:
    """The app's pause, resume and cancel operations; ``app.pause_job`` and friends call it."""

    def __init__(self, app: DBQueue) -> None:
        self.app = app
        self._locals: list[LocalControl] = []

    def attach(self, control: LocalControl) -> None:
        """A worker in this process wants to hear about requests at once."""
        self._locals.append(control)

    def detach(self, control: LocalControl) -> None:
        if control in self._locals:
            self._locals.remove(control)

    def _emit(self, event: events.Row) -> None:
        self.app.event_bus.publish_now(event)

    # -- jobs -------------------------------------------------------------------------------

    def pause_job(self, job_id: str, mode: str = GRACEFUL) -> bool:
        """Pause a job; True if it is paused now, False if it is running and will pause when
        its run ends (graceful) or as soon as its worker stops it (aggressive)."""
        check_mode(mode)
        control = PAUSE_AGGRESSIVE if mode == AGGRESSIVE else PAUSE_GRACEFUL
        outcome, state = self.app.storage.pause_job(job_id, control)
        if state is None:
            raise TaskNotFound(f"no job with id {job_id!r}")
        if outcome == "paused":
            signals.job_paused.send(self.app, job_id=job_id, mode=mode)
            self._emit(
                events.encode(events.JOB_PAUSED, job_id, queue=state.queue, data={"mode": mode})
            )
            return True
        if outcome == "requested":
            for local in list(self._locals):
                local.local_job_request(job_id, state.control)
            return False
        if state.status == states.PAUSED:
            return True
        raise JobStateError(
            f"job {job_id} is {state.status}: only a pending, retrying, waiting or running "
            "job can be paused"
        )

    def resume_job(self, job_id: str) -> bool:
        """Resume a paused job (it returns to the status it was paused in); True if it was
        paused, or running with a pause requested that had not landed (the request is
        withdrawn); False if it was not paused."""
        outcome, state = self.app.storage.resume_job(job_id)
        if state is None:
            raise TaskNotFound(f"no job with id {job_id!r}")
        if outcome == "resumed":
            signals.job_resumed.send(self.app, job_id=job_id, status=state.status)
            self._emit(
                events.encode(
                    events.JOB_RESUMED, job_id, queue=state.queue, data={"status": state.status}
                )
            )
            self.app.wake_local(state.queue)
            return True
        if outcome == "withdrawn":
            for local in list(self._locals):
                local.local_job_request(job_id, None)
            return True
        if state.status in states.TERMINAL:
            raise JobStateError(f"job {job_id} is {state.status}: a finished job cannot be resumed")
        return False

    def is_job_paused(self, job_id: str) -> bool:
        state = self.app.storage.job_control_state(job_id)
        if state is None:
            raise TaskNotFound(f"no job with id {job_id!r}")
        return state.status == states.PAUSED

    def paused_jobs(self, queue: str | None = None) -> list[PausedJob]:
        return [
            PausedJob(
                row["id"],
                row["task"],
                row["queue"],
                row["resume_status"] or "pending",
                mode_of(row["control"]),
            )
            for row in self.app.storage.paused_jobs(queue)
        ]

    def revoke(self, ids: Sequence[str], terminate: bool = False) -> int:
        """Cancel jobs that have not finished; with ``terminate`` running ones are stopped."""
        storage = self.app.storage
        count = storage.revoke(ids, terminate)
        if terminate and count:
            for local in list(self._locals):
                for job_id in ids:
                    local.local_job_request(job_id, "terminate")
        if count and self.app.event_bus.active:
            found = storage.job_states(list(ids))
            for job_id in ids:
                if found.get(job_id, ("", None))[0] == states.CANCELLED:
                    self._emit(
                        events.encode(events.JOB_CANCELLED, job_id, data={"terminate": terminate})
                    )
        return count

    # -- queues -----------------------------------------------------------------------------

    def _check_queue(self, name: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a queue name must be a non-empty string, got {name!r}")
        return name

    def pause_queue(self, name: str) -> None:
        """Stop every worker from claiming the queue's jobs; running ones finish, enqueueing
        still works."""
        self.app.storage.pause_queue(self._check_queue(name))
        for local in list(self._locals):
            local.local_queue(name, True)
        signals.queue_paused.send(self.app, queue=name)
        self._emit(events.encode(events.QUEUE_PAUSED, queue=name))

    def resume_queue(self, name: str) -> None:
        self.app.storage.resume_queue(self._check_queue(name))
        for local in list(self._locals):
            local.local_queue(name, False)
        signals.queue_resumed.send(self.app, queue=name)
        self._emit(events.encode(events.QUEUE_RESUMED, queue=name))
        self.app.wake_local(name)

    def is_queue_paused(self, name: str) -> bool:
        return self.app.storage.queue_is_paused(self._check_queue(name))

    def paused_queues(self) -> list[str]:
        return self.app.storage.paused_queues()

    # -- workers ----------------------------------------------------------------------------

    def pause_worker(self, name: str, mode: str = GRACEFUL) -> int:
        """Pause the workers with this name (or id), wherever they run; how many were told."""
        return self._set_worker(name, check_mode(mode))

    def resume_worker(self, name: str) -> int:
        """Resume the workers with this name (or id); how many were told."""
        return self._set_worker(name, None)

    def _set_worker(self, name: str, mode: str | None) -> int:
        count = self.app.storage.pause_worker(name, mode)
        for local in list(self._locals):
            local.local_worker(name, mode)
        if not count:
            raise WorkerNotFound(
                f"no registered worker is named {name!r} (`dbqueue status` lists the workers)"
            )
        return count

    # -- events -----------------------------------------------------------------------------

    def emit_custom_event(
        self, job_id: str | None, kind: str, data: dict[str, Any] | None = None
    ) -> None:
        """Publish a custom event before returning (from a job: ``job_id`` defaults to the
        running job's)."""
        if job_id is None:
            request = current_request()
            job_id = request.id if request is not None else None
        event = events.custom_event(job_id, kind, data)
        signals.custom_event.send(self.app, job_id=job_id, kind=kind, data=event[7])
        self.app.event_bus.publish_now(event, fresh=False)
