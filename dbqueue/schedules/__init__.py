"""Periodic jobs: when they fire (``every``, ``daily``, ``weekly``, ``cron``, and Celery's
``crontab`` and ``schedule``) and how an app declares them (``app.schedule``,
``beat_schedule``, ``add_periodic_task``).

The scheduler that fires them lives in :mod:`dbqueue.worker.beat`.
"""

from __future__ import annotations

from dbqueue.exceptions import ScheduleError
from dbqueue.schedules.base import (
    Cron,
    Every,
    Schedule,
    cron,
    daily,
    every,
    from_spec,
    schedstate,
    weekly,
)
from dbqueue.schedules.crontab import (
    ParseException,
    crontab,
    crontab_parser,
    maybe_schedule,
    schedule,
)

__all__ = [
    "Cron",
    "Every",
    "ParseException",
    "Schedule",
    "ScheduleError",
    "cron",
    "crontab",
    "crontab_parser",
    "daily",
    "every",
    "from_spec",
    "maybe_schedule",
    "schedstate",
    "schedule",
    "weekly",
]
