"""Bulk enqueue: ``delay_many`` (COPY on PostgreSQL, multi-row INSERT on MySQL)."""

from __future__ import annotations

import random
import uuid

import pytest

from dbqueue import DBQueue
from dbqueue.serialization import decode_call
from dbqueue.storage import NewJob
from tests.integration.helpers import job, register, settle, sql
from tests.support.polling import wait_until


def test_delay_many_inserts_5000_jobs_in_one_call(
    app: DBQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task(name="bulk")
    def bulk(n: int, tag: str = "") -> None:
        pass

    storage = app.storage
    copied: list[int] = []
    if storage.family == "postgresql":
        original = storage._copy

        def counting_copy(conn, jobs):
            copied.append(len(jobs))
            return original(conn, jobs)

        monkeypatch.setattr(storage, "_copy", counting_copy)

    count = 5000
    results = bulk.delay_many([((n,), {"tag": f"t{n}"}) for n in range(count)])
    ids = [r.id for r in results]
    assert len(ids) == count
    assert len(set(ids)) == count
    if storage.family == "postgresql":
        assert copied == [count], "PostgreSQL should enqueue plain jobs with one COPY"

    assert sql(app, "SELECT status, COUNT(*) FROM dbqueue_jobs GROUP BY status") == [
        ("pending", count)
    ]
    for index in random.Random(7).sample(range(count), 25):
        row = job(app, ids[index])
        assert (row["task"], row["queue"], row["attempt"]) == ("bulk", "celery", 0)
        call = decode_call(bytes(row["payload"]), row["content_type"], app.accept)
        assert call == ([index], {"tag": f"t{index}"})

    # Bulk-inserted jobs are due at once.
    worker_id = register(app, ["celery"])
    assert len(storage.claim(worker_id, ["celery"], 10)) == 10


def test_delay_many_with_countdown_delays_every_job(app: DBQueue) -> None:
    @app.task(name="later")
    def later(n: int) -> None:
        pass

    before = app.storage.now()
    ids = [r.id for r in later.delay_many([(n,) for n in range(10)], countdown=1.0)]
    for job_id in ids:
        assert 0.95 <= job(app, job_id)["run_at"] - before <= 2.0
    worker_id = register(app, ["celery"])
    assert app.storage.claim(worker_id, ["celery"], 20) == []
    claimed: list = []

    def all_claimed() -> bool:
        claimed.extend(app.storage.claim(worker_id, ["celery"], 20))
        return len(claimed) == 10

    wait_until(all_claimed, timeout=10, interval=0.02)
    assert {j.id for j in claimed} == set(ids)


def test_bulk_insert_with_mixed_timing(app: DBQueue) -> None:
    """One bulk insert holding due jobs, a countdown, and an absolute run_at in the future."""
    storage = app.storage
    now = storage.now()

    def new_job(**timing) -> NewJob:
        return NewJob(
            id=str(uuid.uuid4()),
            task="mixed",
            queue="mixed",
            payload=b"[[], {}]",
            content_type="application/json",
            **timing,
        )

    due = [new_job(), new_job(delay=0.0), new_job(run_at=now - 30)]
    later = [new_job(delay=60.0), new_job(run_at=now + 60)]
    soon = new_job(delay=1.0)
    ids = storage.insert_jobs([*due, *later, soon])
    assert ids == [j.id for j in (*due, *later, soon)]

    assert job(app, later[0].id)["run_at"] == pytest.approx(now + 60, abs=5)
    assert job(app, later[1].id)["run_at"] == pytest.approx(now + 60, abs=0.01)
    assert job(app, due[2].id)["run_at"] == pytest.approx(now - 30, abs=0.01)

    worker_id = register(app, ["mixed"])
    first = storage.claim(worker_id, ["mixed"], 10)
    # The oldest run_at comes first among equal priorities.
    assert first[0].id == due[2].id
    assert {j.id for j in first} == {j.id for j in due}
    second = wait_until(lambda: storage.claim(worker_id, ["mixed"], 10), timeout=10, interval=0.02)
    assert [j.id for j in second] == [soon.id]
    assert storage.claim(worker_id, ["mixed"], 10) == []


def test_bulk_jobs_run_to_completion(app: DBQueue, run_worker) -> None:
    @app.task(name="square")
    def square(n: int) -> int:
        return n * n

    results = square.delay_many([(n,) for n in range(200)])
    run_worker(app, concurrency=8)
    assert [settle(r) for r in results] == [n * n for n in range(200)]
    assert sql(app, "SELECT status, COUNT(*) FROM dbqueue_jobs GROUP BY status") == [
        ("completed", 200)
    ]


def test_delay_many_accepts_celery_call_shapes(app: DBQueue, run_worker) -> None:
    @app.task(name="shape")
    def shape(a: int, b: int = 0) -> int:
        return a * 10 + b

    results = shape.delay_many([(1,), (2, 3), {"a": 4, "b": 5}, ([6], {"b": 7}), 8])
    run_worker(app)
    assert [settle(r) for r in results] == [10, 23, 45, 67, 80]


def test_delay_many_of_nothing_is_a_no_op(app: DBQueue) -> None:
    @app.task(name="none")
    def none() -> None:
        pass

    assert none.delay_many([]) == []
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_jobs") == [(0,)]
