"""Retries and the tracer's other endings, through a real worker: self.retry, autoretry_for,
NoRetry, RetryAfter, Ignore, Reject, time limits and async tasks."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from dbqueue import (
    DBQueue,
    Ignore,
    NoRetry,
    Reject,
    RetryAfter,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from dbqueue.exceptions import Reject as RejectError
from tests.integration.helpers import JOB_TIMEOUT, job, settle, sql, wait_status
from tests.support.polling import wait_until


def make_retry_due(app: DBQueue, job_id: str) -> None:
    """Skip the wait of a job in retrying status: make it due now."""
    changed = sql(
        app,
        "UPDATE dbqueue_jobs SET run_at = run_at - 3600 WHERE id = :id AND status = 'retrying'",
        id=job_id,
    )
    assert changed == 1


def test_max_retries_gives_exactly_n_plus_one_runs(app: DBQueue, db_url: str, run_worker):
    """Side effects are rows the task inserts through its own engine on the same database."""
    sql(app, "CREATE TABLE side_effects (job_id varchar(64) NOT NULL, attempt integer NOT NULL)")
    engine = create_engine(db_url, poolclass=NullPool)

    @app.task(name="stubborn", bind=True, max_retries=3)
    def stubborn(self) -> None:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO side_effects (job_id, attempt) VALUES (:j, :a)"),
                {"j": self.request.id, "a": self.request.retries},
            )
        raise self.retry(exc=ValueError(f"attempt {self.request.retries}"), countdown=0)

    try:
        result = stubborn.delay()
        run_worker(app)
        error = settle(result)
        assert isinstance(error, ValueError)
        assert str(error) == "attempt 3"
        assert result.state == "FAILURE"
        rows = sql(app, "SELECT attempt FROM side_effects WHERE job_id = :j", j=result.id)
        assert sorted(a for (a,) in rows) == [0, 1, 2, 3]
        row = job(app, result.id)
        assert (row["status"], row["attempt"]) == ("failed", 4)
        assert result.retries == 3
    finally:
        engine.dispose()


def test_max_retries_zero_runs_once(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="once", bind=True, max_retries=0)
    def once(self) -> None:
        runs.add()
        raise self.retry(exc=KeyError("k"), countdown=0)

    result = once.delay()
    run_worker(app)
    assert isinstance(settle(result), KeyError)
    assert len(runs) == 1


def test_per_call_max_retries_overrides_the_task(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="override", bind=True, max_retries=10)
    def override(self) -> None:
        runs.add()
        raise self.retry(exc=KeyError("k"), countdown=0)

    result = override.apply_async(max_retries=1)
    run_worker(app)
    assert isinstance(settle(result), KeyError)
    assert len(runs) == 2


def test_retrying_job_waits_in_retry_state_until_due(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="later", bind=True, max_retries=2)
    def later(self) -> str:
        runs.add(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(exc=ConnectionError("try later"), countdown=30)
        return "second time lucky"

    result = later.delay()
    run_worker(app)
    row = wait_status(app, result.id, "retrying")
    now = app.storage.now()
    assert 28.0 <= row["run_at"] - now <= 30.5
    assert result.state == "RETRY"
    assert row["error_type"] == "builtins.ConnectionError"
    assert "ConnectionError: try later" in row["traceback"]
    assert runs.items == [0]

    make_retry_due(app, result.id)
    assert settle(result) == "second time lucky"
    assert runs.items == [0, 1]
    row = job(app, result.id)
    assert (row["status"], row["attempt"], row["error_type"]) == ("completed", 2, None)


def test_retry_with_new_arguments(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="countdown", bind=True, max_retries=5)
    def countdown(self, n: int) -> str:
        runs.add(n)
        if n > 0:
            raise self.retry(args=(n - 1,), countdown=0)
        return "liftoff"

    result = countdown.delay(3)
    run_worker(app)
    assert settle(result) == "liftoff"
    assert runs.items == [3, 2, 1, 0]


def test_autoretry_for_with_exponential_backoff(app: DBQueue, run_worker, runs) -> None:
    @app.task(
        name="backoff",
        autoretry_for=(ConnectionError,),
        retry_backoff=True,
        retry_jitter=False,
        max_retries=2,
    )
    def backoff() -> None:
        raised_at = time.time()  # the database clock is this host's clock
        runs.add(raised_at)
        raise ConnectionError(f"run {len(runs)}")

    result = backoff.delay()
    run_worker(app)
    # Celery's countdowns: factor * 2 ** retries = 1 s, then 2 s.
    for attempt, countdown in ((1, 1.0), (2, 2.0)):
        row = wait_until(
            lambda a=attempt: (
                (r := job(app, result.id))["status"] == "retrying" and r["attempt"] == a and r
            ),
            timeout=JOB_TIMEOUT,
            interval=0.01,
        )
        waited = row["run_at"] - runs.items[attempt - 1]
        assert countdown - 0.05 <= waited <= countdown + 0.9, (attempt, waited)
        assert result.state == "RETRY"
        make_retry_due(app, result.id)
    error = settle(result)
    assert isinstance(error, ConnectionError)
    assert str(error) == "run 3"
    assert len(runs) == 3


def test_autoretry_for_ignores_other_exceptions(app: DBQueue, run_worker, runs) -> None:
    @app.task(
        name="picky",
        autoretry_for=(ConnectionError,),
        dont_autoretry_for=(ConnectionResetError,),
        retry_kwargs={"countdown": 0},
        max_retries=5,
    )
    def picky(kind: str) -> None:
        runs.add(kind)
        raise (ValueError if kind == "value" else ConnectionResetError)(kind)

    value = picky.delay("value")
    reset = picky.delay("reset")
    run_worker(app)
    assert isinstance(settle(value), ValueError)
    assert isinstance(settle(reset), ConnectionResetError)
    assert sorted(runs.items) == ["reset", "value"]


def test_no_retry_fails_at_once_even_under_autoretry(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="fatal", autoretry_for=(Exception,), retry_kwargs={"countdown": 0})
    def fatal() -> None:
        runs.add()
        raise NoRetry(ValueError("bad input, do not retry"))

    result = fatal.delay()
    run_worker(app)
    with pytest.raises(ValueError, match="bad input"):
        result.get(timeout=JOB_TIMEOUT)
    assert result.state == "FAILURE"
    assert len(runs) == 1
    assert job(app, result.id)["attempt"] == 1


def test_retry_after_retries_after_the_delay_and_counts(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="rate_limited", max_retries=2)
    def rate_limited() -> None:
        runs.add(time.monotonic())
        raise RetryAfter(0.2, ConnectionRefusedError("429 too many requests"))

    result = rate_limited.delay()
    run_worker(app)
    error = settle(result)
    assert isinstance(error, ConnectionRefusedError)
    assert "429" in str(error)
    assert result.state == "FAILURE"
    assert len(runs) == 3
    gaps = [b - a for a, b in zip(runs.items, runs.items[1:], strict=False)]
    assert all(gap >= 0.18 for gap in gaps), gaps
    assert job(app, result.id)["attempt"] == 3


def test_retry_after_state_and_run_at(app: DBQueue, run_worker) -> None:
    @app.task(name="slow_down", max_retries=5)
    def slow_down() -> None:
        raise RetryAfter(30, "busy")

    result = slow_down.delay()
    run_worker(app)
    row = wait_status(app, result.id, "retrying")
    assert 28.0 <= row["run_at"] - app.storage.now() <= 30.5
    assert result.state == "RETRY"


def test_ignore_records_ignored(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="skip")
    def skip() -> None:
        runs.add()
        raise Ignore()

    result = skip.delay()
    run_worker(app)
    assert settle(result) is None
    assert result.state == "IGNORED"
    assert result.ready() is True
    row = job(app, result.id)
    assert (row["status"], row["attempt"]) == ("completed", 1)
    assert len(runs) == 1


def test_reject_with_requeue_runs_again_and_gives_the_attempt_back(
    app: DBQueue, run_worker, runs
) -> None:
    @app.task(name="bounce", bind=True, max_retries=0)
    def bounce(self) -> str:
        seen = runs.add((self.request.retries, self.request.attempt))
        if seen == 1:
            raise Reject("not now", requeue=True)
        return "accepted"

    result = bounce.delay()
    run_worker(app)
    assert settle(result) == "accepted"
    assert runs.items == [(0, 1), (0, 1)]
    row = job(app, result.id)
    assert (row["status"], row["attempt"]) == ("completed", 1)


def test_reject_without_requeue_is_rejected(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="refuse", autoretry_for=(Exception,), retry_kwargs={"countdown": 0})
    def refuse() -> None:
        runs.add()
        raise Reject("malformed order", requeue=False)

    result = refuse.delay()
    run_worker(app)
    with pytest.raises(RejectError):
        result.get(timeout=JOB_TIMEOUT)
    assert result.state == "REJECTED"
    assert result.ready() is True
    row = job(app, result.id)
    assert row["status"] == "failed"
    assert "malformed order" in row["error"]
    assert len(runs) == 1


def spin(seconds: float) -> None:
    """Busy for ``seconds`` in short sleeps, so an async exception lands promptly."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_soft_time_limit_is_raised_inside_the_task(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="soft", soft_time_limit=0.3)
    def soft() -> str:
        started = time.monotonic()
        try:
            spin(JOB_TIMEOUT)
        except SoftTimeLimitExceeded:
            runs.add(time.monotonic() - started)
            return "cleaned up"
        return "never interrupted"

    result = soft.delay()
    run_worker(app)
    assert settle(result) == "cleaned up"
    assert result.state == "SUCCESS"
    assert 0.25 <= runs.items[0] < 5


