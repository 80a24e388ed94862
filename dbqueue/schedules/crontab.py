"""Celery's schedule classes: ``crontab(...)``, ``crontab.from_string(...)`` and ``schedule(...)``.

They read exactly like ``celery.schedules`` so a ``beat_schedule`` moves over unchanged. Each
crontab field takes what Celery's takes: ``'*'``, ``'*/15'``, ``'1-5'``, ``'1-5/2'``,
``'1,3,5'``, day names (``'mon-fri'``), ranges that wrap (``'fri-mon'``, ``'22-2'``), an int,
or a set/list of ints. Like Celery, a day must satisfy day_of_week, day_of_month *and*
month_of_year to fire (cron() follows standard cron instead).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from dbqueue.exceptions import ScheduleError
from dbqueue.schedules.base import WEEKDAYS, Cron, Every, Schedule, from_spec

#: Celery's name for a crontab field it cannot parse.
ParseException = ScheduleError

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_RANGE_STEP = re.compile(r"(\w+?)-(\w+)/(\w*)")
_RANGE = re.compile(r"(\w+?)-(\w+)")
_STAR_STEP = re.compile(r"\*/(\w*)")


class crontab_parser:
    """Expands one crontab field to the set of numbers it matches (Celery's grammar).

    ``crontab_parser(60).parse('*/15')`` -> {0, 15, 30, 45}; ``crontab_parser(31, 1)`` reads
    days of the month.
    """

    def __init__(self, max_: int = 60, min_: int = 0, names: dict[str, int] | None = None) -> None:
        self.max_ = max_
        self.min_ = min_
        self.names = names or {}

    def parse(self, spec: str) -> set[int]:
        found: set[int] = set()
        for part in spec.split(","):
            if not part:
                raise ParseException(f"empty part in crontab field {spec!r}")
            found |= set(self._part(part.strip(), spec))
        return found

    def _part(self, part: str, spec: str) -> list[int]:
        if part == "*":
            return self._star()
        match = _RANGE_STEP.fullmatch(part)
        if match:
            return self._range(match[1], match[2])[:: self._step(match[3], spec)]
        match = _RANGE.fullmatch(part)
        if match:
            return self._range(match[1], match[2])
        match = _STAR_STEP.fullmatch(part)
        if match:
            return self._star()[:: self._step(match[1], spec)]
        return [self._number(part)]

    def _star(self) -> list[int]:
        return list(range(self.min_, self.min_ + self.max_))

    def _range(self, first: str, last: str) -> list[int]:
        low, high = self._number(first), self._number(last)
        if high < low:  # wraps around, as 'fri-mon' or hours '22-2'
            return [*range(low, self.min_ + self.max_), *range(self.min_, high + 1)]
        return list(range(low, high + 1))

    def _step(self, text: str, spec: str) -> int:
        if not text.isdigit() or int(text) == 0:
            raise ParseException(f"crontab field {spec!r}: a step must be a positive number")
        return int(text)

    def _number(self, text: str) -> int:
        if text.isdigit():
            value = int(text)
        elif text.lower() in self.names:
            value = self.names[text.lower()]
        elif text.startswith("-"):
            raise ParseException(f"crontab field value {text!r}: negative numbers not supported")
        else:
            raise ParseException(f"crontab field value {text!r} is not a number or a known name")
        highest = self.min_ + self.max_ - 1
        if not self.min_ <= value <= highest:
            raise ParseException(
                f"crontab field value {text!r} is out of range {self.min_}-{highest}"
            )
        return value


class crontab(Cron):
    """Celery's ``crontab(minute, hour, day_of_week, day_of_month, month_of_year)``.

    ``timezone`` is dbqueue's addition (Celery always uses the app's ``timezone``).
    """

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        timezone: Any = None,
        nowfun: Any = None,
        app: Any = None,
    ) -> None:
        self._orig_minute = _orig(minute)
        self._orig_hour = _orig(hour)
        self._orig_day_of_week = _orig(day_of_week)
        self._orig_day_of_month = _orig(day_of_month)
        self._orig_month_of_year = _orig(month_of_year)
        self.minute = _expand("minute", minute, 60, 0)
        self.hour = _expand("hour", hour, 24, 0)
        self.day_of_week = _expand("day_of_week", day_of_week, 7, 0, WEEKDAYS)
        self.day_of_month = _expand("day_of_month", day_of_month, 31, 1)
        self.month_of_year = _expand("month_of_year", month_of_year, 12, 1, MONTHS)
        fields = [
            _field(self.minute, 60, 0),
            _field(self.hour, 24, 0),
            _field(self.day_of_month, 31, 1),
            _field(self.month_of_year, 12, 1),
            _field(self.day_of_week, 7, 0),
        ]
        super().__init__(" ".join(fields), timezone, day_or=False)
        self.source = " ".join(
            _display(f)
            for f in (
                self._orig_minute,
                self._orig_hour,
                self._orig_day_of_month,
                self._orig_month_of_year,
                self._orig_day_of_week,
            )
        )

    @classmethod
    def from_string(cls, crontab: str, timezone: Any = None) -> crontab:
        """``crontab.from_string('*/15 9-17 * * mon-fri')``: standard cron order, 5 fields."""
        fields = crontab.split() if isinstance(crontab, str) else []
        if len(fields) != 5:
            raise ParseException(
                f"crontab.from_string needs 5 fields (minute hour day-of-month month "
                f"day-of-week), got {crontab!r}"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year, timezone=timezone)

    def __repr__(self) -> str:
        return f"<crontab: {self.source} (m/h/dM/MY/d)>"


class schedule(Every):
    """Celery's ``schedule(run_every)``: an interval as a timedelta or seconds.

    Fire times are aligned (see :class:`~dbqueue.schedules.Every`); ``relative`` is accepted
    for compatibility and changes nothing.
    """

    def __init__(
        self,
        run_every: dt.timedelta | float | None = None,
        relative: bool = False,
        nowfun: Any = None,
        app: Any = None,
        timezone: Any = None,
    ) -> None:
        if run_every is None:
            raise ScheduleError("schedule() needs run_every: a timedelta or a number of seconds")
        super().__init__(run_every, timezone)
        self.relative = relative

    @property
    def human_seconds(self) -> str:
        return self.expression.removeprefix("every ")

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"


#: Month names and abbreviations (a dbqueue addition; Celery only knows numbers).
MONTHS = {name: n + 1 for n, name in enumerate(_MONTHS)}


def maybe_schedule(value: Any, relative: bool = False, app: Any = None) -> Schedule:
    """Any form a ``beat_schedule`` entry's ``schedule`` may take, as a dbqueue schedule.

    Seconds, a timedelta, a dbqueue schedule, or a ``celery.schedules`` crontab or schedule
    object (read through their attributes, so a config that still imports Celery works).
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dt.timedelta) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    ):
        return schedule(value, relative)
    if all(hasattr(value, f) for f in ("minute", "hour", "day_of_week", "day_of_month")):
        return crontab(
            value.minute,
            value.hour,
            value.day_of_week,
            value.day_of_month,
            getattr(value, "month_of_year", "*"),
        )
    run_every = getattr(value, "run_every", None)
    if isinstance(run_every, dt.timedelta):
        return schedule(run_every)
    raise ScheduleError(
        f"unsupported schedule {value!r}: use seconds, a timedelta, crontab(...), "
        "schedule(...), every(...), daily(...), weekly(...) or cron('...')"
    )


