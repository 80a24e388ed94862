"""PostgreSQL: SKIP LOCKED claims, COPY for bulk enqueue, LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection

from dbqueue.storage.base import NewJob, Storage

logger = logging.getLogger("dbqueue.storage")

#: Channel a producer notifies (payload: queue name) so idle workers claim at once.
JOBS_CHANNEL = "dbqueue_jobs"
#: Channel a worker notifies (payload: finished job ids) so AsyncResult.get() wakes at once.
DONE_CHANNEL = "dbqueue_done"
#: NOTIFY payloads must stay under 8000 bytes; longer id lists degrade to "check everything".
_MAX_PAYLOAD = 7900
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
)


class PostgresStorage(Storage):
    """Storage on PostgreSQL through psycopg 3."""

    family = "postgresql"

    def _insert_one(self, job: NewJob) -> bool:
        """One autocommit round trip that inserts and, unless disabled, notifies workers."""
        query = "insert_job_notify" if self.notify else "insert_job"
        return self.autocommit(query, job.params()) is not None

    def _insert_many(self, conn: Connection, jobs: Sequence[NewJob]) -> list[int]:
        """COPY the jobs without a unique key; insert the others one by one to detect conflicts."""
        plain = [job for job in jobs if job.unique_key is None]
        conflicts = [
            index
            for index, job in enumerate(jobs)
            if job.unique_key is not None
            and self.run(conn, "insert_job", job.params()).first() is None
        ]
        if plain:
            self._copy(conn, plain)
        if self.notify:
            for queue in sorted({job.queue for job in jobs}):
                conn.exec_driver_sql("SELECT pg_notify(%s, %s)", (JOBS_CHANNEL, queue))
        return conflicts

    def _copy(self, conn: Connection, jobs: Sequence[NewJob]) -> None:
        columns = list(_COPY_COLUMNS)
        timed = any(job.run_at is not None or job.delay for job in jobs)
        now = float(self.run(conn, "now").scalar()) if timed else 0.0
        if timed:
            columns.append("run_at")
        statement = f"COPY dbqueue_jobs ({', '.join(columns)}) FROM STDIN"
        raw: Any = conn.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            with cursor.copy(statement) as copy:
                for job in jobs:
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
                    ]
                    if timed:
                        row.append(job.run_at if job.run_at is not None else now + job.delay)
                    copy.write_row(row)
        finally:
            cursor.close()

    def _finish_kind(self, conn: Connection, kind: str, params: list[dict[str, Any]]) -> set[str]:
        """Completions that store a result go in one UPDATE ... FROM unnest(...) statement."""
        if kind != "complete" or len(params) < 2:
            return super()._finish_kind(conn, kind, params)
        full = [p for p in params if p["result"] is not None or p["error_type"] is not None]
        if len(full) != len(params):
            return super()._finish_kind(conn, kind, params)
        arrays = {
            "ids": [p["id"] for p in full],
            "results": [p["result"] for p in full],
            "result_types": [p["result_type"] for p in full],
            "error_types": [p["error_type"] for p in full],
            "worker": full[0]["worker"],
        }
        return self._returning(conn, "complete_many", arrays)

    def _complete_bare(self, conn: Connection, worker: str, ids: list[str]) -> set[str]:
        """The ids travel as one array and the rows updated come back: no suspects to check."""
        return self._returning(conn, "complete_bare_many", {"ids": ids, "worker": worker})

    def _returning(self, conn: Connection, name: str, params: dict[str, Any]) -> set[str]:
        """Run a batch statement returning the ids it updated; returns the ids it missed."""
        cursor = self.raw(conn, name, params)
        owned = {row[0] for row in cursor.fetchall()}
        cursor.close()
        return set(params["ids"]) - owned

    def _after_finish(self, conn: Connection, ids: list[str]) -> None:
        payload = ",".join(ids)
        if len(payload) > _MAX_PAYLOAD:
            payload = "*"
        self.raw(conn, "notify_done", {"ids": payload}).close()

    def listener(
        self,
        channels: Sequence[str],
        callback: Callable[[str, str], None],
        on_connect: Callable[[], None] | None = None,
    ) -> PgListener | None:
        listener = PgListener(conninfo(self.url), list(channels), callback, on_connect)
        listener.start()
        return listener


def conninfo(url: Any) -> dict[str, Any]:
    """psycopg connection keywords for a SQLAlchemy URL (query options such as search_path)."""
    params: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
    for key, value in url.query.items():
        params[key] = value[-1] if isinstance(value, tuple) else value
    return params


class PgListener:
    """A background thread LISTENing on channels, reconnecting with backoff after an outage.

    ``on_connect`` runs after every (re)connection: notifications sent while disconnected are
    lost, so the owner re-polls then.
    """

    def __init__(
        self,
        params: dict[str, Any],
        channels: list[str],
        callback: Callable[[str, str], None],
        on_connect: Callable[[], None] | None,
    ) -> None:
        self.params = params
        self.channels = channels
        self.callback = callback
        self.on_connect = on_connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbqueue-listener", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self.params, autocommit=True, connect_timeout=5) as conn:
                    for channel in self.channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    failures = 0
                    self.connected.set()
                    if self.on_connect is not None:
                        self.on_connect()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.callback(note.channel, note.payload)
            except Exception as error:
                self.connected.clear()
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                if not self._stop.is_set():
                    logger.warning(
                        "LISTEN connection lost (%s); reconnecting in %.1fs",
                        str(error).strip().splitlines()[0] if str(error) else error,
                        delay,
                    )
                self._stop.wait(delay)
