"""Storage: every database operation dbqueue performs, named after the state machine's verbs.

Dialect differences (claiming, bulk inserts, notifications) live in the subclasses in
``postgresql.py``, ``mysql.py`` and ``sqlite.py``; the SQL itself lives in ``sql/*.sql``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Connection, Engine, exc
from sqlalchemy.engine import URL

from dbqueue.backoff import RetryConfig
from dbqueue.exceptions import DBQueueError
from dbqueue.storage import fanouts, migrate, queries
from dbqueue.storage.control import ControlStorage
from dbqueue.storage.engine import mask_password
from dbqueue.storage.retry import call_with_retry

T = TypeVar("T")

#: The statuses each finishing transition can leave behind (a pause request turns a retry or
#: a release into paused).
_STATUS_AFTER = {
    "complete": ("completed",),
    "fail": ("failed",),
    "retry": ("retrying", "paused"),
    "release": ("pending", "paused"),
    "expire": ("cancelled",),
}


class DuplicateJobId(DBQueueError):
    """A job with this id is already stored (``apply_async(task_id=...)`` reused an id)."""


@dataclass
class NewJob:
    """A job about to be enqueued. ``run_at`` is absolute (epoch), ``delay`` relative."""

    id: str
    task: str
    queue: str
    payload: bytes
    content_type: str
    priority: int = 0
    max_retries: int | None = None
    run_at: float | None = None
    delay: float = 0.0
    expires_at: float | None = None
    unique_key: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    options: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "priority": self.priority,
            "payload": self.payload,
            "content_type": self.content_type,
            "max_retries": self.max_retries,
            "run_at": self.run_at,
            "delay": self.delay,
            "expires_at": self.expires_at,
            "unique_key": self.unique_key,
            "parent_id": self.parent_id,
            "root_id": self.root_id,
            "options": self.options,
        }


@dataclass
class ClaimedJob:
    """A job a worker now holds (status running, attempt already incremented)."""

    id: str
    task: str
    queue: str
    priority: int
    payload: bytes
    content_type: str
    attempt: int
    max_retries: int | None
    run_at: float
    expires_at: float | None
    created_at: float
    parent_id: str | None
    root_id: str | None
    options: dict[str, Any] = field(default_factory=dict)
    claimed_at: float = 0.0
    #: The fan-out this job is a child of, if any.
    fan_out_id: str | None = None
    #: Whether the job has checkpoints to replay (its first run saved some).
    checkpointed: bool = False

    @classmethod
    def from_tuple(cls, row: Sequence[Any]) -> ClaimedJob:
        """Build from a claim row, in the column order every dialect's claim returns."""
        (
            id_,
            task,
            queue,
            priority,
            payload,
            content_type,
            attempt,
            max_retries,
            run_at,
            expires_at,
            created_at,
            parent_id,
            root_id,
            options,
            now,
            fan_out_id,
            checkpointed,
        ) = row
        return cls(
            id_,
            task,
            queue,
            priority,
            bytes(payload),
            content_type,
            attempt,
            max_retries,
            run_at,
            expires_at,
            created_at,
            parent_id,
            root_id,
            json.loads(options) if options else {},
            float(now),
            fan_out_id,
            bool(checkpointed),
        )


@dataclass
class Outcome:
    """What happened to a job a worker ran, written by :meth:`Storage.finish`.

    ``kind`` is one of the transition statements: complete, fail, retry, release, expire.
    """

    kind: str
    job_id: str
    result: bytes | None = None
    result_type: str | None = None
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    delay: float = 0.0
    payload: bytes | None = None
    #: The claim (``ClaimedJob``) this run came from, set by the process that claimed it:
    #: it tells this run's bookkeeping from a later claim of the same job (a suspended
    #: parent may be woken and claimed again before its ``suspend`` outcome is written).
    claim: ClaimedJob | None = field(default=None, compare=False, repr=False)

    def params(self, worker: str) -> dict[str, Any]:
        base: dict[str, Any] = {"id": self.job_id, "worker": worker}
        if self.kind == "complete":
            base.update(
                result=self.result, result_type=self.result_type, error_type=self.error_type
            )
        elif self.kind in ("fail", "retry"):
            base.update(error_type=self.error_type, error=self.error, traceback=self.traceback)
            if self.kind == "retry":
                base.update(delay=self.delay, payload=self.payload)
        return base