def test_soft_time_limit_per_call_uncaught_fails(app: DBQueue, run_worker) -> None:
    @app.task(name="soft_call")
    def soft_call() -> None:
        spin(JOB_TIMEOUT)

    result = soft_call.apply_async(soft_time_limit=0.2)
    run_worker(app)
    assert isinstance(settle(result), SoftTimeLimitExceeded)
    assert job(app, result.id)["error_type"] == "dbqueue.exceptions.SoftTimeLimitExceeded"


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_hard_time_limit_fails_the_job_and_the_pool_goes_on(
    app: DBQueue, run_worker, pool: str
) -> None:
    @app.task(name="hard", time_limit=0.3)
    def hard() -> None:
        spin(JOB_TIMEOUT)

    @app.task(name="after")
    def after() -> str:
        return "pool still works"

    started = time.monotonic()
    result = hard.delay()
    run_worker(app, pool=pool, concurrency=1)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=JOB_TIMEOUT)
    assert time.monotonic() - started < 10
    assert result.state == "FAILURE"
    assert job(app, result.id)["error_type"] == "dbqueue.exceptions.TimeLimitExceeded"
    assert settle(after.delay()) == "pool still works"


def test_time_limit_settings_apply_to_every_task(make_app, db_url: str, run_worker) -> None:
    app = make_app(db_url, task_soft_time_limit=0.2, task_time_limit=5)

    @app.task(name="limited")
    def limited() -> str:
        try:
            spin(JOB_TIMEOUT)
        except SoftTimeLimitExceeded:
            return "soft limit from the settings"
        return "no limit"

    result = limited.delay()
    run_worker(app)
    assert settle(result) == "soft limit from the settings"


