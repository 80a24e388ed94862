"""Helpers for the integration tests: settings, SQL on a test database, polling a job's row,
and small records of what workers and signals did. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from dbqueue import DBQueue
from tests.support.polling import wait_until

#: Settings every test app gets: small pools, fast polls, a fast heartbeat and reaper.
FAST_SETTINGS: dict[str, Any] = {
    "broker_pool_preset": "resource_constrained",
    "worker_hijack_root_logger": False,
    "worker_poll_interval": 0.05,
    "worker_heartbeat_interval": 0.2,
    "stale_lock_interval": 0.2,
    "stale_lock_age": 1.0,
    "worker_shutdown_timeout": 10.0,
    "worker_control_interval": 0.2,
}

#: Seconds a test waits for a job that should finish promptly.
JOB_TIMEOUT = 20.0


def sql(app: DBQueue, statement: str, **params: Any) -> Any:
    """Run one statement in a write transaction on the app's database.

    Returns the rows for a query, else the number of rows changed.
    """

    def run(conn: Any) -> Any:
        result = conn.execute(text(statement), params)
        return [tuple(row) for row in result] if result.returns_rows else result.rowcount

    return app.storage.write(run, "test statement")


def job(app: DBQueue, job_id: str) -> dict[str, Any]:
    """The job's row; fails the test if there is none."""
    row = app.storage.get_job(job_id)
    assert row is not None, f"no job row with id {job_id}"
    return row


def register(app: DBQueue, queues: list[str]) -> str:
    """A worker registry row for claiming through the storage API directly."""
    worker_id = str(uuid.uuid4())
    app.storage.register_worker(
        worker_id,
        f"test-{worker_id[:8]}",
        socket.gethostname(),
        os.getpid(),
        dict.fromkeys(queues),
        1,
        "threads",
        {},
    )
    return worker_id


def status_of(app: DBQueue, job_id: str) -> str | None:
    row = app.storage.get_job(job_id)
    return None if row is None else str(row["status"])


def wait_status(app: DBQueue, job_id: str, *statuses: str, timeout: float = JOB_TIMEOUT) -> dict:
    """Poll the job's row until its status is one of ``statuses``; return the row."""

    def reached() -> dict[str, Any] | None:
        row = app.storage.get_job(job_id)
        return row if row is not None and row["status"] in statuses else None

    return wait_until(
        reached,
        timeout=timeout,
        interval=0.02,
        message=f"job {job_id} never reached {statuses} (now {status_of(app, job_id)})",
    )


def settle(result: Any, timeout: float = JOB_TIMEOUT) -> Any:
    """Wait for a job to finish and return its value or exception (never raises it)."""
    return result.get(timeout=timeout, propagate=False, interval=0.05)


@dataclass
class ThreadWorker:
    """A real worker running in a thread of the test process."""

    worker: Any
    thread: threading.Thread
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    @property
    def id(self) -> str:
        return str(self.worker.id)

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown; fails the test if the worker does not stop in time."""
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker {self.worker.name} did not stop in {timeout}s"


@dataclass
class Received:
    """One signal delivery: the signal's name, its sender and keyword arguments."""

    signal: str
    sender: Any
    kwargs: dict[str, Any]


class Runs:
    """A thread-safe log of task runs (what each run saw), for counting side effects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Any] = []

    def add(self, item: Any = None) -> int:
        with self._lock:
            self.items.append(item)
            return len(self.items)

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)
