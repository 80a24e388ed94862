"""``AsyncResult`` and ``EagerResult``: Celery's result handles, read from the job row.

An id with no row is reported as PENDING (Celery's answer) but ``exists()`` says False and
``get()`` raises :class:`TaskNotFound` at once, instead of Celery's wait-forever.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from dbqueue import states
from dbqueue.exceptions import TaskNotFound, TaskRevokedError, TimeoutError
from dbqueue.serialization import decode, exception_from_dict

if TYPE_CHECKING:
    from dbqueue.app import DBQueue


def _exception(error_type: str | None, error: str | None) -> BaseException:
    module, _, name = (error_type or "builtins.Exception").rpartition(".")
    return exception_from_dict(
        {"exc_type": name, "exc_module": module or "builtins", "exc_message": [error or ""]}
    )


class AsyncResult:
    """The state and result of a job, looked up by id."""

    def __init__(
        self,
        id: str,
        app: DBQueue | None = None,
        task_name: str | None = None,
        backend: Any = None,
        parent: Any = None,
    ) -> None:
        if app is None:
            from dbqueue.app import current_app

            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None

    task_id = property(lambda self: self.id)

    def _meta(self) -> dict[str, Any] | None:
        if self._cache is not None:
            return self._cache
        meta = self.app.storage.get_job(self.id)
        if meta is not None and meta["status"] in states.TERMINAL:
            self._cache = meta
        return meta

    def exists(self) -> bool:
        """Whether a job with this id is stored (never enqueued, or pruned, gives False)."""
        self._cache = None
        return self._meta() is not None

    @property
    def state(self) -> str:
        meta = self._meta()
        if meta is None:
            return states.PENDING
        return states.celery_state(meta["status"], meta["error_type"])

    status = state

    @property
    def result(self) -> Any:
        """The return value once successful, the exception once failed or retrying, else None."""
        meta = self._meta()
        if meta is None:
            return None
        return self._value(meta)

    info = result

    def _value(self, meta: dict[str, Any]) -> Any:
        status = meta["status"]
        if status == states.COMPLETED:
            if meta["result"] is None:
                return None
            accept = self.app.result_accept
            return decode(meta["result"], meta["result_type"], accept)
        if status in (states.FAILED, states.RETRYING, states.CANCELLED):
            if status == states.CANCELLED and meta["error_type"] is None:
                return TaskRevokedError(meta["error"] or "revoked")
            return _exception(meta["error_type"], meta["error"])
        return None

    @property
    def traceback(self) -> str | None:
        meta = self._meta()
        return meta["traceback"] if meta else None

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        **_: Any,
    ) -> Any:
        """Wait for the job to finish and return its result (or raise its exception).

        On PostgreSQL the wait wakes on the worker's notification; elsewhere it polls, starting
        fast and backing off to ``interval``.
        """
        from dbqueue.request import current_request

        current = current_request()
        if disable_sync_subtasks and current is not None and not current.called_directly:
            raise RuntimeError(
                "Never call result.get() within a task: it can deadlock the worker. "
                "Pass disable_sync_subtasks=False if you really must."
            )
        meta = self.app.result_waiter.wait(self.id, timeout, interval)
        if meta is None:
            raise TaskNotFound(
                f"no job with id {self.id!r}: it was never enqueued, or its result expired"
            )
        if meta.get("_timeout"):
            raise TimeoutError(
                f"The operation timed out: job {self.id} is still {meta['status']} after {timeout}s"
            )
        self._cache = meta
        return self._settle(meta, propagate)

    wait = get

    def _settle(self, meta: dict[str, Any], propagate: bool) -> Any:
        value = self._value(meta)
        state = states.celery_state(meta["status"], meta["error_type"])
        if propagate and state in states.PROPAGATE_STATES:
            raise value
        return value

    def maybe_throw(self, propagate: bool = True) -> None:
        meta = self._meta()
        if meta is not None:
            self._settle(meta, propagate)

    def revoke(
        self,
        terminate: bool = False,
        signal: Any = None,
        wait: bool = False,
        timeout: float | None = None,
        **_: Any,
    ) -> None:
        """Cancel the job unless it already finished (Celery's revoke)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)
        self._cache = None

    def forget(self) -> None:
        """Delete the finished job and its result."""
        self.app.storage.forget(self.id)
        self._cache = None

    # Celery's result_extended fields, always available here.
    def _field(self, name: str) -> Any:
        meta = self._meta()
        return meta[name] if meta else None

    name = property(lambda self: self._field("task") or self.task_name)
    queue = property(lambda self: self._field("queue"))
    worker = property(lambda self: self._field("worker"))
    retries = property(lambda self: max((self._field("attempt") or 1) - 1, 0))

    @property
    def date_done(self) -> float | None:
        return self._field("finished_at")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return other == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


class EagerResult(AsyncResult):
    """The result of a task run in-process (``apply()``, ``task_always_eager``)."""

    def __init__(
        self,
        id: str,
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
    ) -> None:
        self.id = id
        self._result = ret_value
        self._state = state
        self._traceback = traceback
        self._name = name
        self._cache = None

    task_id = property(lambda self: self.id)
    name = property(lambda self: self._name)
    state = property(lambda self: self._state)
    status = state
    result = property(lambda self: self._result)
    info = result
    traceback = property(lambda self: self._traceback)

    def _meta(self) -> dict[str, Any] | None:
        return None

    def exists(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self._state == states.SUCCESS

    def failed(self) -> bool:
        return self._state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        **_: Any,
    ) -> Any:
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._result
        return self._result

    wait = get

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED

    def forget(self) -> None:
        """Nothing is stored for an eager run."""

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"


class ResultWaiter:
    """Waits for jobs to finish: one LISTEN connection per process on PostgreSQL, else polls."""

    def __init__(self, app: DBQueue) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._events: dict[str, list[threading.Event]] = {}
        self._listener: Any = None
        self._started = False

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        from dbqueue.storage.postgresql import DONE_CHANNEL

        self._listener = self.app.storage.listener([DONE_CHANNEL], self._notified, self._wake_all)

    def _notified(self, channel: str, payload: str) -> None:
        if payload == "*":
            self._wake_all()
            return
        with self._lock:
            for job_id in payload.split(","):
                for event in self._events.get(job_id, ()):
                    event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._events.values():
                for event in events:
                    event.set()

    def wait(self, job_id: str, timeout: float | None, interval: float) -> dict[str, Any] | None:
        """The finished job's row; None if unknown; the row with ``_timeout`` set on timeout."""
        storage = self.app.storage
        listening = storage.family == "postgresql" and storage.notify
        if listening:
            self._ensure_listener()
        event = threading.Event()
        with self._lock:
            self._events.setdefault(job_id, []).append(event)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            pause = 0.005
            while True:
                event.clear()
                meta = storage.get_job(job_id)
                if meta is None or meta["status"] in states.TERMINAL:
                    return meta
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return {**meta, "_timeout": True}
                step = 1.0 if listening else min(pause, interval)
                event.wait(step if remaining is None else min(step, remaining))
                pause = min(pause * 2, interval)
        finally:
            with self._lock:
                waiting = self._events.get(job_id, [])
                if event in waiting:
                    waiting.remove(event)
                if not waiting:
                    self._events.pop(job_id, None)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
