"""How an app declares periodic jobs, and the checked definitions schedulers register.

Every form ends up in ``app.conf.beat_schedule`` (as Celery's ``add_periodic_task`` does):
``app.schedule(...)``, ``app.add_periodic_task(...)`` from ``on_after_configure``, and
entries written into ``beat_schedule`` directly. A scheduler reads them once it starts,
checks each one (schedule, timezone, task, arguments, options) and turns it into a
:class:`Definition`: the row it upserts into ``dbqueue_schedules``, including the job every fire
enqueues, serialized once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbqueue.exceptions import ScheduleError
from dbqueue.schedules.base import Schedule, zone_name
from dbqueue.schedules.crontab import maybe_schedule

if TYPE_CHECKING:
    from dbqueue.app import DBQueue

#: What happens after downtime: fire one catch-up run, or skip the missed fire times.
CATCH_UP = ("one", "skip")
#: Keys a ``beat_schedule`` entry may have (``relative`` is Celery's and changes nothing).
ENTRY_KEYS = {"task", "schedule", "args", "kwargs", "options", "relative", "catch_up"}
#: apply_async options that make no sense for a job enqueued again and again.
_REFUSED_OPTIONS = ("eta", "task_id")


@dataclass
class ScheduleEntry:
    """One periodic job as declared: which task, when, with what arguments and options."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    catch_up: str | None = None


@dataclass
class Definition:
    """A checked entry as stored in ``dbqueue_schedules``: timing, display and job template."""

    entry: ScheduleEntry
    schedule: Schedule
    queue: str
    payload: bytes
    content_type: str
    catch_up: str
    #: priority, max_retries, expires (seconds after each fire), countdown, unique_key and
    #: the job's stored options: what every fire's job row gets.
    job: dict[str, Any]

    @property
    def name(self) -> str:
        return self.entry.name

    def spec_json(self) -> str:
        return _dumps(self.schedule.spec())

    def row(self) -> dict[str, Any]:
        """Column values of the schedule's row (all but the fire cursor)."""
        entry = self.entry
        return {
            "name": entry.name,
            "task": entry.task,
            "queue": self.queue,
            "kind": self.schedule.kind,
            "expression": self.schedule.expression,
            "timezone": self.schedule.timezone or "UTC",
            "spec": self.spec_json(),
            "args": _dumps(list(entry.args)),
            "kwargs": _dumps(entry.kwargs),
            "options": _dumps(entry.options),
            "payload": self.payload,
            "content_type": self.content_type,
            "job": _dumps(self.job),
            "catch_up": self.catch_up,
        }


