"""Enqueue and claim: priority order, countdown/eta, expiry at claim time, queue isolation."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dbqueue import DBQueue, TaskRevokedError, signals
from dbqueue.storage import DuplicateJobId
from tests.integration.helpers import JOB_TIMEOUT, job, register, settle, sql, wait_status
from tests.support.polling import wait_until


def ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


def test_claim_takes_highest_priority_then_oldest_run_at(app: DBQueue) -> None:
    @app.task(name="noop")
    def noop(tag: str) -> str:
        return tag

    # (tag, priority, run_at seconds ago): expected order d, c, a, b, e.
    plan = [("a", 0, 40), ("b", 0, 20), ("c", 5, 10), ("d", 5, 50), ("e", -1, 60)]
    ids = {tag: noop.apply_async((tag,), priority=p, eta=ago(s)).id for tag, p, s in plan}
    tag_of = {job_id: tag for tag, job_id in ids.items()}
    worker_id = register(app, ["celery"])

    first = app.storage.claim(worker_id, ["celery"], 2)
    assert [tag_of[j.id] for j in first] == ["d", "c"]
    second = app.storage.claim(worker_id, ["celery"], 2)
    assert [tag_of[j.id] for j in second] == ["a", "b"]
    third = app.storage.claim(worker_id, ["celery"], 5)
    assert [tag_of[j.id] for j in third] == ["e"]
    assert app.storage.claim(worker_id, ["celery"], 5) == []

    for claimed in (*first, *second, *third):
        assert claimed.attempt == 1
        row = job(app, claimed.id)
        assert row["status"] == "running"
        assert row["worker"] == worker_id
        assert row["attempt"] == 1
        assert row["started_at"] is not None


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_single_slot_worker_runs_jobs_in_priority_order(app: DBQueue, run_worker, runs, pool):
    @app.task(name="record")
    def record(tag: str) -> None:
        runs.add(tag)

    priorities = {"low": 1, "mid": 5, "high": 9, "mid-later": 5, "lowest": 0}
    results = [record.apply_async((tag,), priority=p) for tag, p in priorities.items()]
    run_worker(app, pool=pool, concurrency=1)
    for result in results:
        settle(result)
    assert runs.items == ["high", "mid", "mid-later", "low", "lowest"]


def test_countdown_job_is_claimed_only_once_due(app: DBQueue) -> None:
    @app.task(name="later")
    def later() -> None:
        pass

    before = app.storage.now()
    result = later.apply_async(countdown=1.0)
    row = job(app, result.id)
    assert 0.95 <= row["run_at"] - before <= 5.0  # the upper bound only guards against nonsense
    worker_id = register(app, ["celery"])
    assert app.storage.claim(worker_id, ["celery"], 10) == []

    claimed = wait_until(
        lambda: app.storage.claim(worker_id, ["celery"], 10), timeout=10, interval=0.02
    )
    assert [j.id for j in claimed] == [result.id]
    assert claimed[0].claimed_at >= row["run_at"]


def test_eta_job_is_claimed_only_once_due(app: DBQueue) -> None:
    @app.task(name="at")
    def at() -> None:
        pass

    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.0)
    result = at.apply_async(eta=eta)
    row = job(app, result.id)
    assert row["run_at"] == pytest.approx(eta.timestamp(), abs=0.01)
    worker_id = register(app, ["celery"])
    assert app.storage.claim(worker_id, ["celery"], 10) == []
    claimed = wait_until(
        lambda: app.storage.claim(worker_id, ["celery"], 10), timeout=10, interval=0.02
    )
    assert [j.id for j in claimed] == [result.id]
    assert claimed[0].claimed_at >= eta.timestamp() - 0.05


def test_worker_runs_countdown_job_after_it_is_due(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="delayed")
    def delayed() -> str:
        runs.add()
        return "done"

    run_worker(app)
    result = delayed.apply_async(countdown=0.5)
    assert settle(result) == "done"
    row = job(app, result.id)
    assert row["started_at"] - row["created_at"] >= 0.45
    assert len(runs) == 1


def test_job_expired_at_claim_time_is_revoked_without_running(
    app: DBQueue, run_worker, runs, record_signals
) -> None:
    @app.task(name="perishable")
    def perishable() -> None:
        runs.add()

    revoked = record_signals(signals.task_revoked)
    expired = perishable.apply_async(expires=ago(1))
    fresh = perishable.apply_async(expires=dt.timedelta(minutes=5))
    run_worker(app)

    row = wait_status(app, expired.id, "cancelled")
    assert row["error_type"] == "dbqueue.exceptions.TaskRevokedError"
    assert row["attempt"] == 1
    assert expired.state == "REVOKED"
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=JOB_TIMEOUT)
    settle(fresh)
    assert fresh.state == "SUCCESS"
    assert len(runs) == 1

    ours = [r for r in revoked if r.kwargs["request"].id == expired.id]
    assert len(ours) == 1
    assert ours[0].sender is perishable
    assert ours[0].kwargs["expired"] is True
    assert ours[0].kwargs["terminated"] is False
    assert not [r for r in revoked if r.kwargs["request"].id == fresh.id]


def test_retry_due_after_expiry_is_revoked_instead_of_run(
    app: DBQueue, run_worker, runs, record_signals
) -> None:
    revoked = record_signals(signals.task_revoked)

    @app.task(name="short_lived", bind=True, max_retries=5)
    def short_lived(self) -> None:
        runs.add()
        raise self.retry(countdown=3600)

    result = short_lived.apply_async(expires=dt.timedelta(hours=1))
    run_worker(app)
    wait_status(app, result.id, "retrying")
    # An hour passes: the job expired before its retry became due.
    sql(
        app,
        "UPDATE dbqueue_jobs SET run_at = run_at - 7200, expires_at = expires_at - 7200 "
        "WHERE id = :id",
        id=result.id,
    )
    row = wait_status(app, result.id, "cancelled")
    assert row["attempt"] == 2
    assert len(runs) == 1
    assert [r.kwargs["expired"] for r in revoked if r.kwargs["request"].id == result.id] == [True]


def test_worker_on_one_queue_never_takes_another_queues_jobs(app: DBQueue, run_worker, runs):
    @app.task(name="where")
    def where(tag: str) -> str:
        runs.add(tag)
        return tag

    other = [where.apply_async((f"b{i}",), queue="b", priority=9) for i in range(3)]
    mine = [where.apply_async((f"a{i}",), queue="a") for i in range(3)]
    run_worker(app, queues="a")
    for index, result in enumerate(mine):
        assert settle(result) == f"a{index}"
    assert sorted(runs.items) == ["a0", "a1", "a2"]
    for result in other:
        row = job(app, result.id)
        assert (row["status"], row["attempt"], row["worker"]) == ("pending", 0, None)

    worker_id = register(app, ["a"])
    assert app.storage.claim(worker_id, ["a"], 10) == []
    assert {j.id for j in app.storage.claim(worker_id, ["b"], 10)} == {r.id for r in other}


def test_reusing_a_task_id_is_refused(app: DBQueue) -> None:
    @app.task(name="once")
    def once() -> None:
        pass

    first = once.apply_async(task_id="fixed-id-1")
    assert first.id == "fixed-id-1"
    with pytest.raises(DuplicateJobId, match="fixed-id-1"):
        once.apply_async(task_id="fixed-id-1")
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_jobs") == [(1,)]
    # Once the old job finished and was forgotten, the id may be used again.
    sql(app, "UPDATE dbqueue_jobs SET status = 'completed' WHERE id = 'fixed-id-1'")
    first.forget()
    again = once.apply_async(task_id="fixed-id-1")
    assert again.id == "fixed-id-1"
    assert job(app, again.id)["status"] == "pending"


def test_enqueue_stores_call_and_options(app: DBQueue) -> None:
    """The row holds what the worker needs: task, queue, priority, retries, decodable args."""
    from dbqueue.serialization import decode_call

    @app.task(name="stored", max_retries=7)
    def stored(x: int, y: Any = None) -> None:
        pass

    result = stored.apply_async((1,), {"y": [2, "three"]}, queue="q1", priority=3)
    row = job(app, result.id)
    assert (row["task"], row["queue"], row["priority"]) == ("stored", "q1", 3)
    assert (row["status"], row["attempt"], row["max_retries"]) == ("pending", 0, 7)
    args, kwargs = decode_call(bytes(row["payload"]), row["content_type"], app.accept)
    assert (args, kwargs) == ([1], {"y": [2, "three"]})
    assert result.state == "PENDING"
    assert result.exists() is True


def test_claim_orders_by_priority_across_the_queues_claimed(app: DBQueue) -> None:
    @app.task(name="multi")
    def multi() -> None:
        pass

    low_a = multi.apply_async(queue="a", priority=1, eta=ago(30))
    high_b = multi.apply_async(queue="b", priority=7)
    mid_a = multi.apply_async(queue="a", priority=4)
    other = multi.apply_async(queue="c", priority=9)
    worker_id = register(app, ["a", "b"])
    claimed = app.storage.claim(worker_id, ["a", "b"], 10)
    assert [j.id for j in claimed] == [high_b.id, mid_a.id, low_a.id]
    assert job(app, other.id)["status"] == "pending"


def test_paused_queue_is_not_claimed(app: DBQueue) -> None:
    @app.task(name="held")
    def held() -> None:
        pass

    paused = held.apply_async(queue="paused-q")
    active = held.apply_async(queue="active-q")
    sql(app, "INSERT INTO dbqueue_queues (name, paused) VALUES ('paused-q', :t)", t=True)
    worker_id = register(app, ["paused-q", "active-q"])
    claimed = app.storage.claim(worker_id, ["paused-q", "active-q"], 10)
    assert [j.id for j in claimed] == [active.id]
    sql(app, "UPDATE dbqueue_queues SET paused = :f WHERE name = 'paused-q'", f=False)
    assert [j.id for j in app.storage.claim(worker_id, ["paused-q"], 10)] == [paused.id]


def test_purge_deletes_only_jobs_waiting_to_run(app: DBQueue) -> None:
    @app.task(name="purgeable")
    def purgeable() -> None:
        pass

    waiting_a = [purgeable.apply_async(queue="a") for _ in range(3)]
    retrying_a = purgeable.apply_async(queue="a")
    sql(app, "UPDATE dbqueue_jobs SET status = 'retrying' WHERE id = :id", id=retrying_a.id)
    running_a = purgeable.apply_async(queue="a", priority=-5)
    worker_id = register(app, ["a"])
    sql(
        app,
        "UPDATE dbqueue_jobs SET status = 'running', worker = :w WHERE id = :id",
        w=worker_id,
        id=running_a.id,
    )
    waiting_b = purgeable.apply_async(queue="b")

    assert app.control.purge(["a"]) == 4
    assert [r.exists() for r in (*waiting_a, retrying_a)] == [False] * 4
    assert running_a.exists() and waiting_b.exists()
    assert app.control.purge() == 1
    assert not waiting_b.exists()
    assert job(app, running_a.id)["status"] == "running"


def test_revoked_retrying_job_never_runs_again(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="again", bind=True, max_retries=5)
    def again(self, tag: str) -> str:
        runs.add(tag)
        if tag == "revoked":
            raise self.retry(countdown=3600)
        return tag

    result = again.delay("revoked")
    run_worker(app)
    wait_status(app, result.id, "retrying")
    result.revoke()
    assert result.state == "REVOKED"
    # Make the revoked job the oldest due row: were it claimable, it would run first.
    sql(app, "UPDATE dbqueue_jobs SET run_at = run_at - 7200 WHERE id = :id", id=result.id)
    assert settle(again.delay("marker")) == "marker"
    assert runs.items == ["revoked", "marker"]
    row = job(app, result.id)
    assert (row["status"], row["attempt"]) == ("cancelled", 1)
