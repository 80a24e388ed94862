"""Heartbeat, the stale-lock reaper and pruning, on real databases."""

from __future__ import annotations

import threading
import uuid

import pytest

from dbqueue import DBQueue, WorkerLostError
from tests.integration.helpers import JOB_TIMEOUT, job, register, settle, sql, wait_status
from tests.support.polling import wait_until

GHOST = "ghost-worker-without-registry-row"


def orphan(app: DBQueue, result, worker_id: str = GHOST) -> None:
    """Claim the job for a worker that is not (or no longer) alive, as if it crashed."""
    (claimed,) = app.storage.claim(worker_id, [job(app, result.id)["queue"]], 1)
    assert claimed.id == result.id


def test_reap_returns_a_dead_workers_job_to_the_queue(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="survivor", bind=True)
    def survivor(self) -> int:
        runs.add(self.request.retries)
        return self.request.attempt

    result = survivor.delay()
    orphan(app, result)
    assert job(app, result.id)["status"] == "running"

    reaped = app.storage.reap(1.0)
    assert [(r.id, r.task, r.status, r.attempt) for r in reaped] == [
        (result.id, "survivor", "pending", 1)
    ]
    row = job(app, result.id)
    assert (row["status"], row["worker"], row["attempt"]) == ("pending", None, 1)
    assert row["error_type"] == "dbqueue.exceptions.WorkerLostError"
    assert GHOST in row["error"]
    assert app.storage.reap(1.0) == []

    run_worker(app)
    assert settle(result) == 2
    assert runs.items == [1]
    row = job(app, result.id)
    assert (row["status"], row["attempt"], row["error_type"]) == ("completed", 2, None)


def test_live_workers_reaper_recovers_an_orphaned_job(app: DBQueue, run_worker) -> None:
    @app.task(name="recovered")
    def recovered() -> str:
        return "recovered"

    result = recovered.delay()
    orphan(app, result)
    run_worker(app)  # its reaper runs every 0.2 s
    assert settle(result) == "recovered"
    assert job(app, result.id)["attempt"] == 2


def test_reaped_job_with_no_retries_left_fails_with_worker_lost(app: DBQueue) -> None:
    @app.task(name="fragile", max_retries=0)
    def fragile() -> None:
        pass

    @app.task(name="unlimited", max_retries=None)
    def unlimited() -> None:
        pass

    spent = fragile.delay()
    endless = unlimited.delay()
    orphan(app, spent)
    orphan(app, endless)
    reaped = {r.id: (r.status, r.attempt) for r in app.storage.reap(1.0)}
    assert reaped == {spent.id: ("failed", 1), endless.id: ("pending", 1)}

    row = job(app, spent.id)
    assert (row["status"], row["worker"]) == ("failed", None)
    assert row["error_type"] == "dbqueue.exceptions.WorkerLostError"
    assert row["finished_at"] is not None
    assert spent.state == "FAILURE"
    with pytest.raises(WorkerLostError):
        spent.get(timeout=JOB_TIMEOUT)
    assert job(app, endless.id)["finished_at"] is None


def test_job_lost_on_its_last_attempt_fails_after_the_reap(app: DBQueue, run_worker, runs):
    """max_retries=1: a first run lost to a crash, a second one too: failed, never a third."""

    @app.task(name="crashy", max_retries=1)
    def crashy() -> None:
        runs.add()

    result = crashy.delay()
    orphan(app, result)
    assert [r.status for r in app.storage.reap(1.0)] == ["pending"]
    orphan(app, result)
    assert [(r.status, r.attempt) for r in app.storage.reap(1.0)] == [("failed", 2)]
    run_worker(app)
    assert isinstance(settle(result), WorkerLostError)
    assert len(runs) == 0


def test_reap_respects_the_heartbeat_age(app: DBQueue) -> None:
    @app.task(name="held")
    def held() -> None:
        pass

    fresh_worker = register(app, ["celery"])
    stale_worker = register(app, ["celery"])
    fresh, stale = held.delay(), held.delay()
    orphan(app, fresh, fresh_worker)
    orphan(app, stale, stale_worker)
    sql(
        app,
        "UPDATE dbqueue_workers SET heartbeat_at = heartbeat_at - 120 WHERE id = :id",
        id=stale_worker,
    )
    assert [r.id for r in app.storage.reap(60.0)] == [stale.id]
    assert job(app, fresh.id)["status"] == "running"
    assert job(app, fresh.id)["worker"] == fresh_worker
    # The fresh worker's heartbeat keeps it alive; a silent one is reaped at a shorter age.
    assert app.storage.heartbeat(fresh_worker) is True
    assert app.storage.reap(60.0) == []
    assert app.storage.heartbeat(str(uuid.uuid4())) is False


def test_registry_forgets_silent_workers_that_hold_no_job(app: DBQueue) -> None:
    @app.task(name="held")
    def held() -> None:
        pass

    idle_dead, busy_dead, alive = (register(app, ["celery"]) for _ in range(3))
    orphan(app, held.delay(), busy_dead)
    for worker_id in (idle_dead, busy_dead):
        sql(
            app,
            "UPDATE dbqueue_workers SET heartbeat_at = heartbeat_at - 7200 WHERE id = :id",
            id=worker_id,
        )
    assert {w["id"] for w in app.storage.live_workers(60)} == {alive}
    assert app.storage.forget_dead_workers(3600) == 1
    remaining = {worker_id for (worker_id,) in sql(app, "SELECT id FROM dbqueue_workers")}
    assert remaining == {busy_dead, alive}


