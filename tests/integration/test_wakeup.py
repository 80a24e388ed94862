"""How an idle worker wakes: a job enqueued in its own process, a delayed job becoming due,
and on PostgreSQL a NOTIFY from another producer. The poll interval is set to 3 s, so a
wake-up that relied on polling would take seconds. Each test uses a queue of its own: on
PostgreSQL, NOTIFYs about other tests' queues would otherwise wake the worker at random."""

from __future__ import annotations

import time
import uuid

import pytest

from dbqueue import DBQueue
from tests.integration.helpers import job, settle

SLOW_POLL = {"worker_poll_interval": 3.0, "worker_poll_interval_min": 3.0}


def own_queue() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def started_after_enqueue(app: DBQueue, result) -> float:
    """Seconds between the job's insert and its claim, on the database clock."""
    row = job(app, result.id)
    return float(row["started_at"] - row["created_at"])


def test_job_enqueued_in_the_workers_process_wakes_it(make_app, db_url: str, run_worker) -> None:
    app = make_app(db_url, **SLOW_POLL)

    @app.task(name="ping")
    def ping() -> str:
        return "pong"

    queue = own_queue()
    run_worker(app, queues=queue)
    settle(ping.apply_async(queue=queue))  # the worker is now idle, polling every 3 s
    result = ping.apply_async(queue=queue)
    assert settle(result) == "pong"
    assert started_after_enqueue(app, result) < 1.5


def test_idle_worker_wakes_when_a_delayed_job_is_due(
    make_app, db_url: str, run_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(db_url, **SLOW_POLL)

    @app.task(name="ping")
    def ping() -> str:
        return "pong"

    # Reads take 20 ms, as they do against a database across a network: this makes the
    # race deterministic (with a local database the job is missed about half the time).
    storage = app.storage
    read = storage.read

    def slow_read(fn, what):
        time.sleep(0.02)
        return read(fn, what)

    monkeypatch.setattr(storage, "read", slow_read)
    queue = own_queue()
    run_worker(app, queues=queue)
    settle(ping.apply_async(queue=queue))
    for _ in range(3):
        result = ping.apply_async(queue=queue, countdown=0.5)
        assert settle(result) == "pong"
        assert 0.45 <= started_after_enqueue(app, result) < 2.5


def test_notify_wakes_an_idle_worker_for_another_producer(make_app, pg_url: str, run_worker):
    queue = own_queue()
    app = make_app(pg_url, **SLOW_POLL)
    producer = make_app(pg_url)

    @app.task(name="ping")
    def ping() -> str:
        return "pong"

    @producer.task(name="ping")
    def remote_ping() -> str:
        return "unused"

    worker = run_worker(app, queues=queue)
    assert worker.worker.listener.connected.wait(10)
    settle(ping.apply_async(queue=queue))
    started = time.monotonic()
    result = remote_ping.apply_async(queue=queue)
    assert settle(result) == "pong"
    assert time.monotonic() - started < 2.0
    assert started_after_enqueue(app, result) < 1.5
