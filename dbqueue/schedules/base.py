"""Schedules: rules that give the next fire time after any instant, in a time zone.

``every(timedelta)`` fires at a fixed interval, ``daily``/``weekly``/``cron`` at wall-clock
times. Each one answers :meth:`Schedule.next_after` and can be stored as a JSON spec that every
scheduler process rebuilds identically, so they all agree on the fire times.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import namedtuple
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dbqueue.exceptions import ScheduleError
from dbqueue.schedules.wallclock import ZoneClock, next_instant

if TYPE_CHECKING:
    from croniter import croniter

#: Celery's return type of ``is_due``: (is it due now, seconds until the next check).
schedstate = namedtuple("schedstate", ("is_due", "next"))

_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_SECOND = dt.timedelta(seconds=1)
#: Cron's shorthands (the seed library's parser accepts them too).
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FULL_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
#: Day names and abbreviations to cron's numbers (Sunday = 0).
WEEKDAYS = {name: n for names in (DAY_NAMES, _FULL_NAMES) for n, name in enumerate(names)}
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def zone_name(timezone: Any) -> str:
    """The IANA name of a timezone given as a name or a tzinfo; ScheduleError if unknown."""
    if timezone is None:
        return "UTC"
    if isinstance(timezone, dt.tzinfo):
        if timezone is dt.UTC:
            return "UTC"
        key = getattr(timezone, "key", None) or getattr(timezone, "zone", None)
        if not isinstance(key, str):
            raise ScheduleError(
                f"timezone {timezone!r} has no IANA name: use one such as 'Europe/Berlin'"
            )
        timezone = key
    if not isinstance(timezone, str) or not timezone.strip():
        raise ScheduleError(
            f"timezone must be an IANA name such as 'Europe/Berlin', got {timezone!r}"
        )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown timezone {timezone!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None
    return timezone


class Schedule:
    """When a periodic job fires. ``timezone=None`` means the app's ``timezone`` (else UTC)."""

    kind = "base"

    def __init__(self, timezone: Any = None) -> None:
        self.timezone: str | None = None if timezone is None else zone_name(timezone)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")

    def next_after(self, instant: float) -> float:
        """The first fire time (epoch seconds) strictly after ``instant``."""
        raise NotImplementedError

    @property
    def expression(self) -> str:
        """How the schedule reads in listings (``every 5m``, ``30 9 * * mon-fri``)."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """A JSON-able description :func:`from_spec` rebuilds the same schedule from."""
        raise NotImplementedError

    def bound(self, default_timezone: Any) -> Schedule:
        """This schedule with its timezone resolved (its own, else ``default_timezone``)."""
        spec = self.spec()
        spec["timezone"] = self.timezone or zone_name(default_timezone)
        return from_spec(spec)

    # -- Celery's schedule interface --------------------------------------------------------

    def remaining_estimate(self, last_run_at: dt.datetime) -> dt.timedelta:
        """Time from now until the first fire after ``last_run_at`` (negative when overdue)."""
        return dt.timedelta(seconds=self.next_after(_epoch(last_run_at)) - time.time())

    def is_due(self, last_run_at: dt.datetime) -> schedstate:
        """Celery's ``(is_due, seconds until the next check)`` for a last run time."""
        now = time.time()
        if self.next_after(_epoch(last_run_at)) <= now:
            return schedstate(True, self.next_after(now) - now)
        return schedstate(False, self.next_after(_epoch(last_run_at)) - now)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Schedule):
            return self._identity() == other._identity()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(repr(sorted(self._identity().items())))

    def _identity(self) -> dict[str, Any]:
        """The spec without its display text: what decides the fire times."""
        spec = self.spec()
        spec.pop("source", None)
        return spec

    def __repr__(self) -> str:
        zone = f" ({self.timezone})" if self.timezone else ""
        return f"<{type(self).__name__}: {self.expression}{zone}>"


