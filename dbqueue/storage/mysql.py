"""MySQL 8 and MariaDB 10.6+: SKIP LOCKED claims in two statements, multi-row bulk inserts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from dbqueue.storage.base import ClaimedJob, NewJob, ReapedJob, Storage

#: MySQL's duplicate-key error number.
_DUPLICATE_KEY = 1062


def _is_duplicate(error: IntegrityError) -> bool:
    args: tuple[Any, ...] = getattr(error.orig, "args", ())
    return bool(args) and args[0] == _DUPLICATE_KEY


class MySQLStorage(Storage):
    """Storage on MySQL or MariaDB through PyMySQL."""

    family = "mysql"

    def _insert_one(self, job: NewJob) -> bool:
        try:
            self.autocommit("insert_job", job.params())
        except IntegrityError as error:
            if _is_duplicate(error):
                return False
            raise
        return True

    def _insert_many(self, conn: Connection, jobs: Sequence[NewJob]) -> list[int]:
        """One multi-row INSERT; on a duplicate key, row by row to find which ones clash."""
        now = float(self.run(conn, "now").scalar())
        rows = []
        for job in jobs:
            params = job.params()
            params["status"] = "pending"
            params["run_at"] = job.run_at if job.run_at is not None else now + job.delay
            rows.append(params)
        try:
            with conn.begin_nested():
                self.run(conn, "insert_jobs", rows)
            return []
        except IntegrityError as error:
            if not _is_duplicate(error):
                raise
        conflicts = []
        for index, params in enumerate(rows):
            try:
                with conn.begin_nested():
                    self.run(conn, "insert_jobs", params)
            except IntegrityError as error:
                if not _is_duplicate(error):
                    raise
                conflicts.append(index)
        return conflicts

    def _claim(
        self, conn: Connection, worker: str, queues: list[str], limit: int
    ) -> list[ClaimedJob]:
        cursor = self.raw(conn, "claim_lock", {"queues": queues, "limit": limit})
        rows = cursor.fetchall()
        cursor.close()
        if not rows:
            return []
        self.raw(conn, "claim", {"worker": worker, "ids": [row[0] for row in rows]}).close()
        jobs = [ClaimedJob.from_tuple(row) for row in rows]
        for job in jobs:
            job.attempt += 1
        return jobs

    def _reap(self, conn: Connection, age: float, limit: int) -> list[ReapedJob]:
        ids = [row.id for row in self.run(conn, "reap_lock", {"age": age, "limit": limit})]
        if not ids:
            return []
        self.run(conn, "reap", {"ids": ids})
        rows = self.run(conn, "reaped", {"ids": ids})
        return [ReapedJob(r.id, r.task, r.status, r.attempt, r.fan_out_id) for r in rows]
