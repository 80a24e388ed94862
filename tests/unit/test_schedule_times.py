"""Fire-time maths of every/daily/weekly/cron, pinned with fixed instants, including the
daylight-saving changes of Europe/Berlin and America/New_York (2024):

* Berlin springs forward on 31 March at 02:00 CET (to 03:00 CEST) and falls back on 27
  October at 03:00 CEST (to 02:00 CET);
* New York springs forward on 10 March at 02:00 EST and falls back on 3 November at 02:00 EDT.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from dbqueue import ScheduleError, cron, daily, every, weekly
from dbqueue.schedules import Cron, Every, from_spec

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def at(zone: str, *fields: int, fold: int = 0) -> float:
    """An instant from a wall-clock time in ``zone``."""
    return dt.datetime(*fields, tzinfo=ZoneInfo(zone), fold=fold).timestamp()  # type: ignore[misc]


def fires(schedule, start: float, until: float) -> list[dt.datetime]:
    """Every fire time in (start, until], as aware datetimes in the schedule's zone."""
    found = []
    moment = schedule.next_after(start)
    while moment <= until:
        found.append(dt.datetime.fromtimestamp(moment, ZoneInfo(schedule.timezone or "UTC")))
        following = schedule.next_after(moment)
        assert following > moment, "fire times must strictly increase"
        moment = following
    return found


def local(moments: list[dt.datetime]) -> list[str]:
    return [m.isoformat() for m in moments]


# -- plain schedules --------------------------------------------------------------------------


def test_next_after_is_strictly_after_even_on_a_fire_time() -> None:
    schedule = daily(9, 30)
    nine_thirty = at("UTC", 2024, 5, 1, 9, 30)
    assert schedule.next_after(nine_thirty - 0.5) == nine_thirty
    assert schedule.next_after(nine_thirty) == nine_thirty + 86400
    assert schedule.next_after(nine_thirty + 0.001) == nine_thirty + 86400


def test_every_is_aligned_so_all_schedulers_agree() -> None:
    five = every(dt.timedelta(seconds=5))
    assert five.next_after(1_000_000_001.3) == 1_000_000_005.0
    assert five.next_after(1_000_000_005.0) == 1_000_000_010.0
    assert every(0.25).next_after(10.1) == 10.25
    minute = every(dt.timedelta(minutes=1))
    assert minute.next_after(at("UTC", 2024, 5, 1, 12, 0, 59)) == at("UTC", 2024, 5, 1, 12, 1)


def test_every_aligns_to_the_zones_standard_midnight() -> None:
    hourly = every(dt.timedelta(hours=1), timezone="Asia/Kolkata")  # UTC+05:30
    moment = hourly.next_after(at("Asia/Kolkata", 2024, 5, 1, 10, 10))
    assert moment == at("Asia/Kolkata", 2024, 5, 1, 11, 0)
    six = every(dt.timedelta(hours=6), timezone=BERLIN)
    winter = fires(six, at(BERLIN, 2024, 1, 10, 0, 30), at(BERLIN, 2024, 1, 11, 0, 0))
    assert [m.hour for m in winter] == [6, 12, 18, 0]


def test_every_keeps_real_time_intervals_across_dst() -> None:
    hourly = every(dt.timedelta(hours=1), timezone=BERLIN)
    for start, end in [
        (at(BERLIN, 2024, 3, 30, 22), at(BERLIN, 2024, 3, 31, 6)),
        (at(BERLIN, 2024, 10, 26, 22), at(BERLIN, 2024, 10, 27, 6)),
    ]:
        moments = [m.timestamp() for m in fires(hourly, start, end)]
        assert {b - a for a, b in itertools.pairwise(moments)} == {3600.0}
        assert len(moments) == round((end - start) / 3600)


def test_cron_with_a_seconds_field_first() -> None:
    schedule = cron("*/20 * * * * *")
    start = at("UTC", 2024, 5, 1, 12, 0, 0)
    assert [m.second for m in fires(schedule, start, start + 60)] == [20, 40, 0]
    assert cron("30 0 9 * * *").next_after(start) == at("UTC", 2024, 5, 2, 9, 0, 30)


def test_cron_macros_and_go_every() -> None:
    start = at("UTC", 2024, 5, 1, 12, 34, 56)
    assert cron("@hourly").next_after(start) == at("UTC", 2024, 5, 1, 13)
    assert cron("@daily").next_after(start) == at("UTC", 2024, 5, 2)
    assert cron("@weekly").next_after(start) == at("UTC", 2024, 5, 5)  # a Sunday
    assert cron("@monthly").next_after(start) == at("UTC", 2024, 6, 1)
    assert cron("@yearly").next_after(start) == at("UTC", 2025, 1, 1)
    assert isinstance(cron("@every 1h30m"), Every)
    assert cron("@every 1h30m").seconds == 5400