def _orig(value: Any) -> Any:
    return "*" if value is None else value


def _display(value: Any) -> str:
    if isinstance(value, str | int):
        return str(value)
    return ",".join(str(v) for v in sorted(value))


def _expand(
    name: str, spec: Any, max_: int, min_: int, names: dict[str, int] | None = None
) -> set[int]:
    """A field's value (str, int or iterable of ints) as the set of numbers it matches."""
    if spec is None:
        spec = "*"
    if isinstance(spec, bool):
        raise ParseException(f"crontab {name} cannot be a bool, got {spec!r}")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        try:
            values = crontab_parser(max_, min_, names).parse(spec)
        except ScheduleError as error:
            raise ParseException(f"crontab {name}={spec!r}: {error}") from None
    elif isinstance(spec, Iterable):
        values = set(spec)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ParseException(f"crontab {name} must hold integers, got {spec!r}")
    else:
        raise ParseException(
            f"crontab {name} must be an int, a str or an iterable of ints, "
            f"got {type(spec).__name__}"
        )
    for value in values:
        if not min_ <= value < min_ + max_:
            raise ParseException(
                f"crontab {name}={spec!r}: {value} is out of range {min_}-{min_ + max_ - 1}"
            )
    if not values:
        raise ParseException(f"crontab {name}={spec!r} matches nothing")
    return values


def _field(values: set[int], max_: int, min_: int) -> str:
    if values == set(range(min_, min_ + max_)):
        return "*"
    return ",".join(str(v) for v in sorted(values))


__all__ = [
    "ParseException",
    "crontab",
    "crontab_parser",
    "from_spec",
    "maybe_schedule",
    "schedule",
]
