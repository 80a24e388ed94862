"""Retrying database calls through outages, lock timeouts and serialization failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc

from dbqueue.backoff import RetryConfig
from dbqueue.exceptions import StorageUnavailable

logger = logging.getLogger("dbqueue.storage")

T = TypeVar("T")

#: SQLSTATEs (PostgreSQL) and error numbers (MySQL) worth another try: serialization failure,
#: deadlock, lock timeout, admin shutdown, cannot connect now.
_RETRYABLE_PG = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08003", "08006"}
_RETRYABLE_MYSQL = {1205, 1213, 2003, 2006, 2013, 1053, 1927}


def is_transient(error: BaseException) -> bool:
    """Whether a database error is worth retrying (connection loss, lock contention)."""
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        orig = error.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if sqlstate in _RETRYABLE_PG:
            return True
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int) and args[0] in _RETRYABLE_MYSQL:
            return True
        if isinstance(error, exc.OperationalError | exc.InterfaceError):
            message = str(orig).lower()
            return not ("no such table" in message or "syntax" in message)
    return isinstance(error, exc.DisconnectionError | exc.TimeoutError)


def call_with_retry(
    fn: Callable[[], T],
    config: RetryConfig,
    what: str,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run ``fn``; on a transient error wait with backoff and try again, up to the config's limit.

    The final failure is raised as :class:`StorageUnavailable` naming the operation.
    """
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt >= config.max_attempts:
                raise StorageUnavailable(
                    f"{what} failed after {attempt} attempt(s): {_short(error)}"
                ) from error
            delay = config.delay(attempt)
            logger.warning(
                "%s failed (attempt %d/%d), retrying in %.2fs: %s",
                what,
                attempt,
                config.max_attempts,
                delay,
                _short(error),
            )
            if on_retry is not None:
                on_retry(error)
            time.sleep(delay)
            attempt += 1


def _short(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip().splitlines()
    return text[0] if text else type(error).__name__