def test_cron_uses_standard_day_or_semantics() -> None:
    """Both day fields restricted: a day matching either fires (cron's rule)."""
    schedule = cron("0 9 1 * mon")
    start = at("UTC", 2024, 4, 27)
    days = [m.day for m in fires(schedule, start, at("UTC", 2024, 5, 14))]
    assert days == [29, 1, 6, 13]  # Monday 29 April, the 1st, then Mondays


def test_weekly_takes_names_and_cron_numbers() -> None:
    start = at("UTC", 2024, 5, 1)  # a Wednesday
    assert weekly("monday", 8).next_after(start) == at("UTC", 2024, 5, 6, 8)
    assert weekly("mon", 8) == weekly(1, 8)
    assert weekly(0, 8) == weekly(7, 8) == weekly("Sun", 8)
    assert weekly("sun", 8, 15).next_after(start) == at("UTC", 2024, 5, 5, 8, 15)


def test_schedules_round_trip_through_their_spec() -> None:
    for schedule in (
        every(7, timezone=BERLIN),
        every(dt.timedelta(days=1)),
        daily(9, 30, timezone=NEW_YORK),
        weekly("fri", 17),
        cron("*/5 9-17 * * 1-5", timezone="Asia/Tokyo"),
        cron("0 0 12 * * *"),
    ):
        rebuilt = from_spec(schedule.spec())
        assert rebuilt == schedule
        assert rebuilt.expression == schedule.expression
        start = at("UTC", 2024, 5, 1, 12, 34, 56)
        assert rebuilt.next_after(start) == schedule.next_after(start)


def test_bound_resolves_the_default_timezone_only_when_none_was_given() -> None:
    assert daily(9).bound("Asia/Tokyo").timezone == "Asia/Tokyo"
    assert daily(9, timezone=BERLIN).bound("Asia/Tokyo").timezone == BERLIN
    assert daily(9).bound(None).timezone == "UTC"
    assert daily(9).bound(ZoneInfo(NEW_YORK)).timezone == NEW_YORK
    assert daily(9).bound(dt.UTC).timezone == "UTC"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: cron("61 * * * *"), "invalid cron expression '61 \\* \\* \\* \\*'"),
        (lambda: cron("* * *"), "has 3 field\\(s\\): expected 5"),
        (lambda: cron("1 2 3 4 5 6 7"), "has 7 field\\(s\\)"),
        (lambda: cron("0 0 30 2 *"), "matches no date at all"),
        (lambda: cron("@every soon"), "'@every' takes a duration"),
        (lambda: cron(""), "has 1 field"),
        (lambda: cron(42), "must be a string"),  # type: ignore[arg-type]
        (lambda: daily(24), "hour must be an integer from 0 to 23, got 24"),
        (lambda: daily(9, 60), "minute must be an integer from 0 to 59"),
        (lambda: weekly("someday", 9), "day must be 0-6 \\(Sunday = 0\\)"),
        (lambda: weekly(8, 9), "day must be 0-6"),
        (lambda: every(0), "at least 1 ms"),
        (lambda: every("5m"), "a timedelta or a number of seconds"),  # type: ignore[arg-type]
        (lambda: every(5, timezone="Mars/Olympus"), "unknown timezone 'Mars/Olympus'"),
        (lambda: daily(9, timezone="CEST+2"), "unknown timezone"),
        (lambda: cron("* * * * *", timezone=dt.timezone(dt.timedelta(hours=2))), "no IANA name"),
    ],
)
def test_bad_schedules_are_clear_errors(make, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        make()


def test_schedule_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        cron("nonsense")


# -- daylight saving --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        (
            BERLIN,
            (2024, 3, 31),
            ["2024-03-30T02:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00"],
        ),
        (
            NEW_YORK,
            (2024, 3, 10),
            ["2024-03-09T02:30:00-05:00", "2024-03-10T03:30:00-04:00", "2024-03-11T02:30:00-04:00"],
        ),
    ],
)
def test_daily_in_the_spring_gap_still_fires_that_day(zone, day, expected) -> None:
    """02:30 does not exist that day: the run comes an hour later, never skipped or doubled."""
    schedule = daily(2, 30, timezone=zone)
    midnight = at(zone, *day)
    moments = fires(schedule, midnight - 86400, midnight + 2 * 86400)
    assert local(moments) == expected
    assert Counter(m.date() for m in moments) == {m.date(): 1 for m in moments}


@pytest.mark.parametrize(
    ("zone", "day", "hour", "expected"),
    [
        (
            BERLIN,
            (2024, 10, 27),
            2,
            ["2024-10-26T02:30:00+02:00", "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"],
        ),
        (
            NEW_YORK,
            (2024, 11, 3),
            1,
            ["2024-11-02T01:30:00-04:00", "2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"],
        ),
    ],
)
def test_daily_in_the_fall_fold_fires_once(zone, day, hour, expected) -> None:
    """The wall time happens twice that night: only the first pass fires."""
    schedule = daily(hour, 30, timezone=zone)
    midnight = at(zone, *day)
    moments = fires(schedule, midnight - 86400, midnight + 2 * 86400)
    assert local(moments) == expected


