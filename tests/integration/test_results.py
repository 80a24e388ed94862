"""``AsyncResult`` read from the job row: states, values, errors, waiting, revoke, forget."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from dbqueue import DBQueue, TaskNotFound, TaskRevokedError, TimeoutError
from tests.integration.helpers import JOB_TIMEOUT, job, settle, sql, wait_status


class QuotaExceeded(Exception):
    """A custom exception, rebuilt from its module path when a result is read."""


def test_pending_then_success_with_the_value(app: DBQueue, run_worker) -> None:
    @app.task(name="add")
    def add(x: int, y: int) -> dict:
        return {"sum": x + y, "items": [x, y]}

    result = add.delay(2, 3)
    assert result.state == "PENDING"
    assert result.exists() is True
    assert result.ready() is False
    assert result.result is None

    run_worker(app)
    assert result.get(timeout=JOB_TIMEOUT) == {"sum": 5, "items": [2, 3]}
    assert result.state == "SUCCESS"
    assert result.successful() and result.ready() and not result.failed()
    assert result.result == {"sum": 5, "items": [2, 3]}
    assert result.name == "add"
    assert result.retries == 0
    assert result.date_done is not None
    # A fresh handle reads the same row.
    again = app.AsyncResult(result.id)
    assert (again.state, again.result) == ("SUCCESS", {"sum": 5, "items": [2, 3]})
    row = job(app, result.id)
    assert row["status"] == "completed"
    assert row["finished_at"] >= row["started_at"] >= row["created_at"]


def test_state_is_started_while_running(app: DBQueue, run_worker) -> None:
    release = threading.Event()

    @app.task(name="blocker")
    def blocker() -> str:
        release.wait(JOB_TIMEOUT)
        return "released"

    result = blocker.delay()
    worker = run_worker(app)
    try:
        wait_status(app, result.id, "running")
        assert result.state == "STARTED"
        assert result.worker == worker.id
        assert result.ready() is False
    finally:
        release.set()
    assert result.get(timeout=JOB_TIMEOUT) == "released"


def test_failure_rebuilds_the_exception_and_keeps_the_traceback(app: DBQueue, run_worker):
    @app.task(name="explode")
    def explode(n: int) -> None:
        raise QuotaExceeded(f"quota {n} exceeded")

    @app.task(name="builtin_error")
    def builtin_error() -> None:
        {}["missing"]

    result = explode.delay(42)
    other = builtin_error.delay()
    run_worker(app)

    with pytest.raises(QuotaExceeded, match="quota 42 exceeded"):
        result.get(timeout=JOB_TIMEOUT)
    assert result.state == "FAILURE"
    assert result.failed() and result.ready() and not result.successful()
    assert isinstance(result.result, QuotaExceeded)
    assert "QuotaExceeded: quota 42 exceeded" in result.traceback
    assert "in explode" in result.traceback
    row = job(app, result.id)
    assert row["error_type"] == f"{__name__}.QuotaExceeded"
    assert row["attempt"] == 1

    with pytest.raises(KeyError):
        other.get(timeout=JOB_TIMEOUT)
    assert "KeyError" in other.traceback


def test_get_propagate_false_returns_the_exception(app: DBQueue, run_worker) -> None:
    @app.task(name="fails")
    def fails() -> None:
        raise ValueError("no good")

    result = fails.delay()
    run_worker(app)
    error = result.get(timeout=JOB_TIMEOUT, propagate=False)
    assert isinstance(error, ValueError)
    assert str(error) == "no good"


def test_get_times_out_on_a_job_that_never_runs(app: DBQueue) -> None:
    @app.task(name="never")
    def never() -> None:
        pass

    result = never.apply_async(queue="nobody-listens")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=result.id):
        result.get(timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 3.0
    assert result.state == "PENDING"


def test_unknown_id_is_pending_but_does_not_exist(app: DBQueue) -> None:
    unknown = app.AsyncResult(str(uuid.uuid4()))
    assert unknown.state == "PENDING"
    assert unknown.exists() is False
    assert unknown.result is None
    assert unknown.ready() is False

    outcome: dict = {}

    def wait() -> None:
        started = time.monotonic()
        try:
            unknown.get()  # no timeout: must still return at once
        except BaseException as error:
            outcome["error"] = error
        outcome["elapsed"] = time.monotonic() - started

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(10)
    assert not waiter.is_alive(), "get() on an unknown id waited instead of raising"
    assert isinstance(outcome["error"], TaskNotFound)
    assert unknown.id in str(outcome["error"])
    assert outcome["elapsed"] < 2.0


def test_revoke_pending_job_never_runs(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="doomed")
    def doomed(tag: str) -> str:
        runs.add(tag)
        return tag

    revoked = doomed.delay("revoked")
    revoked.revoke()
    assert revoked.state == "REVOKED"
    assert revoked.ready() is True
    run_worker(app)
    marker = doomed.delay("marker")
    assert settle(marker) == "marker"
    with pytest.raises(TaskRevokedError):
        revoked.get(timeout=JOB_TIMEOUT)
    assert runs.items == ["marker"]
    row = job(app, revoked.id)
    assert (row["status"], row["attempt"], row["worker"]) == ("cancelled", 0, None)
    # Revoking again, or revoking a finished job, changes nothing.
    revoked.revoke()
    marker.revoke()
    assert marker.state == "SUCCESS"
    assert app.control.revoke([revoked.id, marker.id]) == 0


def test_revoke_of_a_running_job_discards_its_outcome(app: DBQueue, run_worker) -> None:
    release = threading.Event()

    @app.task(name="long")
    def long() -> str:
        release.wait(JOB_TIMEOUT)
        return "finished anyway"

    result = long.delay()
    run_worker(app)
    wait_status(app, result.id, "running")
    result.revoke()
    release.set()
    follow_up = long.delay()
    assert settle(follow_up) == "finished anyway"
    assert result.state == "REVOKED"
    assert job(app, result.id)["result"] is None


def test_forget_deletes_a_finished_job_only(app: DBQueue, run_worker) -> None:
    @app.task(name="value")
    def value(n: int) -> int:
        return n

    waiting = value.apply_async((0,), queue="nobody-listens")
    done = value.delay(1)
    run_worker(app)
    assert settle(done) == 1

    done.forget()
    assert done.exists() is False
    assert done.state == "PENDING"
    assert app.storage.get_job(done.id) is None
    with pytest.raises(TaskNotFound):
        done.get(timeout=1)

    waiting.forget()
    assert waiting.exists() is True
    assert waiting.state == "PENDING"


@pytest.mark.parametrize("where", ["task", "call"])
def test_ignore_result_stores_no_value_but_success(app: DBQueue, run_worker, where: str) -> None:
    @app.task(name="quiet", ignore_result=(where == "task"))
    def quiet() -> str:
        return "not stored"

    result = quiet.apply_async(ignore_result=True) if where == "call" else quiet.delay()
    run_worker(app)
    assert settle(result) is None
    assert result.state == "SUCCESS"
    row = job(app, result.id)
    assert (row["status"], row["result"]) == ("completed", None)


def test_task_ignore_result_setting_is_the_default(make_app, db_url: str, run_worker) -> None:
    app = make_app(db_url, task_ignore_result=True)

    @app.task(name="quiet")
    def quiet() -> str:
        return "not stored"

    result = quiet.delay()
    run_worker(app)
    settle(result)
    assert result.state == "SUCCESS"
    assert job(app, result.id)["result"] is None


def test_get_on_postgresql_wakes_on_notify(make_app, pg_url: str, run_worker) -> None:
    """get() returns well before its 1 s poll fallback: the worker's NOTIFY wakes it."""
    app = make_app(pg_url)
    finished: dict[str, float] = {}

    @app.task(name="timed", bind=True)
    def timed(self, pause: float) -> str:
        time.sleep(pause)
        finished[self.request.id] = time.monotonic()
        return "ok"

    run_worker(app)
    latencies = []
    for _ in range(3):
        # The waiter polls at once, then sleeps up to 1 s unless notified: finishing 0.3 s
        # into that sleep leaves ~0.7 s of latency without NOTIFY.
        result = timed.delay(0.3)
        assert result.get(timeout=JOB_TIMEOUT) == "ok"
        latencies.append(time.monotonic() - finished[result.id])
    assert sorted(latencies)[1] < 0.25, f"get() latencies after completion: {latencies}"


