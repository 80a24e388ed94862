"""Pausing workers (locally and through the database), stopping running jobs (cancel_job,
revoke(terminate=True)), and jobs claimed while a pause lands, with real in-process workers."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dbqueue import DBQueue, signals
from dbqueue.exceptions import JobStopped, WorkerNotFound
from tests.integration.helpers import JOB_TIMEOUT, job, settle, sql, wait_status
from tests.support.polling import wait_until


@pytest.fixture
def other(make_app, db_url: str) -> DBQueue:
    """Another app on the same database, standing for another process."""
    return make_app(db_url)


def stoppable_task(app: DBQueue, name: str, release: threading.Event, runs, stopped: list):
    """Records (attempt, worker) per run, loops until ``release``, notes a JobStopped."""

    @app.task(name=name, bind=True, max_retries=0)
    def loop(self) -> str:
        runs.add((self.request.attempt, self.request.hostname))
        try:
            while not release.is_set():
                time.sleep(0.01)
        except JobStopped:
            stopped.append(self.request.id)
            raise
        return self.request.hostname

    return loop


def test_graceful_pause_finishes_running_jobs_and_claims_no_more(
    app: DBQueue, run_worker, runs, record_signals
) -> None:
    seen = record_signals(signals.worker_paused, signals.worker_resumed)
    release, stopped = threading.Event(), []
    loop = stoppable_task(app, "graceful_loop", release, runs, stopped)

    @app.task(name="where", bind=True)
    def where(self) -> str:
        return self.request.hostname

    first = run_worker(app, hostname="first@test", concurrency=2)
    running = loop.delay()
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    first.worker.pause()
    assert first.worker.is_paused and first.worker.pause_mode == "graceful"
    assert sql(app, "SELECT pause_mode FROM dbqueue_workers WHERE name = 'first@test'") == [
        ("graceful",)
    ]
    assert first.worker.running_job_count == 1
    assert first.worker.wait_for_pause(0.2) is False, "the running job still runs"

    run_worker(app, hostname="second@test")
    assert {settle(where.delay()) for _ in range(5)} == {"second@test"}
    release.set()
    assert settle(running) == "first@test", "a graceful pause lets the running job finish"
    assert first.worker.wait_for_pause(JOB_TIMEOUT) is True
    assert first.worker.running_job_count == 0
    assert stopped == []

    first.worker.resume()
    assert not first.worker.is_paused
    assert [s.signal for s in seen if s.sender is first.worker] == [
        "worker_paused",
        "worker_resumed",
    ]
    assert seen[0].kwargs == {"mode": "graceful"}
    with pytest.raises(RuntimeError, match="is not paused"):
        first.worker.wait_for_pause(1)


def test_aggressive_pause_returns_running_jobs_to_the_queue(app: DBQueue, run_worker, runs):
    release, stopped = threading.Event(), []
    loop = stoppable_task(app, "aggressive_loop", release, runs, stopped)
    first = run_worker(app, hostname="first@test", concurrency=2)
    result = loop.delay()
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    first.worker.pause("aggressive")
    row = wait_status(app, result.id, "pending")
    assert (row["attempt"], row["worker"], row["resume_status"]) == (0, None, None)
    assert stopped == [result.id]
    assert first.worker.wait_for_pause(JOB_TIMEOUT)

    release.set()
    run_worker(app, hostname="second@test")
    assert settle(result) == "second@test", "another worker takes the job back"
    assert runs.items == [(1, "first@test"), (1, "second@test")], "no attempt was used up"


def test_a_worker_is_paused_and_resumed_through_the_database(
    app: DBQueue, other: DBQueue, run_worker, runs, record_signals
) -> None:
    seen = record_signals(signals.worker_paused, signals.worker_resumed)
    release, stopped = threading.Event(), []
    loop = stoppable_task(app, "remote_loop", release, runs, stopped)
    handle = run_worker(app, hostname="remote@test")
    worker = handle.worker
    result = loop.delay()
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")

    assert other.pause_worker("remote@test", "aggressive") == 1
    wait_until(lambda: worker.pause_mode == "aggressive", timeout=JOB_TIMEOUT, message="told")
    row = wait_status(app, result.id, "pending")
    assert row["attempt"] == 0
    assert stopped == [result.id]
    assert [s.kwargs for s in seen] == [{"mode": "aggressive"}]

    assert other.resume_worker(worker.id) == 1, "a worker is also found by its id"
    wait_until(lambda: not worker.is_paused, timeout=JOB_TIMEOUT, message="resumed")
    release.set()
    assert settle(result) == "remote@test"
    assert [s.signal for s in seen] == ["worker_paused", "worker_resumed"]

    with pytest.raises(WorkerNotFound, match="no registered worker is named 'ghost@test'"):
        other.pause_worker("ghost@test")
    with pytest.raises(ValueError, match="'graceful' or 'aggressive'"):
        other.pause_worker("remote@test", "now")


def test_a_paused_worker_stays_paused_when_it_registers_again(app: DBQueue, run_worker) -> None:
    handle = run_worker(app, hostname="again@test")
    handle.worker.pause()
    sql(app, "DELETE FROM dbqueue_workers WHERE name = 'again@test'")
    wait_until(
        lambda: (
            sql(app, "SELECT pause_mode FROM dbqueue_workers WHERE name = 'again@test'")
            == [("graceful",)]
        ),
        timeout=JOB_TIMEOUT,
        message="the heartbeat registered the worker again, paused",
    )
    assert handle.worker.is_paused


def test_a_control_pass_reading_before_a_local_pause_commits_does_not_undo_it(
    app: DBQueue, run_worker, record_signals
) -> None:
    """The control pass reads the worker's row while ``pause()`` is still writing it (so it
    reads "not paused"): the worker stays paused, and resumes nothing."""
    handle = run_worker(app, hostname="race@test")
    worker = handle.worker
    resumed = record_signals(signals.worker_resumed)
    storage = worker.storage
    write = storage.pause_worker

    def pass_before_the_write(worker_id: str, mode: str | None) -> None:
        worker.control.control_pass()
        write(worker_id, mode)

    storage.pause_worker = pass_before_the_write  # type: ignore[method-assign]
    try:
        worker.pause()
    finally:
        del storage.pause_worker
    assert worker.is_paused
    worker.control.control_pass()  # the row says paused by now
    assert worker.is_paused
    assert sql(app, "SELECT pause_mode FROM dbqueue_workers WHERE name = 'race@test'") == [
        ("graceful",)
    ]
    assert not resumed


def test_a_pause_whose_write_failed_is_written_by_the_next_control_pass(
    app: DBQueue, run_worker, record_signals
) -> None:
    handle = run_worker(app, hostname="unwritten@test")
    worker = handle.worker
    resumed = record_signals(signals.worker_resumed)
    storage = worker.storage

    def unreachable(worker_id: str, mode: str | None) -> None:
        raise ConnectionError("database unreachable")

    storage.pause_worker = unreachable  # type: ignore[method-assign]
    try:
        worker.pause()
        worker.control.control_pass()  # the write fails again; the stale row is not applied
        assert worker.is_paused
    finally:
        del storage.pause_worker
    worker.control.control_pass()  # written now
    assert sql(app, "SELECT pause_mode FROM dbqueue_workers WHERE name = 'unwritten@test'") == [
        ("graceful",)
    ]
    worker.control.control_pass()
    assert worker.is_paused
    assert not resumed


def test_cancel_job_stops_a_job_running_here(
    app: DBQueue, run_worker, runs, record_signals
) -> None:
    seen = record_signals(signals.task_revoked)
    release, stopped = threading.Event(), []
    loop = stoppable_task(app, "cancelled_loop", release, runs, stopped)

    @app.task(name="after")
    def after() -> str:
        return "still working"

    handle = run_worker(app, concurrency=1)
    result = loop.delay()
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    assert handle.worker.cancel_job(result.id) is True
    assert isinstance(settle(result), Exception)
    assert result.state == "REVOKED"
    wait_until(lambda: stopped, timeout=JOB_TIMEOUT, message="the job saw JobStopped")
    assert settle(after.delay()) == "still working", "the slot is free again"
    wait_until(lambda: seen, timeout=JOB_TIMEOUT, message="task_revoked sent")
    assert seen[0].kwargs["terminated"] is True
    assert seen[0].kwargs["request"].id == result.id
    elsewhere = after.apply_async(queue="elsewhere")
    assert handle.worker.cancel_job(elsewhere.id) is False, "not held here: only revoked"
    assert elsewhere.state == "REVOKED"


@pytest.mark.parametrize("terminate", [True, False], ids=["terminate", "revoke-only"])
def test_revoke_from_another_process(
    app: DBQueue, other: DBQueue, run_worker, runs, terminate: bool
) -> None:
    """terminate=True stops the running job; a plain revoke lets it run (Celery's rule) and
    discards its outcome."""
    release, stopped = threading.Event(), []
    finished: list[str] = []

    @app.task(name="revoked_loop", bind=True)
    def loop(self) -> str:
        runs.add(self.request.attempt)
        try:
            while not release.is_set():
                time.sleep(0.01)
        except JobStopped:
            stopped.append(self.request.id)
            raise
        finished.append(self.request.id)
        return "finished"

    run_worker(app, concurrency=1)
    result = loop.delay()
    wait_until(lambda: len(runs) == 1, timeout=JOB_TIMEOUT, message="the job started")
    other.AsyncResult(result.id).revoke(terminate=terminate)
    assert result.state == "REVOKED"
    if terminate:
        wait_until(lambda: stopped, timeout=JOB_TIMEOUT, message="the job was stopped")
        assert finished == []
    else:
        release.set()
        wait_until(lambda: finished, timeout=JOB_TIMEOUT, message="the job ran to its end")
        assert stopped == []
    row = job(app, result.id)
    assert (row["status"], row["result"]) == ("cancelled", None)


@pytest.mark.parametrize("level", ["worker", "job", "queue"])
def test_a_job_claimed_while_a_graceful_pause_lands_does_not_run(
    app: DBQueue, run_worker, runs, connect_signal, level: str
) -> None:
    """The pause is made between the claim and the start (in task_received): the job is
    released unstarted, its attempt given back."""

    @app.task(name="claimed", bind=True)
    def claimed(self) -> None:
        runs.add(self.request.id)

    handle = run_worker(app, hostname="gate@test")

    def pause_on_receipt(sender: Any, request: Any, **_: Any) -> None:
        if level == "worker":
            sender.pause()
        elif level == "job":
            app.pause_job(request.id)
        else:
            app.pause_queue(request.queue)

    connect_signal(signals.task_received, pause_on_receipt)
    result = claimed.delay()
    expected = "paused" if level == "job" else "pending"
    row = wait_status(app, result.id, expected)
    assert (row["attempt"], row["worker"]) == (0, None)
    assert runs.items == []
    wait_until(
        lambda: handle.worker.running_job_count == 0, timeout=JOB_TIMEOUT, message="slot freed"
    )
