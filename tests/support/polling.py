"""Waiting for a condition by polling it against a deadline (tests never sleep a fixed time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition not met",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Exceptions listed in ``ignore`` count as "not yet" (e.g. a database that is restarting);
    any other exception propagates. After ``timeout`` seconds an AssertionError carries
    ``message`` and the last value (or exception) seen.
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        last: object
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"{message} (timed out after {timeout:g}s, {attempts} attempts; "
                f"last value: {last!r})"
            )
        time.sleep(min(interval, remaining))
