"""The scheduler's decisions with a frozen clock: when it sleeps, what it fires, what a catch-up
fires, and the schedule rows it reads and writes replaced by an in-memory store."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from zoneinfo import ZoneInfo

import pytest

from dbqueue import daily, every
from dbqueue.schedules import Schedule, cron
from dbqueue.schedules.entries import ScheduleEntry
from dbqueue.storage.schedules import ScheduleState
from dbqueue.worker import beat as beat_module
from dbqueue.worker.beat import Beat, job_id, plan

BERLIN = "Europe/Berlin"


def at(zone: str, *fields: int) -> float:
    return dt.datetime(*fields, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


class FrozenStore:
    """The schedules table of one schedule, in memory, read on a clock the test moves."""

    def __init__(self, schedule: Schedule, now: float, catch_up: str = "one") -> None:
        self.now = now
        self.state = ScheduleState(
            name="job",
            task="t.job",
            queue="celery",
            spec=json.dumps(schedule.spec()),
            payload=b"[[], {}]",
            content_type="application/json",
            job={"priority": 0, "max_retries": 3, "expires": None, "countdown": 0.0},
            catch_up=catch_up,
            enabled=True,
            next_fire_at=schedule.next_after(now),
            version=0,
        )
        self.fired: list[tuple[float, float]] = []  # (fire time, clock when fired)
        self.skips = 0
        self.reads = 0

    def states(self, names):
        self.reads += 1
        return [ScheduleState(**vars(self.state))], self.now

    def fire_many(self, claims, before_insert=None):
        (claim,) = claims
        if claim.state.version != self.state.version or not self.state.enabled:
            return []
        self.state.version += 1
        self.state.next_fire_at = claim.next_fire_at
        if claim.job is None:
            self.skips += 1
        else:
            assert claim.job.run_at == claim.fire_at
            self.fired.append((claim.fire_at, self.now))
        return [claim]


def make_beat(monkeypatch, make_app, store: FrozenStore, schedule: Schedule, **settings) -> Beat:
    app = make_app(**settings)
    monkeypatch.setattr(Beat, "store", property(lambda self: store))
    beat = Beat(app)
    beat.entries = {"job": ScheduleEntry("job", "t.job", schedule)}
    return beat


def run_until(beat: Beat, store: FrozenStore, until: float) -> list[float]:
    """Drive the loop: tick, then move the frozen clock by the pause it asked for."""
    pauses = []
    while store.now < until:
        pause = beat.tick()
        assert 0 <= pause <= beat.max_interval
        pauses.append(pause)
        store.now += pause
        assert len(pauses) < 100_000, "the loop never sleeps"
    return pauses


def test_plan_on_time_late_and_after_downtime() -> None:
    ten = every(10)
    assert plan(ten, 100.0, 100.0, "one", 10.0) == (100.0, 110.0)
    assert plan(ten, 100.0, 104.0, "skip", 10.0) == (100.0, 110.0)
    # A slow scheduler (within the grace time) fires each missed fire time in turn.
    assert plan(ten, 100.0, 109.0, "one", 10.0) == (100.0, 110.0)
    # Downtime: one catch-up run, then the next fire time after now; or none with skip.
    assert plan(ten, 100.0, 1000.0, "one", 10.0) == (100.0, 1010.0)
    assert plan(ten, 100.0, 1000.0, "skip", 10.0) == (None, 1010.0)
    day = daily(9)
    nine = at("UTC", 2024, 5, 1, 9)
    assert plan(day, nine, nine + 3600, "one", 10.0) == (nine, nine + 86400)
    assert plan(day, nine, nine + 3600, "skip", 10.0) == (None, nine + 86400)


def test_job_ids_are_the_same_everywhere_and_unique_per_fire_time() -> None:
    assert job_id("report", 1000.0) == job_id("report", 1000.0)
    assert job_id("report", 1000.0) != job_id("report", 1001.0)
    assert job_id("report", 1000.0) != job_id("other", 1000.0)


def test_sleeps_until_the_fire_time_instead_of_polling(monkeypatch, make_app) -> None:
    schedule = every(60)
    start = 1_700_000_010.0
    store = FrozenStore(schedule, start)
    beat = make_beat(monkeypatch, make_app, store, schedule, beat_max_loop_interval=300.0)
    pauses = run_until(beat, store, start + 600)
    fired = [fire for fire, _ in store.fired]
    assert fired == [1_700_000_040.0 + 60 * n for n in range(10)]  # multiples of 60
    assert all(when >= fire for fire, when in store.fired), "fired before its time"
    assert all(when - fire < 0.01 for fire, when in store.fired), "fired late"
    assert len(pauses) <= 2 * len(fired) + 2, "one read to sleep, one to fire per fire time"
    assert max(pauses) == pytest.approx(60.0, abs=0.01)


def test_max_loop_interval_bounds_the_sleep(monkeypatch, make_app) -> None:
    schedule = daily(9)
    start = at("UTC", 2024, 5, 1, 10)
    store = FrozenStore(schedule, start)
    beat = make_beat(monkeypatch, make_app, store, schedule, beat_max_loop_interval=7.0)
    assert beat.tick() == 7.0


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (
            (2024, 3, 29, 12),
            ["2024-03-30T02:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00"],
        ),
        (
            (2024, 10, 25, 12),
            ["2024-10-26T02:30:00+02:00", "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"],
        ),
    ],
)
def test_a_frozen_clock_through_dst_fires_once_a_day(monkeypatch, make_app, start, expected):
    schedule = daily(2, 30, timezone=BERLIN)
    now = at(BERLIN, *start)
    store = FrozenStore(schedule, now)
    beat = make_beat(monkeypatch, make_app, store, schedule, beat_max_loop_interval=3600.0)
    run_until(beat, store, now + 3 * 86400)
    moments = [dt.datetime.fromtimestamp(f, ZoneInfo(BERLIN)).isoformat() for f, _ in store.fired]
    assert moments == expected


def test_a_frozen_clock_through_the_fold_keeps_an_hourly_job_hourly(monkeypatch, make_app):
    schedule = cron("0 * * * *", timezone="America/New_York")
    now = at("America/New_York", 2024, 11, 3, 0, 30)
    store = FrozenStore(schedule, now)
    beat = make_beat(monkeypatch, make_app, store, schedule, beat_max_loop_interval=600.0)
    run_until(beat, store, now + 4 * 3600)
    fired = [f for f, _ in store.fired]
    assert len(fired) == 4
    assert [b - a for a, b in itertools.pairwise(fired)] == [3600.0] * 3


@pytest.mark.parametrize(("catch_up", "catch_up_runs"), [("one", 1), ("skip", 0)])
def test_downtime_fires_one_catch_up_run_or_none(monkeypatch, make_app, catch_up, catch_up_runs):
    schedule = every(60)
    start = 1_700_000_000.0
    store = FrozenStore(schedule, start, catch_up=catch_up)
    beat = make_beat(monkeypatch, make_app, store, schedule, beat_misfire_grace_time=10.0)
    run_until(beat, store, start + 120)
    assert len(store.fired) == 2
    store.now += 3 * 3600  # the scheduler was down for three hours
    missed_from = store.state.next_fire_at
    beat.tick()  # wakes: fires (or skips) once, and moves on
    assert len(store.fired) == 2 + catch_up_runs
    if catch_up_runs:
        assert store.fired[-1][0] == missed_from
    assert store.state.next_fire_at == schedule.next_after(store.now)
    later = store.now
    run_until(beat, store, later + 180)
    assert [f for f, _ in store.fired[2 + catch_up_runs :]] == [
        schedule.next_after(later) + 60 * n for n in range(3)
    ]


def test_a_slow_scheduler_fires_every_fire_time_it_is_behind(monkeypatch, make_app) -> None:
    schedule = every(1)
    start = 1_700_000_000.0
    store = FrozenStore(schedule, start)
    beat = make_beat(monkeypatch, make_app, store, schedule, beat_misfire_grace_time=10.0)
    store.now += 5.5  # a stall of 5.5 s (GC, a loaded machine): within the grace time
    for _ in range(10):
        beat.tick()
    assert [f for f, _ in store.fired] == [start + n for n in range(1, 6)]


def test_disabled_schedules_do_not_fire(monkeypatch, make_app) -> None:
    schedule = every(1)
    store = FrozenStore(schedule, 1_700_000_000.0)
    store.state.enabled = False
    beat = make_beat(monkeypatch, make_app, store, schedule, beat_max_loop_interval=5.0)
    store.now += 30
    assert beat.tick() == 5.0
    assert store.fired == []


def test_a_lost_race_reads_again_and_fires_nothing(monkeypatch, make_app) -> None:
    schedule = every(1)
    store = FrozenStore(schedule, 1_700_000_000.0)
    beat = make_beat(monkeypatch, make_app, store, schedule)
    store.now += 1.0
    original = store.states

    def stale(names):
        states, now = original(names)
        store.state.version += 1  # another scheduler claimed it meanwhile
        store.state.next_fire_at += 1
        return states, now

    monkeypatch.setattr(store, "states", stale)
    assert beat.tick() == 0.0  # fired nothing, asks to read again at once
    assert store.fired == []


def test_a_database_outage_backs_off_and_recovers(monkeypatch, make_app) -> None:
    schedule = every(1)
    store = FrozenStore(schedule, 1_700_000_000.0)
    beat = make_beat(monkeypatch, make_app, store, schedule)
    pauses: list[float] = []
    calls = {"n": 0}
    original = store.states

    def flaky(names):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise ConnectionError("database is down")
        beat.stop()
        return original(names)

    monkeypatch.setattr(store, "states", flaky)
    monkeypatch.setattr(beat._stop, "wait", lambda pause: pauses.append(pause))
    beat.serve()
    assert pauses[:3] == [1.0, 2.0, 4.0]
    assert beat._outage == 0.0
    assert beat_module.MAX_OUTAGE_PAUSE == 30.0


def test_a_schedule_that_cannot_fire_backs_off_alone(monkeypatch, make_app) -> None:
    schedule = every(1)
    store = FrozenStore(schedule, 1_700_000_000.0)
    beat = make_beat(monkeypatch, make_app, store, schedule)
    original = store.fire_many
    attempts: list[float] = []

    def broken(claims, before_insert=None):
        attempts.append(store.now)
        if len(attempts) <= 3:
            raise ValueError("payload too large")
        return original(claims, before_insert)

    monkeypatch.setattr(store, "fire_many", broken)
    store.now += 1.0
    assert beat.tick() == 1.0
    store.now += 1.0
    assert beat.tick() == 2.0
    store.now += 2.0
    assert beat.tick() == 4.0
    store.now += 4.0
    assert beat.tick() == 0.0  # it fires once the fault is gone, and the backoff resets
    assert len(store.fired) == 1
    assert beat._failures == {}


class ManyStore:
    """Several schedules, all due; fire_many fails whenever a given one is in the batch."""

    def __init__(self, names: list[str], broken: str, now: float) -> None:
        self.now = now
        schedule = every(60)
        self.states_ = {
            name: ScheduleState(
                name=name,
                task="t.job",
                queue="celery",
                spec=json.dumps(schedule.spec()),
                payload=b"[[], {}]",
                content_type="application/json",
                job={"priority": 0, "max_retries": 3, "expires": None, "countdown": 0.0},
                catch_up="one",
                enabled=True,
                next_fire_at=now - 0.5,
                version=0,
            )
            for name in names
        }
        self.broken = broken
        self.batches: list[list[str]] = []

    def states(self, names):
        return [ScheduleState(**vars(s)) for s in self.states_.values()], self.now

    def fire_many(self, claims, before_insert=None):
        names = [c.state.name for c in claims]
        self.batches.append(names)
        if self.broken in names:
            raise ValueError(f"{self.broken} cannot be enqueued")
        for claim in claims:
            self.states_[claim.state.name].next_fire_at = claim.next_fire_at
            self.states_[claim.state.name].version += 1
        return list(claims)


def test_due_schedules_fire_in_one_batch_and_a_broken_one_is_isolated(monkeypatch, make_app):
    store = ManyStore(["a", "b", "c"], broken="b", now=1_700_000_030.0)
    app = make_app()
    monkeypatch.setattr(Beat, "store", property(lambda self: store))
    beat = Beat(app)
    beat.entries = {n: ScheduleEntry(n, "t.job", every(60)) for n in ("a", "b", "c")}
    assert beat.tick() == 0.0
    assert store.batches == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    assert store.states_["a"].next_fire_at == store.states_["c"].next_fire_at == 1_700_000_040.0
    assert store.states_["b"].next_fire_at == 1_700_000_029.5, "the broken one waits for a retry"
    assert beat._failures == {"b": 1}
    store.broken = "nobody"
    store.batches.clear()
    assert beat.tick() == pytest.approx(1.002 - 0.0, abs=0.01)  # b's retry is 1 s away
    store.now += 1.0
    assert beat.tick() == 0.0
    assert store.batches == [["b"]]
    assert beat._failures == {}
