"""``fan_out([sub(task, *args), ...], strategy=...)``: run children in parallel, then go on.

First run: one transaction inserts the fan-out row, every child, the fan-out's checkpoint at
the parent's call position, and moves the parent running -> waiting (guarded on this worker
still holding it). The run then ends "suspended": its worker slot is free and its attempt is
given back. Each child that finishes is counted into the fan-out in the transaction that
finishes it; the one that decides the strategy wakes the parent (waiting -> pending), once.
The parent replays: its recorded calls return their results, and ``fan_out`` returns the
children's results in input order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from dbqueue import signals
from dbqueue.durable.calls import replay, resolve
from dbqueue.durable.context import FAN_OUT, JobContext, awaitable_here, job_context
from dbqueue.durable.results import Result, Results
from dbqueue.durable.strategies import FailFast, Strategy
from dbqueue.exceptions import (
    DBQueueError,
    FanOutFailed,
    JobNotOwned,
    SubJobCancelled,
    SubJobIncomplete,
    Suspended,
)
from dbqueue.serialization import decode_many, exception_from_dict
from dbqueue.storage import NewJob, fanouts
from dbqueue.task import Task

logger = logging.getLogger("dbqueue.durable")

#: Options a sub-job accepts (those of ``apply_async`` that make sense for a child).
SUB_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "countdown",
        "eta",
        "expires",
        "max_retries",
        "time_limit",
        "soft_time_limit",
        "headers",
        "serializer",
        "shadow",
    }
)


@dataclass(slots=True)
class Sub:
    """One child of a fan-out: a task (or its registered name), its arguments, job options."""

    task: Task | str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.task if isinstance(self.task, str) else self.task.name


def sub(
    task: Task | str, /, *args: Any, kwargs: dict[str, Any] | None = None, **options: Any
) -> Sub:
    """A child for :func:`fan_out`: ``sub(resize, image_id, queue="images", priority=5)``.

    Positional arguments go to the task, ``kwargs=`` gives its keyword arguments, and other
    keywords are job options (queue, priority, countdown, eta, expires, max_retries,
    time_limit, soft_time_limit, headers, serializer, shadow).
    """
    if not isinstance(task, Task | str):
        raise TypeError(f"sub() takes a task or a task name, not {type(task).__name__}")
    unknown = sorted(set(options) - SUB_OPTIONS) if options else None
    if unknown:
        raise TypeError(
            f"sub() got unknown option(s) {', '.join(map(repr, unknown))} for "
            f"{task if isinstance(task, str) else task.name!r} (task keyword arguments go in "
            "kwargs={...}; options are: " + ", ".join(sorted(SUB_OPTIONS)) + ")"
        )
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"sub(kwargs=...) takes a dict, not {type(kwargs).__name__}")
    if isinstance(task, Task) and task.typing:
        task.check_arguments(args, dict(kwargs or {}))
    return Sub(task, args, kwargs or {}, options)


@dataclass(frozen=True)
class _Spec:
    strategy: Strategy
    queue: str | None
    retries: int | None
    timeout: float | None
    cancel_on_parent_failure: bool


def fan_out(
    subs: Iterable[Sub],
    strategy: Strategy | None = None,
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | dt.timedelta | None = None,
    cancel_on_parent_failure: bool = True,
) -> Any:
    """Run the children in parallel as jobs; return their :class:`Results` in input order.

    ``strategy``: ``FailFast()`` (default), ``CollectAll()`` or ``Threshold(ratio)``. When it
    decides the fan-out failed (or ``timeout`` seconds pass first) this raises
    :class:`FanOutFailed`, whose ``results`` holds every child's outcome. ``queue`` and
    ``retries`` (the children's ``max_retries``) apply to children that set none;
    ``cancel_on_parent_failure`` cancels the unfinished children if the parent is cancelled.

    In an ``async def`` task, await it. Outside a worker (``apply()``, eager mode) the
    children run one after another in this process.
    """
    spec = _spec(strategy, queue, retries, timeout, cancel_on_parent_failure)
    items = _check_subs(subs)
    context = job_context()
    if awaitable_here():
        return _fan_out_async(context, items, spec)
    if context is None or not context.durable:
        return _run_inline(items, spec)
    index, recorded = context.next_position()
    if recorded is not None:
        return collect(context, replay(context, index, recorded, FAN_OUT))
    if not items:
        return Results()
    spawn(context, index, items, spec)


async def _fan_out_async(context: JobContext | None, items: list[Sub], spec: _Spec) -> Results:
    if context is None or not context.durable:
        return await asyncio.to_thread(_run_inline, items, spec)
    index = context.take_position()
    await asyncio.to_thread(context.preload)
    recorded = context.recorded(index)
    if recorded is not None:
        fan_out_id = replay(context, index, recorded, FAN_OUT)
        return await asyncio.to_thread(collect, context, fan_out_id)
    if not items:
        return Results()
    await asyncio.to_thread(spawn, context, index, items, spec)
    raise AssertionError("spawn() always suspends")


def _spec(
    strategy: Strategy | None,
    queue: str | None,
    retries: int | None,
    timeout: float | dt.timedelta | None,
    cancel_on_parent_failure: bool,
) -> _Spec:
    if strategy is None:
        strategy = FailFast()
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        raise TypeError(f"pass a strategy instance: strategy={strategy.__name__}()")
    if not isinstance(strategy, Strategy):
        raise TypeError(
            f"strategy must be FailFast(), CollectAll() or Threshold(ratio), not {strategy!r}"
        )
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ValueError(f"fan_out(queue=...) must be a non-empty string, got {queue!r}")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise ValueError(f"fan_out(retries=...) must be an integer >= 0, got {retries!r}")
    seconds: float | None = None
    if timeout is not None:
        seconds = timeout.total_seconds() if isinstance(timeout, dt.timedelta) else timeout
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ValueError(f"fan_out(timeout=...) must be a positive duration, got {timeout!r}")
    return _Spec(
        strategy,
        queue,
        retries,
        float(seconds) if seconds else None,
        bool(cancel_on_parent_failure),
    )


def _check_subs(subs: Iterable[Sub]) -> list[Sub]:
    if isinstance(subs, Sub | str | bytes):
        raise TypeError("fan_out() takes a list of sub(...) children")
    items = list(subs)
    for index, item in enumerate(items):
        if not isinstance(item, Sub):
            raise TypeError(
                f"fan_out() child {index} is a {type(item).__name__}, not a sub(task, ...)"
            )
    return items


# -- first run: spawn the children and suspend ------------------------------------------------


def spawn(context: JobContext, index: int, items: list[Sub], spec: _Spec) -> NoReturn:
    """Insert the fan-out, its children and checkpoint, suspend the parent; never returns."""
    app = context.app
    assert app is not None and context.worker_id is not None
    fan_out_id = str(uuid.uuid4())
    children, batches = _build_children(context, fan_out_id, items, spec)
    row = {
        "id": fan_out_id,
        "parent_id": context.id,
        "call_index": index,
        "strategy": spec.strategy.name,
        "threshold": spec.strategy.threshold,
        "needed": spec.strategy.needed(len(items)),
        "total": len(items),
        "timeout": spec.timeout,
        "cancel_on_parent_failure": spec.cancel_on_parent_failure,
    }
    content_type, data = context.encode(fan_out_id, "fan_out")
    checkpoint = {
        "job_id": context.id,
        "call_index": index,
        "call_type": FAN_OUT,
        "result": data,
        "content_type": content_type,
    }
    if not fanouts.spawn(app.storage, context.worker_id, row, checkpoint, children):
        raise JobNotOwned(
            f"job {context.id} is no longer held by this worker: its fan-out was not started"
        )
    for jobs, calls in batches:
        app.producer.announce(jobs, calls)
    logger.info(
        "Task %s[%s] waiting for fan-out %s of %d children (%r)",
        context.task_name,
        context.id,
        fan_out_id,
        len(items),
        spec.strategy,
    )
    if signals.job_waiting.receivers:
        signals.job_waiting.send(
            context.task, job_id=context.id, fan_out_id=fan_out_id, children=len(items)
        )
    raise Suspended(fan_out_id)


Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]


def _build_children(
    context: JobContext, fan_out_id: str, items: list[Sub], spec: _Spec
) -> tuple[list[tuple[NewJob, int]], list[tuple[list[NewJob], Calls]]]:
    """The children's rows, built in batches of the same task and options (routed once),
    with the ids their fan-out derives (``fanouts.child_id``)."""
    app = context.app
    assert app is not None
    groups: dict[tuple[str, str], tuple[Task | None, dict[str, Any], list[int]]] = {}
    for index, item in enumerate(items):
        key = (item.name, repr(sorted(item.options.items())) if item.options else "")
        group = groups.get(key)
        if group is None:
            task = item.task if isinstance(item.task, Task) else app.tasks.get(item.task)
            group = groups[key] = (task, _child_options(item, task, spec), [])
        group[2].append(index)
    children: list[tuple[NewJob, int]] = []
    batches: list[tuple[list[NewJob], Calls]] = []
    for (name, _), (task, options, indexes) in groups.items():
        calls: Calls = [(items[i].args, items[i].kwargs) for i in indexes]
        ids = [fanouts.child_id(fan_out_id, i) for i in indexes]
        if task is not None:
            jobs = app.producer.build_many(task, calls, options, ids)
        else:
            jobs = [
                app.producer.build(None, name, a, k, {**options, "task_id": job_id})
                for job_id, (a, k) in zip(ids, calls, strict=True)
            ]
        for job, index in zip(jobs, indexes, strict=True):
            job.unique_key = None  # a child must exist for its fan-out to be counted
            children.append((job, index))
        batches.append((jobs, calls))
    children.sort(key=lambda pair: pair[1])
    return children, batches


def _child_options(item: Sub, task: Task | None, spec: _Spec) -> dict[str, Any]:
    """A child's job options: its own, then the fan-out's defaults; results always stored."""
    options = dict(item.options)
    if spec.queue is not None:
        options.setdefault("queue", spec.queue)
    if spec.retries is not None:
        options.setdefault("max_retries", spec.retries)
    if task is None or task.ignores_result(options.get("ignore_result")):
        options["ignore_result"] = False  # the parent needs the result
    return options


# -- replay: collect the results ----------------------------------------------------------------


def collect(context: JobContext, fan_out_id: str) -> Results:
    """The children's results once the fan-out is decided; suspends again if it is not."""
    app = context.app
    assert app is not None and context.worker_id is not None
    storage = app.storage
    row = fanouts.get(storage, fan_out_id)
    if row is None:
        raise DBQueueError(
            f"fan-out {fan_out_id} of job {context.id} is gone (its rows were deleted): "
            "its results cannot be collected"
        )
    if row["status"] == "pending":
        suspended = fanouts.resuspend(storage, context.worker_id, context.id, fan_out_id)
        if suspended:
            logger.info(
                "Task %s[%s] waiting again for fan-out %s",
                context.task_name,
                context.id,
                fan_out_id,
            )
            raise Suspended(fan_out_id)
        if suspended is None:
            raise JobNotOwned(f"job {context.id} is no longer held by this worker")
        row = fanouts.get(storage, fan_out_id) or row
    results = _results(
        context,
        row,
        fanouts.children(storage, fan_out_id, int(row["total"]), bool(row["keyed_children"])),
    )
    if row["status"] != "completed":
        raise FanOutFailed(_summary(row, results), results)
    return results


def _results(context: JobContext, row: dict[str, Any], children: list[Any]) -> Results:
    app = context.app
    assert app is not None
    by_index = {child[0]: child for child in children}
    done = [child for child in children if child[3] == "completed" and child[4] is not None]
    decoded = decode_many([(child[4], child[5]) for child in done], app.result_accept)
    values = {child[0]: value for child, value in zip(done, decoded, strict=True)}
    results = Results()
    for index in range(int(row["total"])):
        child = by_index.get(index)
        if child is None:
            error = SubJobIncomplete(f"child {index} of fan-out {row['id']} has no row anymore")
            results.append(Result(index, error=error, status="missing"))
            continue
        _, job_id, task, status, _, _, error_type, message, traceback = child
        if status == "completed":
            results.append(Result(index, values.get(index), None, job_id, task))
            continue
        result = Result(index, job_id=job_id, task=task, status=status)
        where = f"child {index} ({task}, job {job_id})"
        if status == "failed":
            result.error = _rebuild(error_type, message)
            result.traceback = traceback
        elif status == "cancelled":
            result.error = SubJobCancelled(f"{where} was cancelled: {message or 'revoked'}")
        else:
            result.error = SubJobIncomplete(
                f"{where} was still {status} when the fan-out was decided"
            )
        results.append(result)
    return results


def _rebuild(error_type: str | None, message: str | None) -> BaseException:
    """The child's exception, of its own type when importable here, with its message."""
    module, _, name = (error_type or "builtins.Exception").rpartition(".")
    return exception_from_dict(
        {"exc_type": name, "exc_module": module or "builtins", "exc_message": [message or ""]}
    )


def _summary(row: dict[str, Any], results: Results) -> str:
    counts = {"completed": 0, "failed": 0, "cancelled": 0}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    unfinished = len(results) - counts["completed"] - counts["failed"] - counts["cancelled"]
    what = {
        "failed": f"failed ({row['strategy']})",
        "timed_out": "timed out before its strategy was decided",
        "cancelled": "was cancelled with its parent",
    }.get(row["status"], row["status"])
    text = (
        f"fan-out {row['id']} {what}: {counts['completed']} of {len(results)} children "
        f"completed, {counts['failed']} failed, {counts['cancelled']} cancelled"
    )
    if unfinished:
        text += f", {unfinished} unfinished"
    first = next((r for r in results if r.status == "failed"), None)
    if first is not None and first.error is not None:
        text += (
            f"; first failure: child {first.index} ({first.task}): "
            f"{type(first.error).__name__}: {first.error}"
        )
    return text


# -- outside a worker ---------------------------------------------------------------------------


def _run_inline(items: list[Sub], spec: _Spec) -> Results:
    """``apply()`` / eager mode: run each child here, one after another, then decide."""
    results = Results()
    for index, item in enumerate(items):
        task = resolve(item.task, job_context())
        outcome = task.apply(item.args, item.kwargs, throw=False)
        if outcome.successful():
            results.append(Result(index, outcome.result, job_id=outcome.id, task=task.name))
        else:
            error = outcome.result
            if not isinstance(error, BaseException):
                error = SubJobIncomplete(f"child {index} ({task.name}) ended {outcome.state}")
            results.append(
                Result(
                    index,
                    error=error,
                    job_id=outcome.id,
                    task=task.name,
                    status="failed",
                    traceback=outcome.traceback,
                )
            )
    total, completed = len(results), results.success_count()
    status = fanouts.decide(
        spec.strategy.name,
        spec.strategy.needed(total),
        total,
        completed,
        total - completed,
        0,
    )
    if status != "completed":
        row = {"id": "(eager)", "strategy": spec.strategy.name, "status": "failed"}
        raise FanOutFailed(_summary(row, results), results)
    return results
