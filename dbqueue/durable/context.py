"""The running job as the durable API sees it: ``current_job()``, its call positions and its
checkpoints.

Each run of a job gets one :class:`JobContext`, created at its first durable call and kept on
the run's request. A job that has checkpoints (its row says so when it is claimed) reads them
all once, at that first call; a job that has none reads nothing. Positions are counted per
run from 0, so a replay meets its recorded calls in the order the first run made them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from dbqueue import signals
from dbqueue.control import raise_if_stopped
from dbqueue.exceptions import EncodeError, JobNotOwned
from dbqueue.request import Context, current_request
from dbqueue.serialization import decode, encode
from dbqueue.storage.checkpoints import StoredCheckpoint, load, save

if TYPE_CHECKING:
    from dbqueue.app import DBQueue
    from dbqueue.task import Task

#: The position index of named phases (calls count from 0).
PHASE_INDEX = -1
#: The call type of a fan-out's checkpoint (a colon: no task name generated from code has one).
FAN_OUT = "dbqueue:fan_out"


class JobContext:
    """The current job: its id, attempt and checkpoints (the seed's ``JobFromContext``).

    Outside a worker (``apply()``, ``task_always_eager``) the same API works, but nothing is
    stored: checkpoints live for the run only.
    """

    def __init__(self, request: Context, task: Task | None) -> None:
        self.request = request
        #: The job's task.
        self.task = task
        self.app: DBQueue | None = task.app if task is not None else None
        self._lock = threading.Lock()
        self._next = 0
        self._calls: dict[int, StoredCheckpoint] | None = None
        self._phases: dict[str, StoredCheckpoint] = {}
        self._flagged = bool(request.checkpointed)

    # -- what the job is ---------------------------------------------------------------------

    @property
    def id(self) -> str:
        return str(self.request.id)

    @property
    def task_name(self) -> str:
        return str(self.request.task)

    @property
    def attempt(self) -> int:
        """Runs started so far, this one included (a suspend and wake-up does not count)."""
        return int(self.request.attempt)

    @property
    def retries(self) -> int:
        return int(self.request.retries)

    @property
    def max_retries(self) -> int | None:
        return self.request.max_retries

    @property
    def queue(self) -> str | None:
        return self.request.queue

    @property
    def parent_id(self) -> str | None:
        return self.request.parent_id

    @property
    def root_id(self) -> str | None:
        return self.request.root_id

    @property
    def fan_out_id(self) -> str | None:
        """The fan-out this job is a child of, if any."""
        return self.request.fan_out_id

    @property
    def worker_id(self) -> str | None:
        return self.request.worker_id

    @property
    def durable(self) -> bool:
        """Whether checkpoints are stored: the job runs in a worker, not eagerly."""
        return self.app is not None and self.worker_id is not None and not self.request.is_eager

    @property
    def replaying(self) -> bool:
        """Whether recorded calls lie ahead of the next position."""
        return any(index >= self._next for index in self._loaded())

    @property
    def checkpoints(self) -> dict[int | str, Any]:
        """Recorded values: calls by position, phases by name (errors as exceptions)."""
        calls = self._loaded()
        found: dict[int | str, Any] = {i: self.value(cp) for i, cp in sorted(calls.items())}
        found.update({name: self.value(cp) for name, cp in self._phases.items()})
        return found

    # -- positions and checkpoints ------------------------------------------------------------

    def _loaded(self) -> dict[int, StoredCheckpoint]:
        """Read the job's checkpoints once per run, and only if its row says it has any."""
        calls = self._calls
        if calls is not None:
            return calls
        with self._lock:
            if self._calls is None:
                found: dict[int, StoredCheckpoint] = {}
                if self.durable and self.request.checkpointed:
                    assert self.app is not None
                    for cp in load(self.app.storage, self.id):
                        if cp.index == PHASE_INDEX:
                            self._phases[cp.type] = cp
                        else:
                            found[cp.index] = cp
                self._calls = found
            return self._calls

    def preload(self) -> None:
        """Read the checkpoints now (async code does it in a thread, before its first call)."""
        self._loaded()

    def take_position(self) -> int:
        """The next call position. Taken before any await, so concurrent calls get theirs in
        the order they start."""
        with self._lock:
            index = self._next
            self._next += 1
        return index

    def recorded(self, index: int) -> StoredCheckpoint | None:
        """What the first run recorded at ``index``, if anything."""
        return self._loaded().get(index)

    def next_position(self) -> tuple[int, StoredCheckpoint | None]:
        """Take the next call position; with what the first run recorded there, if anything.

        A step boundary: a job being stopped (aggressive pause, terminate) stops here.
        """
        raise_if_stopped()
        index = self.take_position()
        return index, self.recorded(index)

    def phase(self, name: str) -> StoredCheckpoint | None:
        self._loaded()
        return self._phases.get(name)

    def encode(self, value: Any, what: str) -> tuple[str, bytes]:
        """Serialize a checkpoint value with the result serializer, naming ``what`` on failure."""
        serializer = self.app.conf.result_serializer if self.app is not None else "json"
        try:
            return encode(value, serializer)
        except Exception as error:
            raise EncodeError(
                f"{what} returned a {type(value).__name__} that cannot be serialized with "
                f"{serializer} for its checkpoint: {error}"
            ) from error

    def value(self, cp: StoredCheckpoint) -> Any:
        """A checkpoint's value (an error checkpoint gives its rebuilt exception)."""
        if cp.error_type is not None:
            from dbqueue.result import _exception

            return _exception(cp.error_type, cp.error)
        if cp.result is None or cp.content_type is None:
            return None
        accept = self.app.result_accept if self.app is not None else {"application/json"}
        return decode(cp.result, cp.content_type, accept)

    def record(self, cp: StoredCheckpoint) -> None:
        """Store a checkpoint (one write), remember it for this run, announce it.

        Raises :class:`JobNotOwned` if this worker no longer holds the job, and
        :class:`~dbqueue.exceptions.JobStopped` if the job is being stopped.
        """
        raise_if_stopped()
        if self.durable:
            assert self.app is not None and self.worker_id is not None
            if not save(self.app.storage, self.worker_id, self.id, self._flagged, cp):
                raise JobNotOwned(
                    f"job {self.id} is no longer held by this worker (revoked, reaped or "
                    f"paused meanwhile): checkpoint {cp.type!r} not saved, the run stops"
                )
            self._flagged = True
        calls = self._loaded()
        with self._lock:
            if cp.index == PHASE_INDEX:
                self._phases[cp.type] = cp
            else:
                calls[cp.index] = cp
        if signals.checkpoint_saved.receivers:
            signals.checkpoint_saved.send(
                self.task, job_id=self.id, call_index=cp.index, call_type=cp.type
            )

    def __repr__(self) -> str:
        return f"<JobContext {self.task_name}[{self.id}] attempt={self.attempt}>"


def job_context() -> JobContext | None:
    """The running job's context, created at its first durable call; None outside a job."""
    request = current_request()
    if request is None or request.id is None:
        return None
    context = request.__dict__.get("_durable")
    if context is None:
        context = JobContext(request, request.__dict__.get("_task"))
        request._durable = context  # type: ignore[attr-defined]
    return context


def current_job() -> JobContext | None:
    """The job running in this thread or asyncio task (None outside a job)."""
    return job_context()


def awaitable_here() -> bool:
    """Whether durable calls here return awaitables: code of an ``async def`` task (or step)
    running on an event loop. A sync task is always called synchronously, even when it runs
    on a loop's thread (``apply()`` from async code) or in a worker thread of an async job."""
    request = current_request()
    task = request.__dict__.get("_task") if request is not None else None
    if task is None or not task.is_async:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
