"""Pausing and resuming jobs and queues through the app API, with real in-process workers.

A second app on the same database (``other``) plays another process: it shares nothing with
the worker's app but the database, so whatever it asks reaches the worker through the
database (the control pass, or a notification on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dbqueue import DBQueue, fan_out, signals, sub
from dbqueue.exceptions import JobStateError, JobStopped, TaskNotFound
from tests.integration.helpers import JOB_TIMEOUT, job, settle, sql, wait_status
from tests.support.polling import wait_until


@pytest.fixture
def other(make_app, db_url: str) -> DBQueue:
    """Another app on the same database, standing for another process."""
    return make_app(db_url)


def test_a_paused_pending_job_waits_until_resumed(app: DBQueue, other: DBQueue, run_worker, runs):
    @app.task(name="work")
    def work(n: int) -> int:
        runs.add(n)
        return n * 2

    held = work.delay(1)
    assert other.pause_job(held.id) is True
    assert other.is_job_paused(held.id)
    assert held.state == "PAUSED"
    [paused] = other.paused_jobs()
    assert (paused.id, paused.task, paused.queue, paused.resume_status, paused.mode) == (
        held.id,
        "work",
        "celery",
        "pending",
        "graceful",
    )
    run_worker(app)
    assert settle(work.delay(2)) == 4, "the worker runs other jobs meanwhile"
    assert runs.items == [2]
    assert job(app, held.id)["status"] == "paused"

    assert other.resume_job(held.id) is True
    assert not other.is_job_paused(held.id)
    assert other.paused_jobs() == []
    assert settle(held) == 2
    row = job(app, held.id)
    assert (row["status"], row["attempt"], row["resume_status"]) == ("completed", 1, None)


def test_a_paused_retrying_job_resumes_retrying_at_its_time(app: DBQueue, run_worker, runs):
    @app.task(name="later", bind=True, max_retries=3)
    def later(self) -> str:
        runs.add(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(countdown=3600)
        return "second run"

    result = later.delay()
    run_worker(app)
    before = wait_status(app, result.id, "retrying")
    assert app.pause_job(result.id) is True
    row = job(app, result.id)
    assert (row["status"], row["resume_status"]) == ("paused", "retrying")
    assert app.paused_jobs()[0].resume_status == "retrying"
    assert app.resume_job(result.id) is True
    row = job(app, result.id)
    assert (row["status"], row["run_at"], row["attempt"]) == ("retrying", before["run_at"], 1)
    sql(app, "UPDATE dbqueue_jobs SET run_at = run_at - 3600 WHERE id = :id", id=result.id)
    assert settle(result) == "second run"
    assert runs.items == [0, 1]


def test_a_paused_fan_out_parent_stays_paused_and_resumes_to_collect(
    app: DBQueue, run_worker
) -> None:
    """A parent waiting for its children pauses; its children finishing do not un-pause it
    (the fan-out's wake matches waiting parents only: the seed's bug); resumed while a child
    is still out, it waits again; resumed once they are all done, it runs and collects them."""
    gate = threading.Event()
    runs: list[str] = []

    @app.task(name="slow_child")
    def slow_child(n: int) -> int:
        assert gate.wait(JOB_TIMEOUT)
        return n * 10

    @app.task(name="fanning_parent")
    def fanning_parent() -> list[int]:
        runs.append("run")
        return fan_out([sub(slow_child, 1), sub(slow_child, 2)]).values()

    try:
        run_worker(app, concurrency=4)
        result = fanning_parent.delay()
        wait_status(app, result.id, "waiting")
        assert app.pause_job(result.id) is True
        assert (job(app, result.id)["status"], job(app, result.id)["resume_status"]) == (
            "paused",
            "waiting",
        )
        assert app.resume_job(result.id) is True  # children still out: back to waiting
        assert job(app, result.id)["status"] == "waiting"
        assert app.pause_job(result.id) is True
        gate.set()
        wait_until(
            lambda: (
                sql(
                    app,
                    "SELECT COUNT(*) FROM dbqueue_jobs WHERE parent_id = :p AND status = :s",
                    p=result.id,
                    s="completed",
                )
                == [(2,)]
            ),
            timeout=JOB_TIMEOUT,
            message="both children completed",
        )
        assert job(app, result.id)["status"] == "paused"  # not woken while paused
        assert runs == ["run"]
        assert app.resume_job(result.id) is True
        assert result.get(timeout=JOB_TIMEOUT) == [10, 20]
        assert runs == ["run", "run"]
    finally:
        gate.set()


def test_pause_and_resume_say_what_is_wrong(app: DBQueue, run_worker) -> None:
    @app.task(name="quick")
    def quick() -> str:
        return "ok"

    with pytest.raises(TaskNotFound, match="no job with id 'nope'"):
        app.pause_job("nope")
    with pytest.raises(TaskNotFound, match="nope"):
        app.resume_job("nope")
    with pytest.raises(TaskNotFound, match="nope"):
        app.is_job_paused("nope")
    pending = quick.delay()
    with pytest.raises(ValueError, match=r"'graceful' or 'aggressive'.*'sometimes'"):
        app.pause_job(pending.id, mode="sometimes")
    assert app.resume_job(pending.id) is False, "a job that is not paused is left alone"
    assert app.pause_job(pending.id) is True
    assert app.pause_job(pending.id, mode="aggressive") is True, "pausing twice is harmless"
    assert app.resume_job(pending.id) is True
    run_worker(app)
    assert settle(pending) == "ok"
    with pytest.raises(JobStateError, match=rf"job {pending.id} is completed: only a pending"):
        app.pause_job(pending.id)
    with pytest.raises(JobStateError, match="completed: a finished job cannot be resumed"):
        app.resume_job(pending.id)
    assert job(app, pending.id)["status"] == "completed"


def test_a_paused_job_can_be_revoked_and_keeps_its_unique_key(app: DBQueue) -> None:
    @app.task(name="keyed")
    def keyed() -> None:
        pass

    first = keyed.apply_async(unique_key="only-one")
    assert app.pause_job(first.id)
    again = keyed.apply_async(unique_key="only-one")
    assert again.id == first.id, "a paused job still holds its unique key"
    assert app.control.revoke(first.id) == 1
    assert first.state == "REVOKED"
    with pytest.raises(JobStateError, match="cancelled"):
        app.resume_job(first.id)
    fresh = keyed.apply_async(unique_key="only-one")
    assert fresh.id != first.id, "a cancelled job no longer holds the key"


def test_paused_jobs_lists_one_queue(app: DBQueue) -> None:
    @app.task(name="anywhere")
    def anywhere() -> None:
        pass

    a = anywhere.apply_async(queue="a")
    b = anywhere.apply_async(queue="b")
    anywhere.apply_async(queue="a")
    app.pause_job(a.id)
    app.pause_job(b.id)
    assert [p.id for p in app.paused_jobs("a")] == [a.id]
    assert [p.id for p in app.paused_jobs("b")] == [b.id]
    assert {p.id for p in app.paused_jobs()} == {a.id, b.id}
    assert app.paused_jobs("c") == []


def blocking_task(app: DBQueue, name: str, gate: threading.Event, runs, **options: Any):
    """A task that records its run and waits for ``gate``, then retries once if asked."""

    @app.task(name=name, bind=True, **options)
    def blocked(self, retry_first: bool = False) -> str:
        runs.add(self.request.attempt)
        assert gate.wait(JOB_TIMEOUT), "the test never opened the gate"
        if retry_first and self.request.retries == 0:
            raise self.retry(countdown=0)
        return f"done in attempt {self.request.attempt}"

    return blocked


def test_graceful_pause_of_a_running_job_lets_it_finish(
    app: DBQueue, other: DBQueue, run_worker, runs
) -> None:
    gate = threading.Event()
    blocked = blocking_task(app, "graceful_finish", gate, runs)
    run_worker(app)
    result = blocked.delay()
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    assert other.pause_job(result.id) is False, "a running job pauses later"
    row = job(app, result.id)
    assert (row["status"], row["control"]) == ("running", "pause_graceful")
    assert not other.is_job_paused(result.id)
    gate.set()
    assert settle(result) == "done in attempt 1", "a run that succeeds completes"
    assert job(app, result.id)["status"] == "completed"
    assert runs.items == [1]


def test_graceful_pause_holds_the_retry_of_a_running_job(
    app: DBQueue, other: DBQueue, run_worker, runs, record_signals
) -> None:
    seen = record_signals(signals.job_paused)
    gate = threading.Event()
    blocked = blocking_task(app, "graceful_retry", gate, runs, max_retries=3)
    run_worker(app)
    result = blocked.delay(retry_first=True)
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    assert other.pause_job(result.id, "graceful") is False
    gate.set()
    row = wait_status(app, result.id, "paused")
    assert (row["resume_status"], row["attempt"], row["control"]) == (
        "retrying",
        1,
        "pause_graceful",
    )
    assert [p.mode for p in other.paused_jobs()] == ["graceful"]
    assert runs.items == [1], "the retry is held, not run"
    wait_until(lambda: seen, timeout=JOB_TIMEOUT, message="job_paused sent by the worker")
    assert (seen[0].sender, seen[0].kwargs) == (app, {"job_id": result.id, "mode": "graceful"})
    assert other.resume_job(result.id) is True
    assert job(app, result.id)["control"] is None
    assert settle(result) == "done in attempt 2"
    assert runs.items == [1, 2]


def test_resuming_before_the_pause_landed_withdraws_it(
    app: DBQueue, other: DBQueue, run_worker, runs
) -> None:
    gate = threading.Event()
    blocked = blocking_task(app, "withdrawn", gate, runs, max_retries=3)
    run_worker(app)
    result = blocked.delay(retry_first=True)
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    assert other.pause_job(result.id) is False
    assert other.resume_job(result.id) is True
    assert job(app, result.id)["control"] is None
    gate.set()
    assert settle(result) == "done in attempt 2", "the retry was not held"
    assert runs.items == [1, 2]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_aggressive_pause_stops_a_running_job_without_using_an_attempt(
    app: DBQueue, other: DBQueue, run_worker, runs, kind: str
) -> None:
    """The job sees JobStopped (or CancelledError), lands paused with its attempt given back,
    and its next run is attempt 1 again (with the durable layer: from its last checkpoint)."""
    stopped: list[str] = []
    release = threading.Event()

    if kind == "sync":

        @app.task(name="long_sync", bind=True, max_retries=0)
        def long(self) -> int:
            runs.add(self.request.attempt)
            try:
                while not release.is_set():
                    time.sleep(0.01)
            except JobStopped:
                stopped.append(self.request.id)
                raise
            return self.request.attempt

    else:

        @app.task(name="long_async", bind=True, max_retries=0)
        async def long(self) -> int:
            runs.add(self.request.attempt)
            try:
                while not release.is_set():
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                stopped.append(self.request.id)
                raise
            return self.request.attempt

    run_worker(app)
    result = long.delay()
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    assert other.pause_job(result.id, mode="aggressive") is False
    row = wait_status(app, result.id, "paused")
    assert (row["attempt"], row["resume_status"], row["worker"]) == (0, "pending", None)
    assert stopped == [result.id]
    assert len(runs) == 1
    assert [p.mode for p in other.paused_jobs()] == ["aggressive"]
    release.set()
    assert other.resume_job(result.id) is True
    assert settle(result) == 1, "the next run is attempt 1 again: no attempt was used up"
    assert runs.items == [1, 1]
    assert job(app, result.id)["attempt"] == 1


def test_pause_queue_is_an_upsert_that_concurrent_callers_share(
    app: DBQueue, make_app, db_url: str
) -> None:
    apps = [make_app(db_url) for _ in range(6)]
    barrier = threading.Barrier(len(apps))

    def pause(each: DBQueue) -> None:
        barrier.wait(timeout=30)
        each.pause_queue("shared")

    with ThreadPoolExecutor(len(apps)) as pool:
        list(pool.map(pause, apps))
    assert app.is_queue_paused("shared")
    assert app.paused_queues() == ["shared"]
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_queues WHERE name = 'shared'") == [(1,)]
    app.resume_queue("shared")
    app.resume_queue("never-paused")
    assert not app.is_queue_paused("shared")
    assert app.paused_queues() == []
    with pytest.raises(ValueError, match="non-empty string"):
        app.pause_queue("")


def test_a_paused_queue_accepts_jobs_but_no_worker_claims_them(
    app: DBQueue, other: DBQueue, run_worker, runs, record_signals
) -> None:
    seen = record_signals(signals.queue_paused, signals.queue_resumed)

    @app.task(name="queued")
    def queued(n: int) -> int:
        runs.add(n)
        return n

    other.pause_queue("slow")
    run_worker(app, queues="slow,fast")
    parked = [queued.apply_async((n,), queue="slow") for n in range(3)]
    assert settle(queued.apply_async((9,), queue="fast")) == 9
    assert [job(app, r.id)["status"] for r in parked] == ["pending"] * 3
    assert runs.items == [9]
    other.resume_queue("slow")
    assert [settle(r) for r in parked] == [0, 1, 2]
    assert [s.signal for s in seen] == ["queue_paused", "queue_resumed"]
    assert seen[0].kwargs == {"queue": "slow"}


def test_a_running_job_finishes_when_its_queue_pauses(
    app: DBQueue, other: DBQueue, run_worker, runs
) -> None:
    gate = threading.Event()
    blocked = blocking_task(app, "in_paused_queue", gate, runs)

    @app.task(name="sentinel")
    def sentinel() -> str:
        return "claimed"

    run_worker(app, queues="q,other")
    result = blocked.apply_async(queue="q")
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    other.pause_queue("q")
    follower = blocked.apply_async(queue="q")
    gate.set()
    assert settle(result) == "done in attempt 1"
    # One claim covers both queues: once the sentinel ran, the follower was passed over.
    assert settle(sentinel.apply_async(queue="other")) == "claimed"
    assert job(app, follower.id)["status"] == "pending"
    other.resume_queue("q")
    assert settle(follower) == "done in attempt 1"
