"""Celery's schedule forms: every crontab field form, crontab.from_string, schedule(), the
beat_schedule entry forms, add_periodic_task, and their errors."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

import dbqueue
from dbqueue import DBQueue, ScheduleError
from dbqueue.schedules import (
    Cron,
    Every,
    crontab,
    crontab_parser,
    daily,
    every,
    maybe_schedule,
    schedstate,
    schedule,
)
from dbqueue.schedules.entries import collect, define, parse_entry


def at(*fields: int) -> float:
    return dt.datetime(*fields, tzinfo=dt.UTC).timestamp()  # type: ignore[misc]


def fire_times(sched, start: float, count: int) -> list[dt.datetime]:
    found, moment = [], start
    for _ in range(count):
        moment = sched.next_after(moment)
        found.append(dt.datetime.fromtimestamp(moment, dt.UTC))
    return found


# -- crontab fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "max_", "min_", "expected"),
    [
        ("*", 60, 0, set(range(60))),
        ("*/15", 60, 0, {0, 15, 30, 45}),
        ("1-5", 24, 0, {1, 2, 3, 4, 5}),
        ("1-10/3", 24, 0, {1, 4, 7, 10}),
        ("1,3,5", 60, 0, {1, 3, 5}),
        ("1,13,30-45,50-59/2", 60, 0, {1, 13, *range(30, 46), *range(50, 60, 2)}),
        ("0,8-17/2", 24, 0, {0, 8, 10, 12, 14, 16}),
        ("22-2", 24, 0, {22, 23, 0, 1, 2}),
        ("*/3", 31, 1, {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}),
        ("2-12/2", 12, 1, {2, 4, 6, 8, 10, 12}),
        ("*/2", 12, 1, {1, 3, 5, 7, 9, 11}),
    ],
)
def test_crontab_parser_expands_celerys_grammar(spec, max_, min_, expected) -> None:
    assert crontab_parser(max_, min_).parse(spec) == expected


@pytest.mark.parametrize(
    ("day_of_week", "expected"),
    [
        ("mon-fri", {1, 2, 3, 4, 5}),
        ("fri-mon", {5, 6, 0, 1}),
        ("sun", {0}),
        ("monday", {1}),
        ("Sat,sun", {6, 0}),
        ("*/2", {0, 2, 4, 6}),
        ("1-5", {1, 2, 3, 4, 5}),
        (3, {3}),
        ([1, 3], {1, 3}),
        ({0, 6}, {0, 6}),
        (None, set(range(7))),
    ],
)
def test_crontab_day_of_week_forms(day_of_week, expected) -> None:
    assert crontab(day_of_week=day_of_week).day_of_week == expected


def test_crontab_keeps_celerys_attributes() -> None:
    c = crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")
    assert c.minute == {0, 15, 30, 45}
    assert c.hour == set(range(9, 18))
    assert c.day_of_month == set(range(1, 32))
    assert c.month_of_year == set(range(1, 13))
    assert c._orig_day_of_week == "mon-fri"
    assert c.expression == "*/15 9-17 * * mon-fri"
    assert repr(c) == "<crontab: */15 9-17 * * mon-fri (m/h/dM/MY/d)>"
    assert isinstance(c, Cron)
    assert crontab(minute=0, hour=[8, 20]).expression == "0 8,20 * * *"


def test_crontab_fires_where_celery_does() -> None:
    start = at(2024, 5, 1, 10, 7)  # a Wednesday
    weekdays = crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")
    assert [m.strftime("%a %H:%M") for m in fire_times(weekdays, start, 3)] == [
        "Wed 10:15",
        "Wed 10:30",
        "Wed 10:45",
    ]
    evening = fire_times(weekdays, at(2024, 5, 3, 17, 50), 2)  # Friday
    assert [m.strftime("%a %H:%M") for m in evening] == ["Mon 09:00", "Mon 09:15"]
    quarterly = crontab(minute=0, hour=0, day_of_month="1", month_of_year="*/3")
    assert [m.strftime("%Y-%m-%d") for m in fire_times(quarterly, start, 3)] == [
        "2024-07-01",
        "2024-10-01",
        "2025-01-01",
    ]


def test_crontab_days_must_match_every_day_field_like_celery() -> None:
    """Celery ANDs day_of_week with day_of_month: the first Monday of each month."""
    first_monday = crontab(minute=0, hour=7, day_of_week="mon", day_of_month="1-7")
    moments = fire_times(first_monday, at(2024, 5, 1), 3)
    assert [m.strftime("%a %Y-%m-%d") for m in moments] == [
        "Mon 2024-05-06",
        "Mon 2024-06-03",
        "Mon 2024-07-01",
    ]


def test_crontab_from_string_uses_cron_order() -> None:
    c = crontab.from_string("*/15 9-17 1,15 */2 mon-fri")
    assert c.minute == {0, 15, 30, 45}
    assert c.hour == set(range(9, 18))
    assert c.day_of_month == {1, 15}
    assert c.month_of_year == {1, 3, 5, 7, 9, 11}
    assert c.day_of_week == {1, 2, 3, 4, 5}
    assert c == crontab("*/15", "9-17", "mon-fri", "1,15", "*/2")
    with pytest.raises(ScheduleError, match="needs 5 fields"):
        crontab.from_string("* * * *")


def test_crontab_month_names_are_accepted() -> None:
    assert crontab(month_of_year="jan-mar").month_of_year == {1, 2, 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minute": 60}, "crontab minute=60: 60 is out of range 0-59"),
        ({"hour": "25"}, "crontab hour='25'.*out of range 0-23"),
        ({"minute": "*/0"}, "a step must be a positive number"),
        ({"minute": "1-5/"}, "a step must be a positive number"),
        ({"minute": "1,,2"}, "empty part"),
        ({"minute": "-5"}, "negative numbers not supported"),
        ({"day_of_week": "funday"}, "'funday' is not a number or a known name"),
        ({"day_of_week": 7}, "out of range 0-6"),
        ({"day_of_month": 0}, "out of range 1-31"),
        ({"day_of_month": "32"}, "out of range 1-31"),
        ({"month_of_year": 13}, "out of range 1-12"),
        ({"minute": 1.5}, "must be an int, a str or an iterable of ints"),
        ({"minute": ["a"]}, "must hold integers"),
        ({"minute": []}, "matches nothing"),
        ({"day_of_month": 31, "month_of_year": 2}, "matches no date at all"),
    ],
)
def test_crontab_errors_name_the_field(kwargs, message) -> None:
    with pytest.raises(ScheduleError, match=message):
        crontab(**kwargs)


def test_celery_parse_exception_is_our_schedule_error() -> None:
    from dbqueue.schedules import ParseException

    with pytest.raises(ParseException):
        crontab(minute="x")


# -- schedule() and maybe_schedule ---------------------------------------------------------


def test_schedule_takes_seconds_or_a_timedelta() -> None:
    assert schedule(30).run_every == dt.timedelta(seconds=30)
    assert schedule(dt.timedelta(minutes=5)).seconds == 300
    assert schedule(dt.timedelta(minutes=5)) == every(300)
    assert schedule(30, relative=True).relative is True
    assert repr(schedule(90)) == "<freq: 90s>"
    assert isinstance(schedule(1), Every)
    with pytest.raises(ScheduleError, match="needs run_every"):
        schedule()


def test_maybe_schedule_reads_every_beat_schedule_form() -> None:
    assert maybe_schedule(10) == every(10)
    assert maybe_schedule(2.5) == every(2.5)
    assert maybe_schedule(dt.timedelta(hours=1)) == every(3600)
    c = crontab(hour=4)
    assert maybe_schedule(c) is c
    assert maybe_schedule(daily(9)) == daily(9)
    # Objects of celery.schedules, read through their attributes.
    celery_crontab = SimpleNamespace(
        minute={0}, hour={4}, day_of_week=set(range(7)), day_of_month=set(range(1, 32)),
        month_of_year=set(range(1, 13)),
    )  # fmt: skip
    assert maybe_schedule(celery_crontab) == crontab(minute=0, hour=4)
    assert maybe_schedule(SimpleNamespace(run_every=dt.timedelta(seconds=9))) == every(9)
    solar = SimpleNamespace(event="sunset", lat=0, lon=0)
    with pytest.raises(ScheduleError, match="unsupported schedule"):
        maybe_schedule(solar)
    with pytest.raises(ScheduleError, match="unsupported schedule"):
        maybe_schedule("every 5 minutes")


def test_celerys_is_due_and_remaining_estimate() -> None:
    now = dt.datetime.now(dt.UTC)
    ten = schedule(10)
    due = ten.is_due(now - dt.timedelta(seconds=30))
    assert isinstance(due, schedstate)
    assert due.is_due is True
    assert 0 < due.next <= 10
    not_due = ten.is_due(now)
    assert not_due.is_due is False
    assert 0 < not_due.next <= 10
    assert ten.remaining_estimate(now) <= dt.timedelta(seconds=10)
    assert crontab(minute="*").is_due(now - dt.timedelta(minutes=2)).is_due


def test_top_level_names() -> None:
    from dbqueue import schedules

    for name in ("every", "daily", "weekly", "cron", "crontab", "schedule"):
        assert getattr(dbqueue, name) is getattr(schedules, name)


# -- beat_schedule entries ------------------------------------------------------------------


def test_beat_schedule_entries_in_every_celery_form(make_app) -> None:
    app = make_app(timezone="Europe/Paris")
    app.conf.beat_schedule = {
        "seconds": {"task": "t.a", "schedule": 30.0},
        "int": {"task": "t.a", "schedule": 5, "args": (1, 2)},
        "timedelta": {"task": "t.a", "schedule": dt.timedelta(minutes=5), "kwargs": {"x": 1}},
        "crontab": {"task": "t.a", "schedule": crontab(hour=7, minute=30, day_of_week=1)},
        "from_string": {"task": "t.a", "schedule": crontab.from_string("0 4 * * *")},
        "schedule": {"task": "t.a", "schedule": schedule(run_every=60), "relative": True},
        "options": {
            "task": "t.a",
            "schedule": 60,
            "options": {"queue": "reports", "priority": 5, "expires": 30},
        },
        "seed": {"task": "t.a", "schedule": daily(9, 0, timezone="UTC"), "catch_up": "skip"},
    }
    entries = {e.name: e for e in collect(app)}
    assert set(entries) == set(app.conf.beat_schedule)
    assert entries["seconds"].schedule == every(30, timezone="Europe/Paris")
    assert entries["int"].args == (1, 2)
    assert entries["timedelta"].kwargs == {"x": 1}
    assert entries["crontab"].schedule.timezone == "Europe/Paris"
    assert entries["crontab"].schedule.expression == "30 7 * * 1"
    assert entries["from_string"].schedule == crontab(hour=4, minute=0, timezone="Europe/Paris")
    assert entries["options"].options == {"queue": "reports", "priority": 5, "expires": 30}
    assert entries["seed"].schedule.timezone == "UTC"
    assert entries["seed"].catch_up == "skip"
    definition = define(app, entries["options"])
    assert definition.queue == "reports"
    assert definition.job["priority"] == 5
    assert definition.job["expires"] == 30.0


def test_old_uppercase_beat_schedule_name(make_app) -> None:
    app = make_app()
    app.config_from_object({"CELERYBEAT_SCHEDULE": {"x": {"task": "t.a", "schedule": 1}}})
    assert [e.name for e in collect(app)] == ["x"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"schedule": 5}, "schedule 'bad': missing 'task'"),
        ({"task": "t.a"}, "schedule 'bad': missing 'schedule'"),
        ({"task": "t.a", "schedule": 5, "every": 3}, "unknown key\\(s\\) 'every'"),
        ({"task": "t.a", "schedule": crontab}, "unsupported schedule"),
        ({"task": "t.a", "schedule": "*/5 * * * *"}, "unsupported schedule"),
        ({"task": "t.a", "schedule": -5}, "at least 1 ms"),
        ({"task": 5, "schedule": 5}, "'task' must be a task name"),
        ({"task": "t.a", "schedule": 5, "args": "ab"}, "'args' must be a list or tuple"),
        ({"task": "t.a", "schedule": 5, "kwargs": [1]}, "'kwargs' must be a dict"),
        ({"task": "t.a", "schedule": 5, "options": 3}, "'options' must be a dict"),
        ({"task": "t.a", "schedule": 5, "options": {"eta": 1}}, "option 'eta' cannot apply"),
        ({"task": "t.a", "schedule": 5, "catch_up": "all"}, "catch_up must be 'one' or 'skip'"),
        ("t.a", "expected a dict with 'task' and 'schedule'"),
    ],
)
def test_bad_beat_schedule_entries(entry, message) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_entry("bad", entry, "UTC")


def test_bad_timezone_setting_is_named(make_app) -> None:
    app = make_app(timezone="Europe/Atlantis")
    app.conf.beat_schedule = {"x": {"task": "t.a", "schedule": 5}}
    with pytest.raises(ScheduleError, match="unknown timezone 'Europe/Atlantis'"):
        collect(app)


def test_define_refuses_an_unknown_task_when_the_app_knows_its_tasks(make_app) -> None:
    app = make_app()

    @app.task(name="t.known")
    def known(x: int) -> int:
        return x

    entry = parse_entry("typo", {"task": "t.knwon", "schedule": 5}, "UTC")
    with pytest.raises(ScheduleError, match=r"schedule 'typo': task 't\.knwon' is not registered"):
        define(app, entry)
    bad_args = parse_entry("args", {"task": "t.known", "schedule": 5, "args": (1, 2)}, "UTC")
    with pytest.raises(ScheduleError, match=r"schedule 'args': task 't\.known' called with bad"):
        define(app, bad_args)
    bad_option = parse_entry(
        "opt", {"task": "t.known", "schedule": 5, "args": (1,), "options": {"queu": "x"}}, "UTC"
    )
    with pytest.raises(ScheduleError, match="schedule 'opt': unknown apply_async option 'queu'"):
        define(app, bad_option)
    bad_expires = parse_entry(
        "exp",
        {"task": "t.known", "schedule": 5, "args": (1,), "options": {"expires": dt.datetime.now()}},
        "UTC",
    )
    with pytest.raises(ScheduleError, match="expires must be seconds or a timedelta"):
        define(app, bad_expires)


def test_define_sends_by_name_when_the_app_knows_no_tasks(make_app) -> None:
    app = make_app()
    definition = define(app, parse_entry("x", {"task": "elsewhere.task", "schedule": 5}, "UTC"))
    assert definition.entry.task == "elsewhere.task"
    assert definition.queue == "celery"


def test_define_serializes_the_job_once(make_app) -> None:
    app = make_app()

    @app.task(name="t.report", queue="reports", max_retries=7)
    def report(day: str, verbose: bool = False) -> None:
        pass

    entry = parse_entry(
        "r",
        {
            "task": "t.report",
            "schedule": daily(6),
            "args": ("today",),
            "kwargs": {"verbose": True},
            "options": {"countdown": dt.timedelta(seconds=4), "headers": {"trace": "x"}},
        },
        "UTC",
    )
    definition = define(app, entry)
    assert definition.queue == "reports"
    assert definition.content_type == "application/json"
    assert b"today" in definition.payload
    assert definition.job["max_retries"] == 7
    assert definition.job["countdown"] == 4.0
    assert '"periodic_task_name":"r"' in definition.job["options"]
    assert '"trace":"x"' in definition.job["options"]
    row = definition.row()
    assert row["args"] == '["today"]'
    assert row["kwargs"] == '{"verbose":true}'
    assert row["expression"] == "0 6 * * *"
    assert row["timezone"] == "UTC"


# -- app.schedule and add_periodic_task ----------------------------------------------------------


def test_app_schedule_adds_to_beat_schedule(make_app) -> None:
    app = make_app()

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    assert app.schedule(add, every(10), args=(1, 2), name="sum") == "sum"
    assert app.schedule("t.add", daily(3), kwargs={"x": 1, "y": 2}) == "t.add(x=1, y=2)"
    assert app.schedule(add, 60, args=(5, 5), queue="math") == "t.add(5, 5)"
    entry = app.conf.beat_schedule["sum"]
    assert entry["task"] == "t.add"
    assert entry["args"] == (1, 2)
    assert app.conf.beat_schedule["t.add(5, 5)"]["options"] == {"queue": "math"}
    assert {e.name for e in collect(app)} == {"sum", "t.add(x=1, y=2)", "t.add(5, 5)"}


def test_app_schedule_errors_at_registration(make_app) -> None:
    app = make_app()

    @app.task(name="t.one")
    def one(x: int) -> int:
        return x

    with pytest.raises(ScheduleError, match="has 7 field"):
        app.schedule(one, dbqueue.cron("* * * * * * *"), args=(1,))
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        app.schedule(one, dbqueue.cron("* 25 * * *"), args=(1,))
    with pytest.raises(ScheduleError, match=r"schedule 't\.one': task 't\.one' called with bad"):
        app.schedule(one, 10)
    with pytest.raises(ScheduleError, match="unknown timezone"):
        app.schedule(one, every(10, timezone="Nowhere/Land"), args=(1,))
    with pytest.raises(ScheduleError, match="catch_up must be 'one' or 'skip'"):
        app.schedule(one, 10, args=(1,), catch_up="always")
    with pytest.raises(ScheduleError, match="expected a task or a task name"):
        app.schedule(None, 10)  # type: ignore[arg-type]
    assert app.conf.beat_schedule == {}


def test_add_periodic_task_from_on_after_configure(make_app) -> None:
    app = make_app()

    @app.task(name="t.say")
    def say(word: str, times: int = 1) -> str:
        return word * times

    signature = SimpleNamespace(name="t.say", args=("hi",), kwargs={}, options={"priority": 3})

    @app.on_after_configure.connect
    def setup(sender: DBQueue, **kwargs: object) -> None:
        sender.add_periodic_task(10.0, say, args=("tick",), name="tick")
        sender.add_periodic_task(crontab(minute=0), signature, kwargs={"times": 2})
        sender.add_periodic_task(30, "t.say", ("by name",), expires=5)

    try:
        app.finalize()
    finally:
        app.on_after_configure.disconnect(setup)
    schedule_ = app.conf.beat_schedule
    assert schedule_["tick"]["args"] == ("tick",)
    assert schedule_["t.say('hi', times=2)"]["options"] == {"priority": 3}
    assert schedule_["t.say('hi', times=2)"]["kwargs"] == {"times": 2}
    assert schedule_["t.say('by name')"]["options"] == {"expires": 5}
    assert len(collect(app)) == 3


def test_timezone_objects_and_app_timezone(make_app) -> None:
    app = make_app(timezone=ZoneInfo("Asia/Tokyo"))
    app.conf.beat_schedule = {"x": {"task": "t.a", "schedule": crontab(hour=9, minute=0)}}
    (entry,) = collect(app)
    assert entry.schedule.timezone == "Asia/Tokyo"
    assert entry.schedule.next_after(at(2024, 4, 30, 23)) == at(2024, 5, 1)  # 09:00 JST
