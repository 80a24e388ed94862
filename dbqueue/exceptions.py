"""Every exception dbqueue raises or understands, in one place.

Names follow ``celery.exceptions`` so that ``except Retry`` and friends keep working after a
migration; ``NoRetry`` and ``RetryAfter`` come from the Go library dbqueue descends from.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kombu.exceptions import EncodeError as _KombuEncodeError


class DBQueueError(Exception):
    """Base class of dbqueue's own errors."""


class ImproperlyConfigured(DBQueueError):
    """A setting is missing or has a value dbqueue cannot use."""


class BrokerURLError(ImproperlyConfigured):
    """The broker URL does not name a database dbqueue can use."""


class SchemaError(DBQueueError):
    """The database schema is missing or older than this version of dbqueue needs."""


class StorageUnavailable(DBQueueError):
    """The database could not be reached after every storage retry."""


class ScheduleError(DBQueueError, ValueError):
    """A schedule is unusable: a broken cron expression, a bad timezone, an unknown task."""


class NotRegistered(DBQueueError, KeyError):
    """A task name is not in the app's registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class TaskNotFound(DBQueueError, LookupError):
    """No job with this id exists: it was never enqueued, or its result expired and was pruned."""


class TimeoutError(DBQueueError):
    """``AsyncResult.get()`` ran out of time before the job finished."""


class JobStateError(DBQueueError, ValueError):
    """A job cannot make the requested move from its current status (pause a finished job...)."""


class WorkerNotFound(DBQueueError, LookupError):
    """No registered worker has the given name or id."""


class EncodeError(_KombuEncodeError, DBQueueError):
    """Arguments or a result could not be serialized; the message names the culprit."""


class DecodeError(DBQueueError):
    """A stored payload could not be deserialized."""


class TaskPredicate(Exception):
    """Base class for exceptions that change how the worker records a job, not failures."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry()``: the job is stored as retrying and runs again later."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | dt.datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(message, exc, when)

    def humanize(self) -> str:
        if isinstance(self.when, int | float):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """The task asks the worker to record nothing more about this run (state IGNORED)."""


class Reject(TaskPredicate):
    """The task refuses the job: requeue it (``requeue=True``) or dead-letter it (REJECTED)."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class NoRetry(TaskPredicate):
    """Fail the job now, without retrying, even when ``autoretry_for`` matches ``exc``."""

    def __init__(self, exc: BaseException | str) -> None:
        self.exc = exc if isinstance(exc, BaseException) else RuntimeError(exc)
        super().__init__(self.exc)

    def __str__(self) -> str:
        return f"NoRetry({self.exc!r})"


class RetryAfter(TaskPredicate):
    """Retry the job after ``seconds`` (counts against ``max_retries``), e.g. when rate limited."""

    def __init__(self, seconds: float, exc: BaseException | str | None = None) -> None:
        if seconds < 0:
            raise ValueError(f"RetryAfter seconds must be >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        self.exc = exc if isinstance(exc, BaseException) or exc is None else RuntimeError(exc)
        super().__init__(seconds, self.exc)

    def __str__(self) -> str:
        return f"RetryAfter({self.seconds}s, {self.exc!r})"


class MaxRetriesExceededError(DBQueueError):
    """``Task.retry()`` was called with no retries left and no ``exc`` to re-raise."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        self.task_args = task_args
        self.task_kwargs = task_kwargs
        super().__init__(*args)


class SoftTimeLimitExceeded(Exception):
    """Raised inside a running task when its soft time limit expires, so it can clean up."""


class TimeLimitExceeded(Exception):
    """The task's hard time limit expired and it was stopped."""


class WorkerLostError(Exception):
    """The worker running the job died (kill -9, OOM, segfault) before the job finished."""


class Terminated(Exception):
    """The job was stopped on request (revoke with terminate=True)."""


class JobStopped(BaseException):
    """Raised inside a running job that is being stopped: an aggressive pause (of the job or of
    its worker), ``worker.cancel_job()`` or ``revoke(terminate=True)``.

    Like asyncio's CancelledError it is a BaseException, so ``except Exception`` in a task does
    not swallow it; ``finally`` blocks and ``except JobStopped`` can clean up. The job is then
    paused, returned to the queue or cancelled without using up an attempt.
    """


class TaskRevokedError(Exception):
    """The job was revoked (cancelled) before it finished."""


class CheckpointMismatch(DBQueueError):
    """A replaying job met a different call at a recorded position.

    The workflow's code changed under a live job: replaying it would return one step's
    result to another. The message names both; the job fails rather than guess.
    """


class JobNotOwned(DBQueueError):
    """This worker no longer holds the running job (revoked, reaped or paused meanwhile).

    Raised at a checkpoint or fan-out, so the run stops early; its outcome is discarded.
    """


class FanOutFailed(DBQueueError):
    """A fan-out's strategy decided it failed (or it timed out, or was cancelled).

    ``results`` holds every child's outcome in input order (None once rebuilt from storage).
    """

    def __init__(self, message: str = "fan-out failed", results: Any = None) -> None:
        super().__init__(message)
        self.results = results


class SubJobCancelled(TaskRevokedError):
    """A fan-out child was cancelled (revoked, or no longer needed once its fan-out decided)."""


class SubJobIncomplete(DBQueueError):
    """A fan-out child had not finished when its fan-out was decided."""


class Suspended(BaseException):
    """Internal: the running job suspended itself for its fan-out's children.

    Not an error: the worker frees the job's slot; the job replays once it is woken. It is a
    BaseException so that ``except Exception`` in a task does not swallow it.
    """

    def __init__(self, fan_out_id: str) -> None:
        super().__init__(fan_out_id)
        self.fan_out_id = fan_out_id


class WorkerShutdown(SystemExit):
    """Raised to ask the worker to shut down warmly."""


class WorkerTerminate(SystemExit):
    """Raised to ask the worker to shut down at once."""