@pytest.mark.parametrize(
    ("zone", "start", "end"),
    [
        (BERLIN, (2024, 3, 30, 12), (2024, 4, 2, 12)),
        (BERLIN, (2024, 10, 26, 12), (2024, 10, 29, 12)),
        (NEW_YORK, (2024, 3, 9, 12), (2024, 3, 12, 12)),
        (NEW_YORK, (2024, 11, 2, 12), (2024, 11, 5, 12)),
    ],
)
@pytest.mark.parametrize("hour", [0, 1, 2, 3])
def test_daily_fires_once_per_local_day_around_each_transition(zone, start, end, hour) -> None:
    schedule = daily(hour, 30, timezone=zone)
    moments = fires(schedule, at(zone, *start), at(zone, *end))
    days = Counter(m.date() for m in moments)
    assert len(moments) == 3
    assert set(days.values()) == {1}


def test_hourly_cron_fires_in_both_passes_of_the_fold() -> None:
    schedule = cron("0 * * * *", timezone=BERLIN)
    moments = fires(schedule, at(BERLIN, 2024, 10, 27, 0, 30), at(BERLIN, 2024, 10, 27, 4, 30))
    assert local(moments) == [
        "2024-10-27T01:00:00+02:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T03:00:00+01:00",
        "2024-10-27T04:00:00+01:00",
    ]
    seconds = [m.timestamp() for m in moments]
    assert {b - a for a, b in itertools.pairwise(seconds)} == {3600.0}


def test_hourly_cron_has_no_run_in_the_missing_hour() -> None:
    schedule = cron("0 * * * *", timezone=NEW_YORK)
    moments = fires(schedule, at(NEW_YORK, 2024, 3, 10, 0, 30), at(NEW_YORK, 2024, 3, 10, 4, 30))
    assert local(moments) == [
        "2024-03-10T01:00:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-10T04:00:00-04:00",
    ]
    seconds = [m.timestamp() for m in moments]
    assert {b - a for a, b in itertools.pairwise(seconds)} == {3600.0}


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        (BERLIN, (2024, 3, 31, 0)),
        (BERLIN, (2024, 10, 27, 0)),
        (NEW_YORK, (2024, 3, 10, 0)),
        (NEW_YORK, (2024, 11, 3, 0)),
    ],
)
def test_every_quarter_hour_keeps_a_steady_rhythm_through_transitions(zone, start) -> None:
    schedule = cron("*/15 * * * *", timezone=zone)
    begin = at(zone, *start)
    moments = [m.timestamp() for m in fires(schedule, begin, begin + 5 * 3600)]
    assert len(moments) == 20
    assert {b - a for a, b in itertools.pairwise(moments)} == {900.0}


def test_fixed_times_inside_the_gap_shift_by_the_gap() -> None:
    schedule = cron("0,30 2 * * *", timezone=BERLIN)
    moments = fires(schedule, at(BERLIN, 2024, 3, 31, 0), at(BERLIN, 2024, 3, 31, 12))
    assert local(moments) == ["2024-03-31T03:00:00+02:00", "2024-03-31T03:30:00+02:00"]


def test_a_fire_time_computed_from_inside_the_fold_is_not_repeated() -> None:
    """A scheduler that wakes during the repeated hour finds the next day's run, not 02:30 again."""
    schedule = daily(2, 30, timezone=BERLIN)
    second_pass = at(BERLIN, 2024, 10, 27, 2, 45, fold=1)
    first_pass = at(BERLIN, 2024, 10, 27, 2, 45, fold=0)
    tomorrow = at(BERLIN, 2024, 10, 28, 2, 30)
    assert schedule.next_after(first_pass) == tomorrow
    assert schedule.next_after(second_pass) == tomorrow
    hourly = cron("30 * * * *", timezone=BERLIN)
    assert hourly.next_after(first_pass) == at(BERLIN, 2024, 10, 27, 2, 30, fold=1)


def test_weekly_across_a_transition_keeps_its_wall_time() -> None:
    schedule = weekly("sun", 9, timezone=NEW_YORK)
    moments = fires(schedule, at(NEW_YORK, 2024, 3, 1), at(NEW_YORK, 2024, 3, 20))
    assert [m.strftime("%Y-%m-%d %H:%M %z") for m in moments] == [
        "2024-03-03 09:00 -0500",
        "2024-03-10 09:00 -0400",
        "2024-03-17 09:00 -0400",
    ]


def test_rare_schedules_find_their_next_year() -> None:
    leap = Cron("0 12 29 2 *", timezone=BERLIN)
    assert leap.next_after(at(BERLIN, 2024, 3, 1)) == at(BERLIN, 2028, 2, 29, 12)
