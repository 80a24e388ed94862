"""dbqueue: a Celery-compatible job queue whose broker is your SQL database.

from dbqueue import DBQueue

app = DBQueue("proj", broker="postgresql+psycopg://localhost/proj")

@app.task
def add(x, y):
    return x + y

add.delay(2, 3).get(timeout=10)
"""

from __future__ import annotations

from dbqueue import signals, states
from dbqueue.app import DBQueue, current_app, shared_task
from dbqueue.backoff import RetryConfig
from dbqueue.durable import (
    CollectAll,
    FailFast,
    JobContext,
    Result,
    Results,
    Sub,
    Threshold,
    all_succeeded,
    call,
    current_job,
    fan_out,
    has_checkpoint,
    load_checkpoint,
    partition,
    phase,
    save_checkpoint,
    sub,
    success_count,
    values,
)
from dbqueue.exceptions import (
    CheckpointMismatch,
    DBQueueError,
    FanOutFailed,
    Ignore,
    ImproperlyConfigured,
    JobNotOwned,
    JobStateError,
    JobStopped,
    MaxRetriesExceededError,
    NoRetry,
    NotRegistered,
    Reject,
    Retry,
    RetryAfter,
    ScheduleError,
    SoftTimeLimitExceeded,
    SubJobCancelled,
    SubJobIncomplete,
    TaskNotFound,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
    WorkerLostError,
    WorkerNotFound,
)
from dbqueue.request import Context
from dbqueue.result import AsyncResult, EagerResult
from dbqueue.schedules import cron, crontab, daily, every, schedule, weekly
from dbqueue.task import Task

__version__ = "0.1.0"

#: Celery's class name, so ``from dbqueue import Celery`` reads like the original.
Celery = DBQueue

__all__ = [
    "AsyncResult",
    "Celery",
    "CheckpointMismatch",
    "CollectAll",
    "Context",
    "DBQueue",
    "DBQueueError",
    "EagerResult",
    "FailFast",
    "FanOutFailed",
    "Ignore",
    "ImproperlyConfigured",
    "JobContext",
    "JobNotOwned",
    "JobStateError",
    "JobStopped",
    "MaxRetriesExceededError",
    "NoRetry",
    "NotRegistered",
    "Reject",
    "Result",
    "Results",
    "Retry",
    "RetryAfter",
    "RetryConfig",
    "ScheduleError",
    "SoftTimeLimitExceeded",
    "Sub",
    "SubJobCancelled",
    "SubJobIncomplete",
    "Task",
    "TaskNotFound",
    "TaskRevokedError",
    "Threshold",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
    "WorkerNotFound",
    "__version__",
    "all_succeeded",
    "call",
    "cron",
    "crontab",
    "current_app",
    "current_job",
    "daily",
    "every",
    "fan_out",
    "has_checkpoint",
    "load_checkpoint",
    "partition",
    "phase",
    "save_checkpoint",
    "schedule",
    "shared_task",
    "signals",
    "states",
    "sub",
    "success_count",
    "values",
    "weekly",
]