def test_async_task_runs_on_the_workers_event_loop(app: DBQueue, run_worker) -> None:
    seen: dict = {}

    @app.task(name="coro", bind=True)
    async def coro(self, x: int) -> int:
        await asyncio.sleep(0.01)
        seen["loop"] = asyncio.get_running_loop()
        seen["thread"] = threading.current_thread().name
        seen["id"] = self.request.id
        return x * 2

    result = coro.delay(21)
    worker = run_worker(app)
    assert settle(result) == 42
    assert result.state == "SUCCESS"
    assert seen["loop"] is worker.worker.loop_thread.loop
    assert seen["thread"] == "dbqueue-asyncio"
    assert seen["id"] == result.id


def test_async_tasks_run_concurrently_on_one_loop(app: DBQueue, run_worker) -> None:
    @app.task(name="nap")
    async def nap(n: int) -> int:
        await asyncio.sleep(0.5)
        return n

    run_worker(app, concurrency=10)
    started = time.monotonic()
    results = [nap.delay(n) for n in range(10)]
    assert [settle(r) for r in results] == list(range(10))
    assert time.monotonic() - started < 4.0


def test_async_task_soft_time_limit_ends_it(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="sleepy", soft_time_limit=0.3)
    async def sleepy() -> str:
        try:
            await asyncio.sleep(JOB_TIMEOUT)
        except asyncio.CancelledError:
            runs.add("cancelled")
            raise
        return "overslept"

    started = time.monotonic()
    result = sleepy.delay()
    run_worker(app)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=JOB_TIMEOUT)
    assert time.monotonic() - started < 10
    assert runs.items == ["cancelled"]
    assert job(app, result.id)["error_type"] == "dbqueue.exceptions.SoftTimeLimitExceeded"


def test_async_task_retry(app: DBQueue, run_worker, runs) -> None:
    @app.task(name="async_retry", bind=True, max_retries=2)
    async def async_retry(self) -> str:
        runs.add(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(countdown=0)
        return "third run"

    result = async_retry.delay()
    run_worker(app)
    assert settle(result) == "third run"
    assert runs.items == [0, 1, 2]


def test_naive_eta_means_the_app_timezone_for_apply_async_and_retry(
    make_app, db_url: str, run_worker
) -> None:
    """Celery's rule: a naive eta is in the app's timezone, for apply_async and for retry."""
    from zoneinfo import ZoneInfo

    zone = "Pacific/Kiritimati"  # UTC+14: a naive eta read as UTC would be 14 h off
    app = make_app(db_url, timezone=zone)

    @app.task(name="tz_retry", bind=True, max_retries=1)
    def tz_retry(self) -> None:
        local_now = dt.datetime.now(ZoneInfo(zone)).replace(tzinfo=None)
        raise self.retry(eta=local_now + dt.timedelta(seconds=60))

    local_now = dt.datetime.now(ZoneInfo(zone)).replace(tzinfo=None)
    scheduled = tz_retry.apply_async(eta=local_now + dt.timedelta(seconds=60), queue="later")
    assert 50 <= job(app, scheduled.id)["run_at"] - app.storage.now() <= 61

    result = tz_retry.delay()
    run_worker(app)
    row = wait_status(app, result.id, "retrying", "failed")
    assert row["status"] == "retrying", "the retry ran at once: the naive eta was read as UTC"
    print("DELTA", row["run_at"] - app.storage.now())
    assert 50 <= row["run_at"] - app.storage.now() <= 61
