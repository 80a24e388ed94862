"""Side effects recorded by task modules, and the SQL the acceptance tests read them back with.

Task modules (run inside real worker processes) import this module: ``record(...)`` inserts one
row into the ``effects`` table of the broker database (``DBQUEUE_BROKER_URL``), through a small
engine of the process's own, retrying through database outages. ``released(name)`` reads a flag
the test sets with :func:`release`, so a job can block until the test lets it go.

Nothing here imports dbqueue or pytest: it is plain SQLAlchemy, safe to import in a worker.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

#: One row per observable side effect: a run of a job, a signal that fired, ...
EFFECTS = sa.Table(
    "effects",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64)),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("t0", sa.Double),
    sa.Column("t1", sa.Double),
    sa.Column("info", sa.String(400)),
    #: Unique per record() call, so a write retried after a lost commit acknowledgement is
    #: recognised instead of counted twice (duplicates must be dbqueue's, not ours).
    sa.Column("nonce", sa.String(32), unique=True),
)
#: Flags the test raises to let blocked jobs go on.
FLAGS = sa.Table("flags", metadata, sa.Column("name", sa.String(64), primary_key=True))

#: How long a task keeps retrying a write while the database is unreachable.
OUTAGE_PATIENCE = 120.0

_engines: dict[tuple[int, str], sa.Engine] = {}
_lock = threading.Lock()


def new_engine(url: str, *, pooled: bool = True) -> sa.Engine:
    """An engine for ``url`` that never holds more than three connections."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"timeout": 60})
    if not pooled:
        return sa.create_engine(url, poolclass=sa.pool.NullPool)
    return sa.create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True, pool_timeout=60)


def engine(url: str | None = None) -> sa.Engine:
    """This process's engine for the broker database (a forked child makes its own)."""
    url = url or os.environ["DBQUEUE_BROKER_URL"]
    key = (os.getpid(), url)
    with _lock:
        found = _engines.get(key)
        if found is None:
            found = _engines[key] = new_engine(url)
        return found


def _patiently(fn: Any, *, idempotent_insert: bool = False) -> Any:
    """Run ``fn`` (one transaction), retrying while the database is down or restarting.

    With ``idempotent_insert``, a unique-key clash on a retry means the earlier try committed.
    """
    deadline = time.monotonic() + OUTAGE_PATIENCE
    retried = False
    while True:
        try:
            return fn()
        except sa.exc.IntegrityError:
            if idempotent_insert and retried:
                return None
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
            if time.monotonic() > deadline:
                raise
            retried = True
            time.sleep(0.2)


def record(
    kind: str,
    job_id: str | None = None,
    *,
    t0: float | None = None,
    t1: float | None = None,
    info: str | None = None,
    url: str | None = None,
) -> None:
    """Insert one effect row (kind, job id, this pid, optional timestamps and free text)."""
    row = {
        "job_id": job_id,
        "kind": kind,
        "pid": os.getpid(),
        "t0": t0,
        "t1": t1,
        "info": info[:400] if info else info,
        "nonce": uuid.uuid4().hex,
    }

    def insert() -> None:
        with engine(url).begin() as conn:
            conn.execute(EFFECTS.insert(), row)

    _patiently(insert, idempotent_insert=True)


def released(name: str, url: str | None = None) -> bool:
    """Whether the test raised flag ``name``."""

    def look() -> bool:
        with engine(url).connect() as conn:
            return (
                conn.execute(sa.select(FLAGS.c.name).where(FLAGS.c.name == name)).first()
                is not None
            )

    return bool(_patiently(look))


def wait_released(name: str, timeout: float = 120.0, url: str | None = None) -> None:
    """Block (polling) until the test raises flag ``name``; give up after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not released(name, url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"flag {name!r} was never raised")
        time.sleep(0.05)


# -- test side ----------------------------------------------------------------------------------


@contextmanager
def connect(url: str) -> Iterator[sa.Connection]:
    """A short-lived connection (no pool left behind) in a transaction."""
    eng = new_engine(url, pooled=False)
    try:
        with eng.begin() as conn:
            yield conn
    finally:
        eng.dispose()


def create_tables(url: str) -> None:
    """Create ``effects`` and ``flags`` (before any worker starts, so no creation race)."""
    eng = new_engine(url, pooled=False)
    try:
        metadata.create_all(eng)
    finally:
        eng.dispose()


def release(url: str, name: str) -> None:
    """Raise flag ``name``: jobs waiting on it go on."""
    with connect(url) as conn:
        conn.execute(FLAGS.insert(), {"name": name})


def rows(url: str, kind: str | None = None) -> list[Mapping[str, Any]]:
    """Effect rows (of one kind), in insertion order."""
    query = sa.select(EFFECTS).order_by(EFFECTS.c.seq)
    if kind is not None:
        query = query.where(EFFECTS.c.kind == kind)
    with connect(url) as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def count(url: str, kind: str | None = None) -> int:
    """Number of effect rows (of one kind)."""
    query = sa.select(sa.func.count()).select_from(EFFECTS)
    if kind is not None:
        query = query.where(EFFECTS.c.kind == kind)
    with connect(url) as conn:
        return int(conn.execute(query).scalar_one())


def duplicates(url: str, kind: str = "run") -> dict[str, int]:
    """Job ids with more than one ``kind`` row: ``GROUP BY job_id HAVING COUNT(*) > 1``."""
    query = sa.text(
        "SELECT job_id, COUNT(*) AS n FROM effects WHERE kind = :kind "
        "GROUP BY job_id HAVING COUNT(*) > 1"
    )
    with connect(url) as conn:
        return {r.job_id: int(r.n) for r in conn.execute(query, {"kind": kind})}


def distinct_jobs(url: str, kind: str = "run") -> set[str]:
    """The distinct job ids with a ``kind`` row."""
    query = sa.select(EFFECTS.c.job_id).where(EFFECTS.c.kind == kind).distinct()
    with connect(url) as conn:
        return {r.job_id for r in conn.execute(query)}


# -- the job table, read directly -----------------------------------------------------------------


def status_counts(url: str) -> dict[str, int]:
    """``{status: number of jobs}`` from ``dbqueue_jobs``."""
    query = sa.text("SELECT status, COUNT(*) AS n FROM dbqueue_jobs GROUP BY status")
    with connect(url) as conn:
        return {r.status: int(r.n) for r in conn.execute(query)}


def job(url: str, job_id: str) -> dict[str, Any]:
    """The ``dbqueue_jobs`` row of one job (status, attempt, error_type, worker, ...)."""
    query = sa.text(
        "SELECT id, task, queue, status, attempt, max_retries, error_type, error, worker, "
        "run_at, started_at, finished_at FROM dbqueue_jobs WHERE id = :id"
    )
    with connect(url) as conn:
        row = conn.execute(query, {"id": job_id}).first()
    assert row is not None, f"no job {job_id}"
    return dict(row._mapping)


def jobs(url: str) -> list[dict[str, Any]]:
    """Every ``dbqueue_jobs`` row (id, status, attempt, error_type, worker)."""
    query = sa.text(
        "SELECT id, status, attempt, error_type, error, worker, queue FROM dbqueue_jobs"
    )
    with connect(url) as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def workers(url: str) -> list[dict[str, Any]]:
    """Rows of the worker registry."""
    query = sa.text("SELECT id, name, pid, heartbeat_at FROM dbqueue_workers")
    with connect(url) as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
