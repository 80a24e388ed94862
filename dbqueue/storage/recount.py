"""The last backstop of fan-out recovery: recount a fan-out from its children's rows.

Children are counted into their fan-out in the very transaction that finishes them, so the
counts are exact by construction. This pass is for when they are not anyway (a bug, or a
live child's row deleted with ``AsyncResult.forget()``): an undecided fan-out none of whose
children is unfinished can never be decided by a child again, and its parent would wait
forever. Such a fan-out is recounted from the rows, decided, and its parent woken, once.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from dbqueue.storage.fanouts import Decided, after_decided, child_range, decide, wake

if TYPE_CHECKING:
    from dbqueue.storage.base import Storage

logger = logging.getLogger("dbqueue.storage")

#: Fan-outs looked at per pass (each costs a scan of its children's key range, up to the
#: first unfinished one).
RECOUNT_LIMIT = 20
#: Seconds a fan-out must have existed before it is looked at: younger ones are busy.
RECOUNT_AGE = 60.0
_LIVE = ("pending", "running", "retrying", "waiting", "paused")


def recount(
    storage: Storage, after: str = "", *, limit: int = RECOUNT_LIMIT, age: float = RECOUNT_AGE
) -> tuple[int, str]:
    """Look at up to ``limit`` undecided fan-outs older than ``age`` seconds with ids after
    ``after`` (going round to the start after the last); decide those whose children have
    all finished. Returns how many were decided and the cursor for the next pass."""
    candidates = _candidates(storage, after, limit, age)
    if len(candidates) < limit and after:  # the end was reached: go round from the start
        seen = {row.id for row in candidates}
        again = _candidates(storage, "", limit - len(candidates), age)
        candidates += [row for row in again if row.id not in seen]
    decided: list[Decided] = []
    for row in candidates:
        keyed = bool(row.keyed_children)
        span = {"fan_out_id": row.id, **child_range(row.id, int(row.total), keyed)}
        try:
            if storage.read(functools.partial(_live_child, storage, span=span), "a live child"):
                continue
            found = storage.write(
                functools.partial(_recount_one, storage, span=span), "recounting a fan-out"
            )
        except Exception as error:  # one fan-out that cannot be recounted stops no other
            logger.warning("Recounting fan-out %s failed (next round retries): %s", row.id, error)
            continue
        if found is not None:
            decided.append(found)
    after_decided(storage, decided)
    cursor = candidates[-1].id if len(candidates) == limit else ""
    return len(decided), cursor


def _candidates(storage: Storage, after: str, limit: int, age: float) -> list[Any]:
    params = {"after": after, "age": age, "limit": limit}
    return storage.read(
        lambda c: list(storage.run(c, "recount_candidates", params)), "fan-outs to recount"
    )


def _live_child(storage: Storage, conn: Connection, *, span: dict[str, Any]) -> bool:
    return storage.run(conn, "live_child", span).first() is not None


def _recount_one(storage: Storage, conn: Connection, *, span: dict[str, Any]) -> Decided | None:
    """Under the fan-out's row lock (so no child is being counted meanwhile), count its
    children by status; if none is unfinished, store those counts and the decision."""
    row = storage.run(conn, "lock_fan_outs", {"ids": [span["fan_out_id"]]}).first()
    if row is None or row.status != "pending":
        return None
    counts = {status: int(n) for status, n in storage.run(conn, "child_counts", span)}
    if any(counts.get(status) for status in _LIVE):
        return None  # a child finishing right now waits for this lock, then counts itself
    completed, failed = counts.get("completed", 0), counts.get("failed", 0)
    gone = max(0, int(row.total) - sum(counts.values()))
    cancelled = counts.get("cancelled", 0) + gone
    verdict = decide(row.strategy, row.needed, row.total, completed, failed, cancelled)
    if verdict is None:
        return None
    logger.warning(
        "Fan-out %s was undecided with every child finished (stored %d/%d/%d completed/"
        "failed/cancelled, found %d/%d/%d%s): recounted and decided %s",
        row.id,
        row.completed,
        row.failed,
        row.cancelled,
        completed,
        failed,
        cancelled,
        f", {gone} row(s) gone" if gone else "",
        verdict,
    )
    storage.run(
        conn,
        "count_fan_out",
        {
            "id": row.id,
            "completed": completed,
            "failed": failed,
            "cancelled": cancelled,
            "status": verdict,
            "decided": 1,
        },
    )
    wake(storage, conn, row.parent_id)
    return Decided(row.id, row.parent_id, verdict)
