"""Checkpoint rows: a job's recorded calls and phases, read once per run and written one at a
time, each write guarded on the worker still holding the job.

A write is one round trip on PostgreSQL (one statement, on an autocommit connection, that also
flags the job row the first time). On MySQL the job's first checkpoint flags the row first
(a second statement, once per job); on SQLite both happen in one local transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbqueue.storage.retry import call_with_retry

if TYPE_CHECKING:
    from dbqueue.storage.base import Storage


@dataclass(frozen=True)
class StoredCheckpoint:
    """One checkpoint row: a call (index >= 0) or a phase (index -1, type = phase name)."""

    index: int
    type: str
    result: bytes | None
    content_type: str | None
    error_type: str | None = None
    error: str | None = None


def load(storage: Storage, job_id: str) -> list[StoredCheckpoint]:
    """Every checkpoint of a job, in call order."""
    rows = storage.read(
        lambda c: list(storage.run(c, "load_checkpoints", {"job_id": job_id})), "checkpoint load"
    )
    return [
        StoredCheckpoint(
            int(r.call_index),
            r.call_type,
            bytes(r.result) if r.result is not None else None,
            r.content_type,
            r.error_type,
            r.error,
        )
        for r in rows
    ]


def save(
    storage: Storage, worker: str, job_id: str, flagged: bool, checkpoint: StoredCheckpoint
) -> bool:
    """Write a checkpoint while ``worker`` holds the running job; False if it no longer does.

    ``flagged`` says the job row already records that it has checkpoints. Retried on
    transient errors: the write is an upsert, so a retry after a lost acknowledgement is safe.
    """
    params: dict[str, Any] = {
        "job_id": job_id,
        "worker": worker,
        "call_index": checkpoint.index,
        "call_type": checkpoint.type,
        "result": checkpoint.result,
        "content_type": checkpoint.content_type,
        "error_type": checkpoint.error_type,
        "error": checkpoint.error,
    }
    what = f"checkpoint {checkpoint.type!r} of job {job_id}"
    if storage.family == "postgresql":
        return call_with_retry(
            lambda: storage.autocommit("save_checkpoint", params) is not None, storage.retry, what
        )
    if storage.family == "mysql":

        def write() -> bool:
            if not flagged and not storage.autocommit("flag_checkpointed", params):
                return False
            return bool(storage.autocommit("save_checkpoint", params))

        return call_with_retry(write, storage.retry, what)

    def run(conn: Any) -> bool:
        if not flagged and not storage.run(conn, "flag_checkpointed", params).rowcount:
            return False
        return bool(storage.run(conn, "save_checkpoint", params).rowcount)

    return storage.write(run, what)
