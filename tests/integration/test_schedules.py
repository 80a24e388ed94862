"""Schedules on SQLite, PostgreSQL and MariaDB: registration, the fire claim (exactly one job
per fire time, in the claim's transaction), catch-up, enable/disable, and a worker with -B."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dbqueue import DBQueue, ScheduleError, daily, every, signals
from dbqueue.schedules.entries import collect, define
from dbqueue.storage.schedules import ScheduleStore
from dbqueue.worker.beat import Beat, job_id
from tests.integration.helpers import JOB_TIMEOUT, sql
from tests.support.polling import wait_until


def scheduled_jobs(app: DBQueue, task: str = "sched.tick") -> list[dict[str, Any]]:
    rows = sql(
        app,
        "SELECT id, run_at, expires_at, options, status, queue FROM dbqueue_jobs "
        "WHERE task = :task ORDER BY run_at",
        task=task,
    )
    keys = ("id", "run_at", "expires_at", "options", "status", "queue")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def row_of(app: DBQueue, name: str) -> dict[str, Any]:
    (row,) = [r for r in ScheduleStore(app.storage).all() if r["name"] == name]
    return row


def make_due(app: DBQueue, name: str, seconds_ago: float = 0.1) -> float:
    """Move a schedule's cursor to just before now (as if its fire time had come)."""
    due = app.storage.now() - seconds_ago
    sql(app, "UPDATE dbqueue_schedules SET next_fire_at = :t WHERE name = :n", t=due, n=name)
    return due


@pytest.fixture
def sched_app(app: DBQueue) -> DBQueue:
    @app.task(name="sched.tick")
    def tick(n: int = 0) -> int:
        return n

    return app


def test_registration_creates_updates_and_leaves_alone(sched_app: DBQueue) -> None:
    app = sched_app
    app.schedule("sched.tick", daily(9, 30, timezone="Europe/Berlin"), kwargs={"n": 1}, name="r")
    store = ScheduleStore(app.storage)
    (definition,) = [define(app, e) for e in collect(app)]
    assert store.register(definition) in ("created", "unchanged")
    row = row_of(app, "r")
    assert row["enabled"] is True
    assert row["kind"] == "cron"
    assert row["expression"] == "30 9 * * *"
    assert row["timezone"] == "Europe/Berlin"
    assert row["kwargs"] == {"n": 1}
    assert row["next_fire_at"] == daily(9, 30, timezone="Europe/Berlin").next_after(
        row["created_at"]
    )
    assert row["last_fire_at"] is None
    cursor = row["next_fire_at"]

    assert store.register(definition) == "unchanged"
    assert row_of(app, "r")["updated_at"] == row["updated_at"]

    app.schedule("sched.tick", daily(9, 30, timezone="Europe/Berlin"), kwargs={"n": 2}, name="r")
    (changed_args,) = [define(app, e) for e in collect(app)]
    assert store.register(changed_args) == "updated"
    assert row_of(app, "r")["kwargs"] == {"n": 2}
    assert row_of(app, "r")["next_fire_at"] == cursor, "new arguments keep the fire cursor"

    store.set_enabled("r", False)
    app.schedule("sched.tick", every(60), kwargs={"n": 2}, name="r")
    (changed_timing,) = [define(app, e) for e in collect(app)]
    assert store.register(changed_timing) == "updated"
    row = row_of(app, "r")
    assert row["expression"] == "every 1m"
    assert row["next_fire_at"] != cursor
    assert row["next_fire_at"] % 60 == 0
    assert row["enabled"] is False, "a redeploy must not re-enable what an operator disabled"


def test_each_fire_time_is_claimed_once_with_its_job(sched_app: DBQueue, make_app) -> None:
    app = sched_app
    app.schedule("sched.tick", every(5), args=(7,), name="five", expires=30, priority=4)
    Beat(app).setup()
    other = make_app(app.broker_url())
    due = make_due(app, "five")
    mine, theirs = ScheduleStore(app.storage), ScheduleStore(other.storage)
    (state_a,), now = mine.states(["five"])
    (state_b,), _ = theirs.states(["five"])
    assert state_a.version == state_b.version
    fire_at, next_at = due, every(5).next_after(due)
    job = Beat(app)._job(state_a, fire_at, now)
    assert theirs.fire(state_b, fire_at, next_at, Beat(other)._job(state_b, fire_at, now))
    assert not mine.fire(state_a, fire_at, next_at, job), "a stale version must lose"
    (stored,) = scheduled_jobs(app)
    assert stored["id"] == job_id("five", fire_at)
    assert stored["run_at"] == pytest.approx(fire_at)
    assert stored["expires_at"] == pytest.approx(now + 30, abs=0.01)
    assert json.loads(stored["options"])["headers"] == {"periodic_task_name": "five"}
    assert app.storage.get_job(stored["id"])["priority"] == 4
    row = row_of(app, "five")
    assert row["next_fire_at"] == next_at
    assert row["last_fire_at"] == pytest.approx(fire_at)
    assert row["last_job_id"] == stored["id"]
    assert row["total_run_count"] == 1


