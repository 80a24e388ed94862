"""The fan-out pass of the worker's maintenance thread: enforce timeouts, and recover what a
crash or race left behind (a decided fan-out whose parent was not woken, children a decided
fan-out no longer needs, fan-outs of a cancelled parent). Every worker runs it; row locks
(the single writer on SQLite) keep two workers from doing the same work. Miscounted fan-outs
are recounted less often (``storage/recount.py``, once a minute)."""

from __future__ import annotations

import logging

from dbqueue.storage import Storage, fanouts

logger = logging.getLogger("dbqueue.durable")


def sweep(storage: Storage) -> None:
    """One pass: time out overdue fan-outs, then the recovery backstop."""
    timed_out = fanouts.expire_timeouts(storage)
    if timed_out:
        logger.warning("%d fan-out(s) timed out; their parents were woken", timed_out)
    recovered = fanouts.recover(storage)
    if recovered["cancelled"]:
        logger.info(
            "Cancelled %d child job(s) that decided fan-outs no longer need",
            recovered["cancelled"],
        )