@dataclass
class ReapedJob:
    """A job the reaper took back from a dead worker: now pending again, or failed."""

    id: str
    task: str
    status: str
    attempt: int
    fan_out_id: str | None = None


class Storage(ControlStorage):
    """Database access for one broker URL. Thread-safe; one per process per app.

    Pausing, resuming and the event stream are in :class:`ControlStorage` (``control.py``).
    """

    family = "base"
    #: The driver's parameter style for :meth:`raw` ('pyformat': psycopg, PyMySQL).
    paramstyle = "pyformat"

    def __init__(
        self,
        engine: Engine,
        url: URL,
        retry: RetryConfig,
        notify: bool = True,
        producer: Engine | None = None,
        claimer: Engine | None = None,
    ) -> None:
        self.engine = engine
        #: Autocommit connections for single-statement enqueues: no BEGIN/COMMIT round trips
        #: and no per-checkout isolation switching (the same engine where there is none).
        self.producer = producer or engine
        #: Autocommit connections whose commits do not wait for the disk, for claims (see
        #: :meth:`claim`); None where claims run in a write transaction.
        self.claimer = claimer
        self.url = url
        self.retry = retry
        self.notify = notify
        self.q = queries.load(self.family)
        #: Fan-out children this process claimed and has not finished: job id -> the claim.
        #: Their terminal outcomes are counted into their fan-out in the same transaction.
        self.fan_out_children: dict[str, ClaimedJob] = {}

    @property
    def display_url(self) -> str:
        return mask_password(self.url)

    # -- plumbing ---------------------------------------------------------------------------

    def write(
        self,
        fn: Callable[[Connection], T],
        what: str,
        retry: RetryConfig | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        lazy: bool = False,
    ) -> T:
        """Run ``fn`` in a write transaction, retried on transient errors.

        ``lazy``: the commit need not wait for the disk (see :meth:`claim`), where the dialect
        can say so per transaction.
        """

        def attempt() -> T:
            with self.engine.connect() as conn:
                with self._commit_mode(conn, lazy):
                    with conn.execution_options(dbqueue_write=True).begin():
                        return fn(conn)

        return call_with_retry(attempt, retry or self.retry, what, on_retry)

    def _commit_mode(self, conn: Connection, lazy: bool) -> AbstractContextManager[None]:
        """Hook: make the next transaction's commit lazy (SQLite); durable by default."""
        return contextlib.nullcontext()

    def read(self, fn: Callable[[Connection], T], what: str) -> T:
        """Run ``fn`` in a read transaction, retried on transient errors."""

        def attempt() -> T:
            with self.engine.connect() as conn, conn.begin():
                return fn(conn)

        return call_with_retry(attempt, self.retry, what)

    def run(self, conn: Connection, name: str, params: Any = None) -> Any:
        """Execute a named query on ``conn``."""
        return conn.execute(self.q[name].clause, params if params is not None else {})

    def raw(self, conn: Connection, name: str, params: dict[str, Any]) -> Any:
        """Execute a hot-path query on the driver's cursor, inside ``conn``'s transaction.

        Skips SQLAlchemy's per-execution bookkeeping (most of a claim's CPU time); errors are
        translated to SQLAlchemy's exceptions, and a dead connection is invalidated.
        """
        sql, bound = self.q[name].render(self.paramstyle, params)
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql, bound)
        except self.engine.dialect.loaded_dbapi.Error as error:
            cursor.close()
            self._translate(error, sql, bound, dbapi_conn, conn.invalidate)
        return cursor

    def raw_many(self, conn: Connection, name: str, params: list[dict[str, Any]]) -> int:
        """``executemany`` of a hot-path statement; returns the rows affected."""
        sql, _ = self.q[name].render(self.paramstyle, params[0])
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        try:
            cursor.executemany(sql, params)
            return int(cursor.rowcount)
        except self.engine.dialect.loaded_dbapi.Error as error:
            self._translate(error, sql, params, dbapi_conn, conn.invalidate)
        finally:
            cursor.close()

    def autocommit(
        self, name: str, params: dict[str, Any], engine: Engine | None = None, rows: bool = False
    ) -> Any:
        """Run one hot statement on a pooled autocommit connection; returns its first row.

        For statements that are a transaction on their own (enqueueing one job). ``rows``
        returns every row instead; ``engine`` defaults to the producers' one.
        """
        sql, bound = self.q[name].render(self.paramstyle, params)
        try:
            raw = (engine or self.producer).raw_connection()
        except self.engine.dialect.loaded_dbapi.Error as error:
            self._translate(error, sql, bound, None, lambda _: None)
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, bound)
                if rows:
                    return cursor.fetchall()
                return cursor.fetchone() if cursor.description else cursor.rowcount
            finally:
                cursor.close()
        except self.engine.dialect.loaded_dbapi.Error as error:
            self._translate(error, sql, bound, raw.dbapi_connection, raw.invalidate)
        finally:
            raw.close()

    def _translate(
        self,
        error: Exception,
        sql: str,
        params: Any,
        dbapi_conn: Any,
        invalidate: Callable[[BaseException], None],
    ) -> NoReturn:
        """Raise a driver error as SQLAlchemy's exception; drop the connection if it died."""
        dialect = self.engine.dialect
        lost = dialect.is_disconnect(error, dbapi_conn, None)  # type: ignore[arg-type]
        if lost:
            invalidate(error)
        raise exc.DBAPIError.instance(
            sql,
            params,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        ) from error

    # -- schema -----------------------------------------------------------------------------

    def upgrade(self) -> list[migrate.Migration]:
        """Apply pending migrations (``dbqueue db upgrade``)."""
        return call_with_retry(
            lambda: migrate.upgrade(self.engine, self.family), self.retry, "schema upgrade"
        )

    def check_schema(self) -> None:
        """Raise SchemaError unless the tables match this release."""
        call_with_retry(
            lambda: migrate.check(self.engine, self.family, self.display_url),
            self.retry,
            "schema check",
        )

    def schema_version(self) -> int:
        return call_with_retry(
            lambda: migrate.read_version(self.engine), self.retry, "schema version"
        )

    # -- producing --------------------------------------------------------------------------

    def insert_job(self, job: NewJob) -> str:
        """Enqueue one job; returns its id, or the live job's id when its unique key is taken."""
        retried = False

        def mark(_: BaseException) -> None:
            nonlocal retried
            retried = True

        while True:
            inserted = call_with_retry(
                lambda: self._insert_one(job), self.retry, f"enqueue of {job.task}", mark
            )
            if inserted:
                return job.id
            existing = self._resolve_conflict(job, retried)
            if existing is not None:
                return existing

    def _insert_one(self, job: NewJob) -> bool:
        """Insert one job; True if a row was written."""
        with self.engine.connect() as conn, conn.execution_options(dbqueue_write=True).begin():
            cursor = self.raw(conn, "insert_job", job.params())
            inserted = cursor.fetchone() is not None
            cursor.close()
            return inserted

    def _resolve_conflict(self, job: NewJob, retried: bool) -> str | None:
        """After an insert that wrote nothing: the live job holding the key, or our own row."""

        def look(conn: Connection) -> tuple[str | None, bool]:
            if job.unique_key is not None:
                row = self.run(conn, "find_live_unique", {"unique_key": job.unique_key}).first()
                if row is not None:
                    return row[0], True
            exists = self.run(conn, "job_exists", {"id": job.id}).first() is not None
            return None, exists

        live_id, exists = self.read(look, "unique key lookup")
        if live_id is not None:
            return live_id
        if exists:
            if retried:
                return job.id
            raise DuplicateJobId(
                f"a job with id {job.id!r} already exists; choose another task_id "
                "(or forget() the old result first)"
            )
        return None

    def insert_jobs(self, jobs: Sequence[NewJob]) -> list[str]:
        """Enqueue many jobs in one transaction; returns ids (the live job's for duplicates)."""
        if not jobs:
            return []
        conflicts = self.write(lambda conn: self._insert_many(conn, jobs), "bulk enqueue")
        ids = [job.id for job in jobs]
        for index in conflicts:
            resolved = self._resolve_conflict(jobs[index], retried=False)
            ids[index] = resolved if resolved is not None else self.insert_job(jobs[index])
        return ids

    def _insert_many(self, conn: Connection, jobs: Sequence[NewJob]) -> list[int]:
        """Insert ``jobs`` on ``conn``; returns the indexes of jobs that inserted nothing."""
        conflicts = []
        for index, job in enumerate(jobs):
            if self.run(conn, "insert_job", job.params()).first() is None:
                conflicts.append(index)
        return conflicts

    # -- working ----------------------------------------------------------------------------

    def claim(
        self,
        worker: str,
        queues: Sequence[str],
        limit: int,
        retry: RetryConfig | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> list[ClaimedJob]:
        """pending/retrying -> running for up to ``limit`` due jobs, highest priority first.

        ``on_retry`` hears about an attempt that failed: its commit may still have gone
        through, leaving jobs claimed that nobody runs (the worker's ownership audit finds them).
        Where the dialect allows, a claim commits without waiting for the disk: a claim lost
        in a database host crash only makes its jobs claimable again (delivery is at least
        once anyway), and every later durable commit, such as the job's outcome, flushes it.
        """
        if self.claimer is not None:
            params = {"worker": worker, "queues": list(queues), "limit": limit}
            rows = call_with_retry(
                lambda: self.autocommit("claim", params, self.claimer, rows=True),
                retry or self.retry,
                "claim",
                on_retry,
            )
            jobs = [ClaimedJob.from_tuple(row) for row in rows]
        else:
            jobs = self.write(
                lambda conn: self._claim(conn, worker, list(queues), limit),
                "claim",
                retry,
                on_retry,
                lazy=True,
            )
        jobs.sort(key=lambda j: (-j.priority, j.run_at))
        for job in jobs:
            if job.fan_out_id is not None:
                self.fan_out_children[job.id] = job
        return jobs

    def _claim(
        self, conn: Connection, worker: str, queues: list[str], limit: int
    ) -> list[ClaimedJob]:
        cursor = self.raw(conn, "claim", {"worker": worker, "queues": queues, "limit": limit})
        rows = cursor.fetchall()
        cursor.close()
        return [ClaimedJob.from_tuple(row) for row in rows]

    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> set[str]:
        """Record many outcomes in one transaction (group commit); returns the ids still owned.

        A job another worker took over (reaped) or that was revoked is left alone. Fan-out
        children that finish are counted into their fan-out in the same transaction
        (``fanouts.py``); a ``suspend`` outcome was written by the fan-out itself.
        """
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for outcome in outcomes:
            by_kind.setdefault(outcome.kind, []).append(outcome.params(worker))
        if "suspend" in by_kind or self.fan_out_children:
            return fanouts.finish(self, worker, outcomes, by_kind)

        def run(conn: Connection) -> set[str]:
            lost: set[str] = set()
            for kind, params in by_kind.items():
                lost |= self._finish_kind(conn, kind, params)
            self._after_finish(conn, [o.job_id for o in outcomes])
            return lost

        suspects = self.write(run, "recording job outcomes")
        if suspects:
            suspects = self._really_lost(suspects, {o.job_id: o.kind for o in outcomes})
        return {o.job_id for o in outcomes} - suspects

    def _really_lost(self, suspects: set[str], kinds: dict[str, str]) -> set[str]:
        """Rows a finishing statement did not touch: lost, unless already in the state we wrote.

        That happens when a first attempt committed but its reply was lost and the retry found
        the work done.
        """
        states = self.job_states(sorted(suspects))
        return {i for i in suspects if states.get(i, ("", None))[0] not in _STATUS_AFTER[kinds[i]]}

    def _finish_kind(self, conn: Connection, kind: str, params: list[dict[str, Any]]) -> set[str]:
        """Run one transition for many jobs; returns ids whose row may not have been updated.

        Completions that store nothing go in one ``complete_bare_many`` statement.
        """
        if kind == "complete" and len(params) > 1:
            bare = [p["id"] for p in params if p["result"] is None and p["error_type"] is None]
            if bare:
                rest = [p for p in params if p["result"] is not None or p["error_type"] is not None]
                missed = self._complete_bare(conn, params[0]["worker"], bare)
                return missed | (self._finish_kind(conn, kind, rest) if rest else set())
        if len(params) == 1:
            cursor = self.raw(conn, kind, params[0])
            missed = cursor.rowcount == 0
            cursor.close()
            return {params[0]["id"]} if missed else set()
        if self.raw_many(conn, kind, params) != len(params):
            return {p["id"] for p in params}
        return set()

    def _complete_bare(self, conn: Connection, worker: str, ids: list[str]) -> set[str]:
        """Complete result-less jobs in one statement; all are suspects if any row was missed."""
        cursor = self.raw(conn, "complete_bare_many", {"ids": ids, "worker": worker})
        updated = cursor.rowcount
        cursor.close()
        return set(ids) if updated != len(ids) else set()

    def _after_finish(self, conn: Connection, ids: list[str]) -> None:
        """Hook for dialects that announce finished jobs (PostgreSQL NOTIFY)."""

    def running_ids(self, worker: str) -> set[str]:
        """Ids of the jobs ``worker`` holds in the database."""
        rows = self.read(
            lambda c: list(self.run(c, "running_ids", {"worker": worker})), "ownership audit"
        )
        return {row.id for row in rows}

    def heartbeat(self, worker: str) -> bool:
        """Refresh the worker's heartbeat; False if its registry row is gone."""
        return bool(
            self.write(lambda c: self.run(c, "heartbeat", {"id": worker}).rowcount, "heartbeat")
        )

    def register_worker(
        self,
        worker: str,
        name: str,
        hostname: str,
        pid: int,
        queues: dict[str, int | None],
        concurrency: int,
        pool: str,
        info: dict[str, Any],
        pause_mode: str | None = None,
    ) -> None:
        params = {
            "id": worker,
            "name": name,
            "hostname": hostname,
            "pid": pid,
            "queues": json.dumps(queues),
            "concurrency": concurrency,
            "pool": pool,
            "info": json.dumps(info),
            "pause_mode": pause_mode,
        }
        self.write(lambda c: self.run(c, "register_worker", params), "worker registration")

    def unregister_worker(self, worker: str) -> None:
        self.write(
            lambda c: self.run(c, "unregister_worker", {"id": worker}), "worker unregistration"
        )

    def release(self, worker: str, ids: Iterable[str]) -> int:
        """running -> pending for jobs claimed but not run; their attempt is given back."""
        params = [{"id": i, "worker": worker} for i in ids]
        if not params:
            return 0
        return int(self.write(lambda c: self.run(c, "release", params).rowcount, "release"))

    def reap(self, age: float, limit: int = 100) -> list[ReapedJob]:
        """Take back running jobs of workers silent for ``age`` seconds.

        A fan-out child failed for good is counted into its fan-out in the same transaction.
        """

        def run(conn: Connection) -> tuple[list[ReapedJob], list[fanouts.Decided]]:
            reaped = self._reap(conn, age, limit)
            return reaped, fanouts.count_reaped(self, conn, reaped)

        reaped, decided = self.write(run, "stale-lock reaper")
        fanouts.after_decided(self, decided)
        return reaped

    def _reap(self, conn: Connection, age: float, limit: int) -> list[ReapedJob]:
        rows = self.run(conn, "reap", {"age": age, "limit": limit})
        return [ReapedJob(r.id, r.task, r.status, r.attempt, r.fan_out_id) for r in rows]

    def forget_dead_workers(self, age: float) -> int:
        return int(
            self.write(
                lambda c: self.run(c, "forget_dead_workers", {"age": age}).rowcount,
                "worker registry cleanup",
            )
        )

    def prune(self, older_than: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` finished jobs that finished ``older_than`` seconds ago."""

        def run(conn: Connection) -> int:
            cutoff = float(self.run(conn, "now").scalar()) - older_than
            return int(self.run(conn, "prune", {"cutoff": cutoff, "limit": limit}).rowcount)

        return self.write(run, "pruning finished jobs")

    def next_run_at(self, queues: Sequence[str]) -> tuple[float | None, float]:
        """(earliest future run_at of the queues, database now)."""

        def run(conn: Connection) -> tuple[float | None, float]:
            now = float(self.run(conn, "now").scalar())
            at = self.run(conn, "next_run_at", {"queues": list(queues)}).scalar()
            return (float(at) if at is not None else None), now

        return self.read(run, "next due job lookup")

    # -- results and administration ---------------------------------------------------------

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        row = self.read(lambda c: self.run(c, "get_job", {"id": job_id}).first(), "job lookup")
        return dict(row._mapping) if row is not None else None

    def job_states(self, ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        if not ids:
            return {}
        rows = self.read(
            lambda c: list(self.run(c, "job_states", {"ids": list(ids)})), "job states lookup"
        )
        return {r.id: (r.status, r.error_type) for r in rows}

    def revoke(self, ids: Sequence[str], terminate: bool = False) -> int:
        """Cancel live jobs; with ``terminate`` the workers running them also stop them.

        Fan-out children are counted into their fan-out, waiting parents' children cancelled.
        """
        return fanouts.revoke(self, list(ids), terminate)

    def forget(self, job_id: str) -> int:
        return int(self.write(lambda c: self.run(c, "forget", {"id": job_id}).rowcount, "forget"))

    def purge(self, queues: Sequence[str] | None = None) -> int:
        """Delete jobs waiting to run (all queues, or only ``queues``)."""
        if queues:
            return int(
                self.write(
                    lambda c: self.run(c, "purge", {"queues": list(queues)}).rowcount, "purge"
                )
            )
        return int(self.write(lambda c: self.run(c, "purge_all").rowcount, "purge"))

    def queue_counts(self) -> dict[str, dict[str, int]]:
        rows = self.read(lambda c: list(self.run(c, "queue_counts")), "queue counts")
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row.queue, {})[row.status] = int(row.n)
        return counts

    def live_workers(self, age: float) -> list[dict[str, Any]]:
        rows = self.read(lambda c: list(self.run(c, "live_workers", {"age": age})), "live workers")
        workers = []
        for row in rows:
            item = dict(row._mapping)
            item["queues"] = json.loads(item["queues"])
            item["info"] = json.loads(item["info"]) if item["info"] else {}
            workers.append(item)
        return workers

    def now(self) -> float:
        return float(self.read(lambda c: self.run(c, "now").scalar(), "clock"))

    # -- notifications ----------------------------------------------------------------------

    def listener(
        self,
        channels: Sequence[str],
        callback: Callable[[str, str], None],
        on_connect: Callable[[], None] | None = None,
    ) -> Any:
        """A started background listener for ``channels``, or None where the dialect has none."""
        return None

    def dispose(self) -> None:
        """Forget pooled connections without closing them (a forked child drops the parent's)."""
        for engine in self._engines():
            engine.dispose(close=False)

    def close(self) -> None:
        """Close every pooled connection."""
        for engine in self._engines():
            engine.dispose()

    def _engines(self) -> list[Engine]:
        engines = [self.engine]
        for extra in (self.producer, self.claimer):
            if extra is not None and extra is not self.engine:
                engines.append(extra)
        return engines