def test_racing_schedulers_enqueue_one_job_per_fire_time(sched_app: DBQueue, make_app) -> None:
    app = sched_app
    names = [f"race{n}" for n in range(5)]
    for name in names:
        app.schedule("sched.tick", every(3600), name=name)
    Beat(app).setup()
    racers = [make_app(app.broker_url()) for _ in range(6)]
    beats = [Beat(racer) for racer in racers]
    for beat in beats:
        beat.entries = {e.name: e for e in collect(app)}
    for name in names:
        make_due(app, name)
    barrier = threading.Barrier(len(beats))

    def tick(beat: Beat) -> float:
        barrier.wait(timeout=JOB_TIMEOUT)
        return beat.tick()

    with ThreadPoolExecutor(len(beats)) as pool:
        list(pool.map(tick, beats))
    jobs = scheduled_jobs(app)
    assert len(jobs) == len(names), "all due at once: one batch, one job each"
    assert {json.loads(j["options"])["headers"]["periodic_task_name"] for j in jobs} == set(names)
    assert all(row_of(app, name)["total_run_count"] == 1 for name in names)


def test_a_failed_enqueue_rolls_the_claim_back(sched_app: DBQueue) -> None:
    app = sched_app
    app.schedule("sched.tick", every(1), name="fragile")
    Beat(app).setup()
    due = make_due(app, "fragile")
    store = ScheduleStore(app.storage)
    (state,), now = store.states(["fragile"])
    job = Beat(app)._job(state, due, now)

    def explode(_: Any) -> None:
        raise RuntimeError("insert failed")

    with pytest.raises(RuntimeError, match="insert failed"):
        store.fire(state, due, due + 1, job, explode)
    assert scheduled_jobs(app) == []
    row = row_of(app, "fragile")
    assert row["next_fire_at"] == pytest.approx(due)
    assert row["total_run_count"] == 0
    assert store.fire(state, due, due + 1, job), "the same fire time can be claimed again"
    assert len(scheduled_jobs(app)) == 1


def test_nothing_fires_on_boot_unless_due(sched_app: DBQueue) -> None:
    app = sched_app
    app.schedule("sched.tick", daily(3), name="nightly")
    for _ in range(2):  # two boots
        beat = Beat(app, max_interval=5.0)
        beat.setup()
        assert beat.tick() == 5.0
    assert scheduled_jobs(app) == []


@pytest.mark.parametrize("catch_up", ["one", "skip"])
def test_catch_up_after_a_stop(sched_app: DBQueue, catch_up: str) -> None:
    app = sched_app
    app.conf.beat_misfire_grace_time = 2.0
    app.schedule("sched.tick", every(1), name="secondly", catch_up=catch_up)
    app.schedule("sched.tick", daily(3), name="nightly", catch_up=catch_up)
    beat = Beat(app)
    beat.setup()
    missed = make_due(app, "secondly", seconds_ago=3600)  # down for an hour
    make_due(app, "nightly", seconds_ago=6 * 3600)
    beat.tick()
    jobs = scheduled_jobs(app)
    expected = 2 if catch_up == "one" else 0
    assert len(jobs) == expected
    if expected:
        assert jobs[0]["run_at"] == pytest.approx(missed - 6 * 3600 + 3600)
        assert jobs[1]["run_at"] == pytest.approx(missed)
    now = app.storage.now()
    assert row_of(app, "secondly")["next_fire_at"] > now - 1
    assert row_of(app, "nightly")["next_fire_at"] > now
    # Then it carries on at the normal pace: one job per second.
    wait_until(
        lambda: beat.tick() is not None and len(scheduled_jobs(app)) >= expected + 2,
        timeout=JOB_TIMEOUT,
        interval=0.05,
    )
    later = [j["run_at"] for j in scheduled_jobs(app)[expected:]]
    assert [b - a for a, b in itertools.pairwise(later)] == [1.0] * (len(later) - 1)


