"""Turning Celery's time arguments (eta, expires) into epoch seconds, in one place."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from zoneinfo import ZoneInfo


def to_epoch(value: Any, timezone: str | None) -> float:
    """Epoch seconds for a datetime, an ISO 8601 string, a timedelta or seconds from now.

    A naive datetime is read in ``timezone`` (the app's ``timezone`` setting), else in UTC.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return time.time() + float(value)
    if isinstance(value, dt.timedelta):
        return time.time() + value.total_seconds()
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime, ISO 8601 string or seconds, got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(timezone) if timezone else dt.UTC)
    return value.timestamp()


def iso(epoch: float) -> str:
    """ISO 8601 in UTC, the form Celery's eta/expires headers use."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()