def add_entry(
    app: DBQueue,
    task: Any,
    schedule: Any,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    catch_up: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """``app.schedule(...)``: check the entry now and add it to ``beat_schedule``."""
    task_name = _task_name(task)
    args = tuple(args or ())
    kwargs = dict(kwargs or {})
    name = name or _default_name(task_name, args, kwargs)
    entry = {
        "task": task_name,
        "schedule": schedule,
        "args": args,
        "kwargs": kwargs,
        "options": dict(options or {}),
    }
    if catch_up is not None:
        entry["catch_up"] = catch_up
    parsed = parse_entry(name, entry, app.conf.timezone)
    known = getattr(task, "app", None) is not None
    if known and getattr(task, "typing", False):
        _check_arguments(task, parsed)
    app.conf.beat_schedule[name] = entry
    return name


def add_periodic_task(
    app: DBQueue,
    schedule: Any,
    sig: Any,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """Celery's ``add_periodic_task(schedule, sig, args, kwargs, name, **opts)``.

    ``sig`` is a task, a task name, or a signature (anything with ``name``, ``args``,
    ``kwargs`` and ``options``); extra ``args`` go first, as ``Signature.clone`` puts them.
    """
    sig_args = tuple(getattr(sig, "args", None) or ())
    sig_kwargs = dict(getattr(sig, "kwargs", None) or {})
    sig_options = dict(getattr(sig, "options", None) or {})
    return add_entry(
        app,
        sig,
        schedule,
        (*tuple(args or ()), *sig_args),
        {**sig_kwargs, **dict(kwargs or {})},
        name,
        None,
        {**sig_options, **dict(options or {})},
    )


def parse_entry(name: Any, value: Any, default_timezone: Any) -> ScheduleEntry:
    """One ``beat_schedule`` item as a ScheduleEntry; ScheduleError names what is wrong."""
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise ScheduleError(
            f"schedule names are non-empty strings of at most 255 characters: {name!r}"
        )
    where = f"schedule {name!r}"
    if not isinstance(value, Mapping):
        raise ScheduleError(f"{where}: expected a dict with 'task' and 'schedule', got {value!r}")
    unknown = sorted(set(value) - ENTRY_KEYS)
    if unknown:
        raise ScheduleError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(expected {', '.join(sorted(ENTRY_KEYS))})"
        )
    for key in ("task", "schedule"):
        if value.get(key) is None:
            raise ScheduleError(f"{where}: missing {key!r}")
    task = value["task"]
    if not isinstance(task, str) or not task or len(task) > 255:
        raise ScheduleError(f"{where}: 'task' must be a task name, got {task!r}")
    try:
        schedule = maybe_schedule(value["schedule"]).bound(default_timezone)
        schedule.next_after(dt.datetime.now(dt.UTC).timestamp())
    except ScheduleError as error:
        raise ScheduleError(f"{where}: {error}") from None
    args = value.get("args") or ()
    kwargs = value.get("kwargs") or {}
    options = value.get("options") or {}
    if isinstance(args, str | bytes) or not isinstance(args, Iterable):
        raise ScheduleError(f"{where}: 'args' must be a list or tuple, got {args!r}")
    if not isinstance(kwargs, Mapping):
        raise ScheduleError(f"{where}: 'kwargs' must be a dict, got {kwargs!r}")
    if not isinstance(options, Mapping):
        raise ScheduleError(f"{where}: 'options' must be a dict, got {options!r}")
    refused = [key for key in _REFUSED_OPTIONS if key in options]
    if refused:
        raise ScheduleError(
            f"{where}: option {refused[0]!r} cannot apply to a job that runs again and again"
        )
    catch_up = value.get("catch_up")
    if catch_up is not None and catch_up not in CATCH_UP:
        raise ScheduleError(f"{where}: catch_up must be 'one' or 'skip', got {catch_up!r}")
    return ScheduleEntry(name, task, schedule, tuple(args), dict(kwargs), dict(options), catch_up)


def collect(app: DBQueue) -> list[ScheduleEntry]:
    """Every entry of ``app.conf.beat_schedule``, checked; raises on the first bad one."""
    source = app.conf.beat_schedule or {}
    if not isinstance(source, Mapping):
        raise ScheduleError(f"beat_schedule must be a dict of name -> entry, got {source!r}")
    try:
        timezone = zone_name(app.conf.timezone)
    except ScheduleError as error:
        raise ScheduleError(f"the app's timezone setting: {error}") from None
    return [parse_entry(name, value, timezone) for name, value in source.items()]


def define(app: DBQueue, entry: ScheduleEntry) -> Definition:
    """Check an entry against the app (task known, arguments fit, options valid) and build
    the job every fire enqueues."""
    where = f"schedule {entry.name!r}"
    task = app.tasks.get(entry.task)
    if task is None and _knows_its_tasks(app):
        raise ScheduleError(
            f"{where}: task {entry.task!r} is not registered (is its module imported, or "
            "listed in include/imports?)"
        )
    if task is not None and task.typing:
        _check_arguments(task, entry)
    options = dict(entry.options)
    expires = options.pop("expires", None)
    countdown = options.pop("countdown", None) or 0
    if expires is not None:
        expires = _relative(where, "expires", expires)
    countdown = _relative(where, "countdown", countdown)
    headers = dict(options.pop("headers", None) or {})
    headers.setdefault("periodic_task_name", entry.name)
    options["headers"] = headers
    try:
        job = app._producer.build(task, entry.task, entry.args, entry.kwargs, options)
    except (TypeError, ValueError, NotImplementedError) as error:
        raise ScheduleError(f"{where}: {error}") from None
    catch_up = entry.catch_up or app.conf.beat_catch_up
    if catch_up not in CATCH_UP:
        raise ScheduleError(f"beat_catch_up must be 'one' or 'skip', got {catch_up!r}")
    return Definition(
        entry=entry,
        schedule=entry.schedule,
        queue=job.queue,
        payload=job.payload,
        content_type=job.content_type,
        catch_up=catch_up,
        job={
            "priority": job.priority,
            "max_retries": job.max_retries,
            "expires": expires,
            "countdown": countdown,
            "unique_key": job.unique_key,
            "options": job.options,
        },
    )


def _knows_its_tasks(app: DBQueue) -> bool:
    """Whether the app registers tasks of its own (a beat-only app may know none, and then
    sends by name)."""
    return any(not name.startswith("celery.") for name in app.tasks)


def _check_arguments(task: Any, entry: ScheduleEntry) -> None:
    try:
        task.check_arguments(tuple(entry.args), dict(entry.kwargs))
    except TypeError as error:
        raise ScheduleError(f"schedule {entry.name!r}: {error}") from None


def _task_name(task: Any) -> str:
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"expected a task or a task name, got {task!r}")
    return name


def _default_name(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Celery's default: the call as it reads, ``proj.tasks.add(2, 2)``."""
    if not args and not kwargs:
        return task
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{task}({', '.join(parts)})"[:255]


def _relative(where: str, option: str, value: Any) -> float:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise ScheduleError(
        f"{where}: {option} must be seconds or a timedelta (counted from each run), got {value!r}"
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=repr)