class Every(Schedule):
    """A fixed interval, measured in real time and aligned to the zone's standard time.

    ``every(timedelta(hours=6))`` in Europe/Berlin fires at 00:00, 06:00, ... CET (01:00, 07:00,
    ... in summer): the gap between runs never changes, so daylight saving cannot skip or
    double one. Intervals are aligned (to midnight standard time), never to a start time, so
    every scheduler computes the same fire times.
    """

    kind = "every"

    def __init__(self, interval: dt.timedelta | float, timezone: Any = None) -> None:
        super().__init__(timezone)
        seconds = _seconds(interval)
        self.milliseconds = round(seconds * 1000)
        if self.milliseconds < 1:
            raise ScheduleError(f"an interval must be at least 1 ms, got {interval!r}")
        self._anchor: int | None = None

    @property
    def seconds(self) -> float:
        return self.milliseconds / 1000

    @property
    def run_every(self) -> dt.timedelta:
        return dt.timedelta(milliseconds=self.milliseconds)

    @property
    def anchor(self) -> int:
        """Milliseconds after the epoch of one fire time: a midnight of the zone's standard time."""
        if self._anchor is None:
            year = dt.datetime.now(dt.UTC).year
            offsets = [
                dt.datetime(year, month, 1, tzinfo=self.tz).utcoffset() or dt.timedelta()
                for month in (1, 7)
            ]
            self._anchor = -round(min(offsets).total_seconds() * 1000)
        return self._anchor

    def next_after(self, instant: float) -> float:
        now = int(instant * 1000 // 1)
        step = (now - self.anchor) // self.milliseconds + 1
        return (self.anchor + step * self.milliseconds) / 1000

    @property
    def expression(self) -> str:
        return f"every {_human(self.milliseconds)}"

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "ms": self.milliseconds}
        if self.timezone:
            spec["timezone"] = self.timezone
            spec["anchor"] = self.anchor
        return spec