def test_result_of_a_job_retrying_is_its_last_error(app: DBQueue, run_worker) -> None:
    @app.task(name="flaky", bind=True, max_retries=3)
    def flaky(self) -> None:
        raise self.retry(exc=ConnectionError("upstream down"), countdown=60)

    result = flaky.delay()
    run_worker(app)
    wait_status(app, result.id, "retrying")
    assert result.state == "RETRY"
    assert result.ready() is False
    assert isinstance(result.result, ConnectionError)
    assert "upstream down" in str(result.result)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)
    assert sql(app, "SELECT attempt FROM dbqueue_jobs WHERE id = :id", id=result.id) == [(1,)]


@pytest.mark.parametrize(
    ("status", "error_type", "state"),
    [
        ("pending", None, "PENDING"),
        ("running", None, "STARTED"),
        ("retrying", "builtins.ValueError", "RETRY"),
        ("waiting", None, "STARTED"),
        ("paused", None, "PAUSED"),
        ("completed", None, "SUCCESS"),
        ("completed", "dbqueue.exceptions.Ignore", "IGNORED"),
        ("failed", "builtins.ValueError", "FAILURE"),
        ("failed", "dbqueue.exceptions.Reject", "REJECTED"),
        ("cancelled", "dbqueue.exceptions.TaskRevokedError", "REVOKED"),
    ],
)
def test_celery_state_is_a_view_over_the_status(
    app: DBQueue, status: str, error_type: str | None, state: str
) -> None:
    @app.task(name="viewed")
    def viewed() -> None:
        pass

    result = viewed.delay()
    sql(
        app,
        "UPDATE dbqueue_jobs SET status = :s, error_type = :e WHERE id = :id",
        s=status,
        e=error_type,
        id=result.id,
    )
    assert app.AsyncResult(result.id).state == state
