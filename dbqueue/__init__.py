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
from dbqueue.exceptions import (
    DBQueueError,
    Ignore,
    ImproperlyConfigured,
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
    "Context",
    "DBQueue",
    "DBQueueError",
    "EagerResult",
    "Ignore",
    "ImproperlyConfigured",
    "JobStateError",
    "JobStopped",
    "MaxRetriesExceededError",
    "NoRetry",
    "NotRegistered",
    "Reject",
    "Retry",
    "RetryAfter",
    "RetryConfig",
    "ScheduleError",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskNotFound",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
    "WorkerNotFound",
    "__version__",
    "cron",
    "crontab",
    "current_app",
    "daily",
    "every",
    "schedule",
    "shared_task",
    "signals",
    "states",
    "weekly",
]