class Cron(Schedule):
    """A cron expression: 5 fields, or 6 with seconds first (``*/10 * * * * *``), or a macro.

    Standard cron semantics: when both day-of-month and day-of-week are restricted, a day
    matching either one fires (``day_or=False`` requires both, as Celery's ``crontab`` does).
    """

    kind = "cron"

    def __init__(self, expression: str, timezone: Any = None, day_or: bool = True) -> None:
        super().__init__(timezone)
        if not isinstance(expression, str):
            raise ScheduleError(f"a cron expression must be a string, got {expression!r}")
        text = " ".join(expression.split())
        self.source = text
        self.cron = MACROS.get(text.lower(), text)
        self.day_or = day_or
        fields = self.cron.split(" ")
        if len(fields) not in (5, 6):
            raise ScheduleError(
                f"cron expression {expression!r} has {len(fields)} field(s): expected 5 (minute "
                "hour day-of-month month day-of-week) or 6 (a seconds field first)"
            )
        self.with_seconds = len(fields) == 6
        from croniter.croniter import CroniterError

        try:
            parsed = self._croniter(_NAIVE_EPOCH)
            parsed.get_next(dt.datetime)
        except (CroniterError, ValueError, KeyError) as error:
            message = str(error) or type(error).__name__
            if "failed to find" in message:
                message = "it matches no date at all"
            raise ScheduleError(f"invalid cron expression {expression!r}: {message}") from None
        hours = parsed.expanded[1]
        #: Every hour of the day matches: the fold fires twice, the gap fires nothing.
        self.every_hour = hours == ["*"] or sorted(hours) == list(range(24))

    def _croniter(self, start: dt.datetime) -> croniter:
        from croniter import croniter

        return croniter(
            self.cron,
            start,
            day_or=self.day_or,
            second_at_beginning=self.with_seconds,
        )

    def _first_wall(self, wall: int) -> int | None:
        from croniter.croniter import CroniterError

        start = _NAIVE_EPOCH + (wall - 1) * _SECOND
        try:
            found = self._croniter(start).get_next(dt.datetime)
        except CroniterError:
            return None
        return int((found - _NAIVE_EPOCH) // _SECOND)

    def next_after(self, instant: float) -> float:
        found = next_instant(
            ZoneClock(self.tz), self._first_wall, int(instant // 1), self.every_hour
        )
        if found is None:
            raise ScheduleError(f"cron expression {self.source!r} never fires again")
        return float(found)

    @property
    def expression(self) -> str:
        return self.source

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "cron": self.cron}
        if self.source != self.cron:
            spec["source"] = self.source
        if not self.day_or:
            spec["day_or"] = False
        if self.timezone:
            spec["timezone"] = self.timezone
        return spec


def from_spec(spec: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.spec` (what the database stores)."""
    kind = spec.get("kind")
    timezone = spec.get("timezone")
    if kind == "every":
        built = Every(dt.timedelta(milliseconds=spec["ms"]), timezone)
        if "anchor" in spec:
            built._anchor = int(spec["anchor"])
        return built
    if kind == "cron":
        cron = Cron(spec["cron"], timezone, day_or=spec.get("day_or", True))
        cron.source = spec.get("source", cron.cron)
        return cron
    raise ScheduleError(f"unknown schedule kind {kind!r} in {spec!r}")


# -- the seed library's constructors ---------------------------------------------------------


def every(interval: dt.timedelta | float, timezone: Any = None) -> Every:
    """Fire every ``interval`` (a timedelta or seconds), e.g. ``every(timedelta(minutes=5))``."""
    return Every(interval, timezone)


def daily(hour: int, minute: int = 0, timezone: Any = None) -> Cron:
    """Fire every day at ``hour:minute`` wall-clock time in ``timezone``."""
    _check_range("hour", hour, 0, 23)
    _check_range("minute", minute, 0, 59)
    return Cron(f"{minute} {hour} * * *", timezone)


def weekly(day: int | str, hour: int, minute: int = 0, timezone: Any = None) -> Cron:
    """Fire every week on ``day`` at ``hour:minute``.

    ``day`` is a name (``"mon"``, ``"monday"``) or a number with Sunday = 0, as in cron, Celery
    and Go's ``time.Weekday`` (note: Python's ``date.weekday()`` counts from Monday).
    """
    _check_range("hour", hour, 0, 23)
    _check_range("minute", minute, 0, 59)
    return Cron(f"{minute} {hour} * * {weekday_number(day)}", timezone)


def cron(expression: str, timezone: Any = None) -> Schedule:
    """Fire at the times a cron expression matches; a 6th leading field gives seconds.

    ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly`` and the seed library's
    ``@every 1h30m`` are accepted too.
    """
    text = expression.strip() if isinstance(expression, str) else expression
    if isinstance(text, str) and text.lower().startswith("@every"):
        return Every(_go_duration(text[len("@every") :].strip(), expression), timezone)
    return Cron(expression, timezone)


def weekday_number(day: int | str) -> int:
    """0-6 (Sunday = 0) for a day number (7 is Sunday too) or an English day name."""
    if isinstance(day, int) and not isinstance(day, bool) and 0 <= day <= 7:
        return day % 7
    if isinstance(day, str) and day.lower() in WEEKDAYS:
        return WEEKDAYS[day.lower()]
    raise ScheduleError(
        f"day must be 0-6 (Sunday = 0) or a day name such as 'mon' or 'monday', got {day!r}"
    )


def _check_range(what: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScheduleError(f"{what} must be an integer from {low} to {high}, got {value!r}")


def _seconds(interval: Any) -> float:
    if isinstance(interval, dt.timedelta):
        return interval.total_seconds()
    if isinstance(interval, int | float) and not isinstance(interval, bool):
        return float(interval)
    raise ScheduleError(f"an interval must be a timedelta or a number of seconds, got {interval!r}")


def _go_duration(text: str, expression: str) -> float:
    parts = _GO_DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ScheduleError(
            f"invalid cron expression {expression!r}: '@every' takes a duration such as "
            "'30s', '5m' or '1h30m'"
        )
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _human(milliseconds: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds / 1000:g}s"


def _epoch(value: dt.datetime | float) -> float:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return float(value)