def test_reap_takes_at_most_limit_jobs_per_call(app: DBQueue) -> None:
    @app.task(name="many")
    def many() -> None:
        pass

    for _ in range(3):
        orphan(app, many.delay())
    assert len(app.storage.reap(1.0, limit=2)) == 2
    assert len(app.storage.reap(1.0, limit=2)) == 1
    assert app.storage.reap(1.0, limit=2) == []


def test_heartbeat_keeps_a_long_job_from_being_reaped(
    make_app, db_url: str, run_worker, runs
) -> None:
    """A job running longer than stale_lock_age under a live worker is left alone."""
    app = make_app(
        db_url, stale_lock_age=0.5, worker_heartbeat_interval=0.1, stale_lock_interval=0.1
    )
    release = threading.Event()

    @app.task(name="marathon", bind=True)
    def marathon(self) -> str:
        runs.add(self.request.attempt)
        release.wait(JOB_TIMEOUT)
        return "finished"

    result = marathon.delay()
    worker = run_worker(app)
    try:
        row = wait_status(app, result.id, "running")
        stale_age = float(app.conf.stale_lock_age)
        # Wait on the database clock until the job has run for 3 stale ages, while the
        # worker's own reaper runs every 0.1 s; the heartbeat must keep the job ours.
        wait_until(
            lambda: app.storage.now() > row["started_at"] + 3 * stale_age,
            timeout=JOB_TIMEOUT,
            interval=0.1,
        )
        assert app.storage.reap(stale_age) == []
        row = job(app, result.id)
        assert (row["status"], row["worker"], row["attempt"]) == ("running", worker.id, 1)
        live = {w["id"]: w for w in app.storage.live_workers(stale_age)}
        assert live[worker.id]["running"] == 1
    finally:
        release.set()
    assert settle(result) == "finished"
    assert runs.items == [1]


def test_worker_reregisters_when_its_registry_row_vanishes(app: DBQueue, run_worker) -> None:
    worker = run_worker(app)
    sql(app, "DELETE FROM dbqueue_workers WHERE id = :id", id=worker.id)
    wait_until(
        lambda: any(w["id"] == worker.id for w in app.storage.live_workers(60)),
        timeout=JOB_TIMEOUT,
        message="the worker never registered again",
    )


def make_finished(app: DBQueue, job_id: str, status: str, seconds_ago: float) -> None:
    changed = sql(
        app,
        "UPDATE dbqueue_jobs SET status = :s, finished_at = :t WHERE id = :id",
        s=status,
        t=app.storage.now() - seconds_ago,
        id=job_id,
    )
    assert changed == 1


def test_prune_deletes_only_old_finished_jobs(app: DBQueue) -> None:
    @app.task(name="p")
    def p() -> None:
        pass

    old = {status: p.delay().id for status in ("completed", "failed", "cancelled")}
    for status, job_id in old.items():
        make_finished(app, job_id, status, 3600)
    recent = p.delay().id
    make_finished(app, recent, "completed", 10)
    pending = p.delay().id
    sql(app, "UPDATE dbqueue_jobs SET created_at = created_at - 7200 WHERE id = :id", id=pending)
    running = p.apply_async(queue="other").id
    orphan(app, app.AsyncResult(running))

    assert app.storage.prune(600, limit=2) == 2
    assert app.storage.prune(600) == 1
    assert app.storage.prune(600) == 0
    remaining = {job_id for (job_id,) in sql(app, "SELECT id FROM dbqueue_jobs")}
    assert remaining == {recent, pending, running}
    assert app.AsyncResult(old["completed"]).exists() is False


def test_exists_is_false_once_the_result_is_pruned(app: DBQueue) -> None:
    @app.task(name="p")
    def p() -> None:
        pass

    result = p.delay()
    make_finished(app, result.id, "completed", 3600)
    assert result.state == "SUCCESS"
    assert app.storage.prune(600) == 1
    assert app.AsyncResult(result.id).exists() is False
    assert result.exists() is False


def test_worker_prunes_results_older_than_result_expires(make_app, db_url: str, run_worker) -> None:
    app = make_app(db_url, result_expires=600, result_prune_interval=0.2)

    @app.task(name="p")
    def p() -> int:
        return 1

    old, recent = p.delay(), p.delay()
    pending = p.apply_async(queue="nobody-listens")
    make_finished(app, old.id, "completed", 3600)
    make_finished(app, recent.id, "completed", 10)
    run_worker(app)
    wait_until(
        lambda: app.storage.get_job(old.id) is None,
        timeout=JOB_TIMEOUT,
        message="old result never pruned",
    )
    assert app.AsyncResult(old.id).exists() is False
    assert recent.exists() and pending.exists()
    assert job(app, pending.id)["status"] == "pending"