def test_disable_and_enable(sched_app: DBQueue) -> None:
    app = sched_app
    app.schedule("sched.tick", every(1), name="paused")
    beat = Beat(app, max_interval=3.0)
    beat.setup()
    store = ScheduleStore(app.storage)
    assert store.set_enabled("paused", False)["enabled"] is True
    make_due(app, "paused", seconds_ago=600)
    assert beat.tick() == 3.0
    assert scheduled_jobs(app) == []
    before = app.storage.now()
    store.set_enabled("paused", True)
    assert row_of(app, "paused")["next_fire_at"] > before, "the disabled time is not caught up"
    wait_until(
        lambda: beat.tick() is not None and scheduled_jobs(app), timeout=JOB_TIMEOUT, interval=0.05
    )
    assert all(j["run_at"] > before for j in scheduled_jobs(app))
    with pytest.raises(ScheduleError, match=r"no schedule named 'nope'.*'paused'"):
        store.set_enabled("nope", False)


def test_remove(sched_app: DBQueue) -> None:
    app = sched_app
    app.schedule("sched.tick", every(60), name="gone")
    Beat(app).setup()
    store = ScheduleStore(app.storage)
    store.remove("gone")
    assert store.all() == []
    with pytest.raises(ScheduleError, match="no schedule named 'gone'"):
        store.remove("gone")


def test_a_unique_key_keeps_one_live_job(sched_app: DBQueue) -> None:
    app = sched_app
    app.schedule("sched.tick", every(1), name="one-at-a-time", unique_key="tick-lock")
    beat = Beat(app)
    beat.setup()
    for _ in range(3):
        make_due(app, "one-at-a-time")
        beat.tick()
    assert len(scheduled_jobs(app)) == 1, "the later fires met the live job's unique key"
    assert row_of(app, "one-at-a-time")["total_run_count"] == 3


def test_publish_signals_fire_for_the_winner_only(
    sched_app: DBQueue, make_app, connect_signal: Callable[..., None]
) -> None:
    app = sched_app
    app.schedule("sched.tick", every(3600), kwargs={"n": 3}, name="traced")
    Beat(app).setup()
    seen: list[dict[str, Any]] = []

    def before(sender: str, headers: dict[str, Any], body: Any, **_: Any) -> None:
        seen.append({"task": sender, "body": body, "headers": dict(headers)})
        headers["trace_id"] = "abc"

    connect_signal(signals.before_task_publish, before)
    beats = []
    for _ in range(3):
        other = make_app(app.broker_url())
        other.conf.beat_schedule = dict(app.conf.beat_schedule)
        beat = Beat(other)
        beat.entries = {e.name: e for e in collect(other)}
        beats.append(beat)
    make_due(app, "traced")
    for beat in beats:
        beat.tick()
    (job,) = scheduled_jobs(app)
    assert len(seen) == 1
    assert seen[0]["task"] == "sched.tick"
    assert seen[0]["body"][1] == {"n": 3}
    assert seen[0]["headers"]["id"] == job["id"]
    assert json.loads(job["options"])["headers"]["trace_id"] == "abc"


def test_a_worker_with_beat_runs_the_scheduled_jobs(app: DBQueue, run_worker) -> None:
    seen: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    @app.task(name="sched.seen", bind=True)
    def seen_task(self: Any, n: int) -> int:
        with lock:
            seen.append((n, dict(self.request.headers or {})))
        return n

    app.schedule(seen_task, every(1), args=(5,), name="every-second")
    worker = run_worker(app, beat=True)
    wait_until(lambda: len(seen) >= 3, timeout=JOB_TIMEOUT, message="scheduled jobs never ran")
    worker.stop()
    assert {n for n, _ in seen} == {5}
    assert all(headers["periodic_task_name"] == "every-second" for _, headers in seen)
    run_ats = [j["run_at"] for j in scheduled_jobs(app, "sched.seen")]
    assert [b - a for a, b in itertools.pairwise(run_ats)] == [1.0] * (len(run_ats) - 1)
    assert worker.worker.beat is not None
    assert worker.worker.beat._thread is not None
    assert not worker.worker.beat._thread.is_alive(), "the worker stops its scheduler"


def test_a_worker_with_a_broken_schedule_does_not_start(app: DBQueue, run_worker) -> None:
    @app.task(name="sched.real")
    def real() -> None:
        pass

    app.conf.beat_schedule = {"typo": {"task": "sched.reall", "schedule": 5}}
    handle = run_worker(app, beat=True, ready=False)
    handle.thread.join(JOB_TIMEOUT)
    assert isinstance(handle.error, ScheduleError)
    assert "task 'sched.reall' is not registered" in str(handle.error)


def test_a_long_crontab_is_stored(sched_app: DBQueue) -> None:
    from dbqueue import crontab

    every_other = crontab(
        minute=set(range(59)), hour=set(range(23)), day_of_month=set(range(1, 31))
    )
    assert len(every_other.expression) > 255
    app = sched_app
    app.schedule("sched.tick", every_other, name="long")
    Beat(app).setup()
    assert row_of(app, "long")["expression"] == every_other.expression
