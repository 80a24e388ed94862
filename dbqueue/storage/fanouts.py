"""Fan-out rows: spawning children with the parent's suspend, counting finished children in the
very transaction that finishes them, deciding once, waking the parent once, and cancelling the
children a decided fan-out no longer needs.

Lock order, in every transaction here: child job rows, then fan-out rows (by id), then the
parent's job row. Cancelling takes children with SKIP LOCKED, so it never waits on a child
another transaction is finishing (that child finishes, and is counted, by itself).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from dbqueue import signals

if TYPE_CHECKING:
    from dbqueue.storage.base import NewJob, Outcome, ReapedJob, Storage

logger = logging.getLogger("dbqueue.storage")

#: Outcome kinds that finish a child, and the count each one adds to.
_SLOT = {"complete": 0, "fail": 1, "expire": 2}
#: Statements in an ``IN :ids`` list at most, so 10,000 children never make one huge statement.
CHUNK = 1000
#: Fan-outs, parents or children handled per recovery statement.
SWEEP_LIMIT = 100
STRATEGIES = ("fail_fast", "collect_all", "threshold")


@dataclass(frozen=True)
class Decided:
    """A fan-out this transaction decided: ``status`` is completed, failed, timed_out, ..."""

    id: str
    parent_id: str
    status: str


def needed_for(strategy: str, total: int, threshold: float | None) -> int:
    """How many children must complete for the fan-out to succeed."""
    if strategy == "threshold":
        assert threshold is not None
        return max(0, math.ceil(round(total * threshold, 9)))
    if strategy == "fail_fast":
        return total
    return 0


def decide(
    strategy: str, needed: int, total: int, completed: int, failed: int, cancelled: int
) -> str | None:
    """A fan-out's decision from its counts, or None while it is still open.

    * fail_fast: failed at the first failed or cancelled child; completed once all completed.
    * collect_all: completed once every child finished, whatever their outcome.
    * threshold: completed as soon as ``needed`` completed; failed as soon as that can no
      longer happen (too few children left unfinished).
    """
    done = completed + failed + cancelled
    if strategy == "fail_fast":
        if failed or cancelled:
            return "failed"
        return "completed" if done >= total else None
    if strategy == "collect_all":
        return "completed" if done >= total else None
    if completed >= needed:
        return "completed"
    if completed + (total - done) < needed:
        return "failed"
    return None


def child_id(fan_out_id: str, index: int) -> str:
    """Child ``index``'s job id: the fan-out id's first 24 characters, then the index as 12
    decimal digits. For a uuid4 fan-out id that is again a UUID (74 random bits shared by the
    fan-out's children), and the children lie in one primary-key range, so they are found
    without an index of their own. Decimal digits sort the same way in every collation
    (bytewise, glibc, ICU with or without numeric ordering)."""
    return f"{fan_out_id[:24]}{index:012d}"


#: All UUIDs as text: where the children of a fan-out spawned before ids were derived (random
#: uuid4s, ``keyed_children`` false) are; scanning it is slow, and only they need it.
_ALL_UUIDS = ("00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff")


def child_range(fan_out_id: str, total: int, keyed: bool = True) -> dict[str, str]:
    """The primary-key range holding the fan-out's children, as query parameters."""
    if not keyed:
        return {"low": _ALL_UUIDS[0], "high": _ALL_UUIDS[1]}
    return {"low": child_id(fan_out_id, 0), "high": child_id(fan_out_id, max(total - 1, 0))}


def _chunks(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


# -- spawning and suspending ----------------------------------------------------------------------


def spawn(
    storage: Storage,
    worker: str,
    fan_out: dict[str, Any],
    checkpoint: dict[str, Any],
    children: Sequence[tuple[NewJob, int]],
) -> bool:
    """In one transaction: suspend the parent (running -> waiting, guarded on ownership),
    insert the fan-out row, its checkpoint and every child. False if the job is not ours."""
    parent = fan_out["parent_id"]

    def run(conn: Connection) -> bool:
        moved = storage.run(conn, "suspend", {"id": parent, "worker": worker}).rowcount
        if not moved:
            # A retried attempt whose first try committed finds its own fan-out.
            return storage.run(conn, "fan_out_exists", {"id": fan_out["id"]}).first() is not None
        storage.run(conn, "insert_fan_out", fan_out)
        storage.run(conn, "insert_checkpoint", checkpoint)
        _insert_children(storage, conn, fan_out["id"], children)
        return True

    return storage.write(run, f"fan-out of {len(children)} children")


def _insert_children(
    storage: Storage, conn: Connection, fan_out_id: str, children: Sequence[tuple[NewJob, int]]
) -> None:
    if storage.family == "postgresql":
        _copy_children(storage, conn, fan_out_id, children)
        return
    now = float(storage.run(conn, "now").scalar())
    rows = []
    for job, index in children:
        params = job.params()
        params.update(
            status="pending",
            run_at=job.run_at if job.run_at is not None else now + job.delay,
            fan_out_id=fan_out_id,
            fan_out_index=index,
        )
        rows.append(params)
    for chunk in _chunks(rows):
        storage.run(conn, "insert_children", chunk)


_COPY_COLUMNS = (
    "id",
    "task",
    "queue",
    "priority",
    "payload",
    "content_type",
    "max_retries",
    "expires_at",
    "parent_id",
    "root_id",
    "options",
    "fan_out_id",
    "fan_out_index",
)


def _copy_children(
    storage: Storage, conn: Connection, fan_out_id: str, children: Sequence[tuple[NewJob, int]]
) -> None:
    """PostgreSQL: COPY the children in, then wake idle workers of their queues.

    Children due now leave ``run_at`` to its default, the clock at each row: 10,000 equal
    claim-index keys would make every claim wade through the claimed ones.
    """
    timed = any(job.run_at is not None or job.delay for job, _ in children)
    now = float(storage.run(conn, "now").scalar()) if timed else 0.0
    columns = [*_COPY_COLUMNS, "run_at"] if timed else list(_COPY_COLUMNS)
    statement = f"COPY dbqueue_jobs ({', '.join(columns)}) FROM STDIN"
    raw: Any = conn.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        with cursor.copy(statement) as copy:
            for job, index in children:
                row: list[Any] = [
                    job.id,
                    job.task,
                    job.queue,
                    job.priority,
                    job.payload,
                    job.content_type,
                    job.max_retries,
                    job.expires_at,
                    job.parent_id,
                    job.root_id,
                    job.options,
                    fan_out_id,
                    index,
                ]
                if timed:
                    row.append(job.run_at if job.run_at is not None else now + job.delay)
                copy.write_row(row)
    finally:
        cursor.close()
    if storage.notify:
        for queue in sorted({job.queue for job, _ in children}):
            conn.exec_driver_sql("SELECT pg_notify(%s, %s)", ("dbqueue_jobs", queue))


def resuspend(storage: Storage, worker: str, parent_id: str, fan_out_id: str) -> bool | None:
    """A replaying parent met its fan-out still undecided: wait again (True).

    The fan-out row is locked first, so a transaction counting its last child either ran
    before (then the fan-out is decided: False) or runs after and wakes the parent. None if
    the job is no longer ours.
    """

    def run(conn: Connection) -> bool | None:
        row = storage.run(conn, "lock_fan_out", {"id": fan_out_id}).first()
        if row is None or row.status != "pending":
            return False
        moved = storage.run(conn, "suspend", {"id": parent_id, "worker": worker}).rowcount
        return True if moved else None

    return storage.write(run, "suspending for a fan-out")


def get(storage: Storage, fan_out_id: str) -> dict[str, Any] | None:
    row = storage.read(
        lambda c: storage.run(c, "get_fan_out", {"id": fan_out_id}).first(), "fan-out"
    )
    return dict(row._mapping) if row is not None else None


def children(
    storage: Storage, fan_out_id: str, total: int, keyed: bool = True
) -> list[tuple[Any, ...]]:
    """The fan-out's children (in no order), with their results or errors: tuples of
    (fan_out_index, id, task, status, result, result_type, error_type, error, traceback).
    Read by primary-key range; a child whose row was deleted is simply not there."""

    def run(conn: Connection) -> list[tuple[Any, ...]]:
        params = {"fan_out_id": fan_out_id, **child_range(fan_out_id, total, keyed)}
        cursor = storage.raw(conn, "fan_out_children", params)
        rows = cursor.fetchall()
        cursor.close()
        return [(row[0], *row[1:4], _bytes(row[4]), *row[5:]) for row in rows]

    return storage.read(run, "fan-out results")


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


# -- counting, deciding, waking (inside the finishing transaction) --------------------------------


def finish(
    storage: Storage,
    worker: str,
    outcomes: Sequence[Outcome],
    by_kind: dict[str, list[dict[str, Any]]],
) -> set[str]:
    """``Storage.finish`` when the batch holds fan-out children or suspended parents.

    Plain outcomes are written as usual. Children's terminal outcomes are counted from the rows
    this very transaction moved (PostgreSQL: the finishing statement returns them; elsewhere
    the rows still held are locked first), so each child is counted exactly once, even when a
    transaction is retried after a lost commit acknowledgement.
    """
    registry = storage.fan_out_children
    by_kind.pop("suspend", None)
    children_: list[tuple[str, dict[str, Any], str]] = []
    seen = _claims(outcomes, registry)
    if seen:
        for kind in _SLOT:
            plain: list[dict[str, Any]] = []
            for params in by_kind.get(kind, ()):
                claimed = seen.get(params["id"])
                if claimed is None or claimed.fan_out_id is None:
                    plain.append(params)
                else:
                    children_.append((kind, params, claimed.fan_out_id))
            if kind in by_kind:
                if plain:
                    by_kind[kind] = plain
                else:
                    del by_kind[kind]
    ids = [o.job_id for o in outcomes if o.kind != "suspend"]
    decided: list[Decided] = []

    def run(conn: Connection) -> set[str]:
        decided.clear()
        lost: set[str] = set()
        for kind, params in by_kind.items():
            lost |= storage._finish_kind(conn, kind, params)
        storage._after_finish(conn, ids)
        if children_:
            # Last: the fan-out rows stay locked only for the commit that follows.
            missed, found = _finish_children(storage, conn, worker, children_)
            lost |= missed
            decided.extend(found)
        return lost

    suspects = storage.write(run, "recording job outcomes") if ids else set()
    for job_id, claimed in seen.items():
        # Only this claim's entry: a retried child may have been claimed again meanwhile.
        if registry.get(job_id) is claimed:
            del registry[job_id]
    after_decided(storage, decided)
    if suspects:
        suspects = storage._really_lost(suspects, {o.job_id: o.kind for o in outcomes})
    return {o.job_id for o in outcomes} - suspects


def _claims(outcomes: Sequence[Outcome], registry: dict[str, Any]) -> dict[str, Any]:
    """This batch's jobs as claimed (their entries are later dropped only if still the same
    object). An outcome names its claim where the job was claimed; without one, the
    registry's entry stands in, except for a suspend: that job committed ``waiting`` in its
    own run, so by now it may have been woken and claimed again (that entry must stay)."""
    seen = {}
    for outcome in outcomes:
        claimed = outcome.claim
        if claimed is None and outcome.kind != "suspend":
            claimed = registry.get(outcome.job_id)
        if claimed is not None:
            seen[outcome.job_id] = claimed
    return seen


def _finish_children(
    storage: Storage,
    conn: Connection,
    worker: str,
    items: list[tuple[str, dict[str, Any], str]],
) -> tuple[set[str], list[Decided]]:
    if storage.family == "postgresql":
        completes = [params for kind, params, _ in items if kind == "complete"]
        if completes:
            lost, decided = _complete_children(storage, conn, worker, completes)
            rest = [item for item in items if item[0] != "complete"]
            if rest:
                more_lost, more_decided = _finish_children_locked(storage, conn, worker, rest)
                return lost | more_lost, decided + more_decided
            return lost, decided
    return _finish_children_locked(storage, conn, worker, items)


def _complete_children(
    storage: Storage, conn: Connection, worker: str, params: list[dict[str, Any]]
) -> tuple[set[str], list[Decided]]:
    """PostgreSQL: complete children and count them in one statement, as cheap as plain jobs."""
    arrays = {
        "ids": [p["id"] for p in params],
        "results": [p["result"] for p in params],
        "result_types": [p["result_type"] for p in params],
        "error_types": [p["error_type"] for p in params],
        "worker": worker,
    }
    cursor = storage.raw(conn, "complete_children", arrays)
    rows = cursor.fetchall()
    cursor.close()
    moved = {row[1] for row in rows if row[0] == "job"}
    decided = []
    for _, fan_out_id, parent_id, strategy, needed, total, done, failed, cancelled, status in (
        row for row in rows if row[0] == "fan_out"
    ):
        if status != "pending":
            continue
        verdict = decide(strategy, needed, total, done, failed, cancelled)
        if verdict is not None:
            storage.run(conn, "decide_fan_out", {"id": fan_out_id, "status": verdict})
            wake(storage, conn, parent_id)
            decided.append(Decided(fan_out_id, parent_id, verdict))
    return set(arrays["ids"]) - moved, decided


def _finish_children_locked(
    storage: Storage,
    conn: Connection,
    worker: str,
    items: list[tuple[str, dict[str, Any], str]],
) -> tuple[set[str], list[Decided]]:
    """Any dialect, any outcome: lock the rows still ours, finish them, count them."""
    ids = sorted({params["id"] for _, params, _ in items})
    owned: set[str] = set()
    for chunk in _chunks(ids):
        rows = storage.run(conn, "lock_owned", {"ids": chunk, "worker": worker})
        owned.update(row.id for row in rows)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    deltas: dict[str, list[int]] = {}
    for kind, params, fan_out_id in items:
        if params["id"] in owned:
            by_kind.setdefault(kind, []).append(params)
            deltas.setdefault(fan_out_id, [0, 0, 0])[_SLOT[kind]] += 1
    for kind, batch in by_kind.items():
        storage._finish_kind(conn, kind, batch)
    return set(ids) - owned, count(storage, conn, deltas)


def count(storage: Storage, conn: Connection, deltas: dict[str, list[int]]) -> list[Decided]:
    """Add (completed, failed, cancelled) deltas to fan-outs; decide and wake where due.

    One locked read and one write per fan-out per transaction, however many of its children
    finished in it.
    """
    if not deltas:
        return []
    rows = storage.run(conn, "lock_fan_outs", {"ids": sorted(deltas)}).all()
    updates = []
    decided = []
    for row in rows:
        add_c, add_f, add_x = deltas[row.id]
        completed, failed, cancelled = (
            row.completed + add_c,
            row.failed + add_f,
            row.cancelled + add_x,
        )
        status = row.status
        verdict = None
        if status == "pending":
            verdict = decide(row.strategy, row.needed, row.total, completed, failed, cancelled)
        if verdict is not None:
            status = verdict
            decided.append(Decided(row.id, row.parent_id, verdict))
        updates.append(
            {
                "id": row.id,
                "completed": completed,
                "failed": failed,
                "cancelled": cancelled,
                "status": status,
                "decided": 1 if verdict else 0,
            }
        )
    if updates:
        storage.run(conn, "count_fan_out", updates)
    for item in decided:
        wake(storage, conn, item.parent_id)
    return decided


def wake(storage: Storage, conn: Connection, parent_id: str) -> bool:
    """waiting -> pending for a parent (a no-op unless it is waiting): True if woken."""
    if storage.family == "postgresql" and storage.notify:
        return storage.run(conn, "wake_notify", {"id": parent_id}).first() is not None
    return bool(storage.run(conn, "wake", {"id": parent_id}).rowcount)


def count_reaped(storage: Storage, conn: Connection, reaped: Sequence[ReapedJob]) -> list[Decided]:
    """Children the reaper failed for good (their retries spent) count as failed."""
    deltas: dict[str, list[int]] = {}
    for job in reaped:
        if job.fan_out_id is not None and job.status == "failed":
            deltas.setdefault(job.fan_out_id, [0, 0, 0])[1] += 1
    return count(storage, conn, deltas)


def after_decided(storage: Storage, decided: Sequence[Decided]) -> None:
    """After the deciding commit: announce it, and cancel the children no longer needed."""
    if not decided:
        return
    if signals.job_woken.receivers:
        for item in decided:
            signals.job_woken.send(
                None, job_id=item.parent_id, fan_out_id=item.id, status=item.status
            )
    try:
        cancel_rest(storage, [item.id for item in decided])
    except Exception as error:
        logger.warning(
            "Cancelling the children of decided fan-outs failed (recovery retries): %s", error
        )


# -- cancelling ---------------------------------------------------------------------------------


def cancel_rest(storage: Storage, fan_out_ids: Sequence[str]) -> int:
    """Cancel every unfinished child of these decided fan-outs, then, level by level, the
    children of the waiting children cancelled with them. Returns how many were cancelled."""
    total = 0
    level = list(fan_out_ids)
    while level:
        cancelled, parents = storage.write(
            functools.partial(_cancel_children, storage, fan_out_ids=level),
            "cancelling a fan-out's children",
        )
        total += cancelled
        level = orphan(storage, parents) if parents else []
    return total


def _cancel_children(
    storage: Storage, conn: Connection, *, fan_out_ids: Sequence[str]
) -> tuple[int, list[str]]:
    totals = []
    for chunk in _chunks(sorted(set(fan_out_ids))):
        totals.extend(storage.run(conn, "fan_out_totals", {"ids": chunk}))
    rows = []
    for fan_out_id, total, keyed in sorted(totals):
        params = {"fan_out_id": fan_out_id, **child_range(fan_out_id, total, bool(keyed))}
        rows.extend(storage.run(conn, "lock_live_children", params))
    if not rows:
        return 0, []
    ids = [row.id for row in rows]
    reason = "cancelled: its fan-out no longer needs it"
    for chunk in _chunks(ids):
        storage.run(conn, "cancel_jobs", {"ids": chunk, "reason": reason})
    if any(row.status == "running" for row in rows):
        storage._announce(conn, "revoke")  # their workers stop them (control = terminate)
    deltas: dict[str, list[int]] = {}
    for row in rows:
        deltas.setdefault(row.fan_out_id, [0, 0, 0])[2] += 1
    count(storage, conn, deltas)
    return len(ids), [row.id for row in rows if row.status == "waiting"]


def orphan(storage: Storage, parent_ids: Sequence[str]) -> list[str]:
    """Undecided fan-outs of cancelled or failed parents (those that cancel with their
    parent) become ``cancelled``; returns their ids, whose children are to be cancelled."""

    def run(conn: Connection) -> list[str]:
        found: list[str] = []
        for chunk in _chunks(sorted(set(parent_ids))):
            rows = storage.run(conn, "lock_orphaned_fan_outs", {"parent_ids": chunk})
            found.extend(row.id for row in rows)
        for chunk in _chunks(found):
            storage.run(conn, "cancel_fan_outs", {"ids": chunk})
        return found

    return storage.write(run, "cancelling the fan-outs of a cancelled parent")


def revoke(storage: Storage, ids: list[str], terminate: bool = False) -> int:
    """live -> cancelled for jobs; revoked children are counted into their fan-out in the
    same transaction, and revoked waiting parents take their children with them. With
    ``terminate``, the workers running them are told to stop them."""
    decided: list[Decided] = []
    params = {"ids": ids, "control": "terminate" if terminate else None}

    def run(conn: Connection) -> tuple[int, list[str]]:
        decided.clear()
        special = []
        for chunk in _chunks(sorted(set(ids))):
            special.extend(storage.run(conn, "lock_revoked", {"ids": chunk}))
        revoked = int(storage.run(conn, "revoke", params).rowcount)
        if terminate and revoked:
            storage._announce(conn, "revoke")
        deltas: dict[str, list[int]] = {}
        for row in special:
            if row.fan_out_id is not None:
                deltas.setdefault(row.fan_out_id, [0, 0, 0])[2] += 1
        decided.extend(count(storage, conn, deltas))
        return revoked, [row.id for row in special if row.status == "waiting"]

    revoked, parents = storage.write(run, "revoke")
    after_decided(storage, decided)
    if parents:
        try:
            cancel_rest(storage, orphan(storage, parents))
        except Exception as error:
            logger.warning(
                "Cancelling a revoked parent's children failed (recovery retries): %s", error
            )
    return revoked


# -- maintenance ----------------------------------------------------------------------------------


def expire_timeouts(storage: Storage, limit: int = SWEEP_LIMIT) -> int:
    """pending -> timed_out for fan-outs past their deadline; wake their parents, cancel
    their children. Returns how many timed out."""

    def run(conn: Connection) -> list[Decided]:
        rows = list(storage.run(conn, "lock_timed_out", {"limit": limit}))
        if not rows:
            return []
        storage.run(conn, "time_out_fan_outs", {"ids": [row.id for row in rows]})
        for row in rows:
            wake(storage, conn, row.parent_id)
        return [Decided(row.id, row.parent_id, "timed_out") for row in rows]

    decided = storage.write(run, "fan-out timeouts")
    after_decided(storage, decided)
    return len(decided)


def recover(storage: Storage, limit: int = SWEEP_LIMIT) -> dict[str, int]:
    """The backstop for whatever a crash or race left behind, so no workflow wedges:

    * waiting parents with no undecided fan-out are woken;
    * decided fan-outs with unfinished children have them cancelled;
    * undecided fan-outs of failed or cancelled parents (that cancel with them) are cancelled.
    """
    stranded = storage.read(
        lambda c: [r.id for r in storage.run(c, "stranded_parents", {"limit": limit})],
        "stranded parents",
    )
    woken = 0
    if stranded:
        woken = storage.write(
            lambda c: sum(
                storage.run(c, "wake_stranded", {"id": parent}).rowcount for parent in stranded
            ),
            "waking stranded parents",
        )
        if woken:
            logger.warning("Recovery woke %d parent job(s) whose fan-out was decided", woken)
    unsettled = storage.read(
        lambda c: [r.id for r in storage.run(c, "unsettled_fan_outs", {"limit": limit})],
        "unsettled fan-outs",
    )
    cancelled = cancel_rest(storage, unsettled) if unsettled else 0
    parents = storage.read(
        lambda c: [r.parent_id for r in storage.run(c, "orphaned_fan_outs", {"limit": limit})],
        "orphaned fan-outs",
    )
    if parents:
        cancelled += cancel_rest(storage, orphan(storage, parents))
    return {"woken": woken, "cancelled": cancelled}
