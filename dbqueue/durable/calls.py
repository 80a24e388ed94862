"""``call(task, *args, **kwargs)``: run a task's function inline, once per job.

The first run of a job runs the function and records its result at the call's position
(one write); a replay (retry, crash recovery, wake-up after a fan-out, resume) returns the
recorded result without running it. A ``NoRetry`` raised by the step is recorded too and
raised again on replay; any other exception is not, so the step runs again when the job
retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from dbqueue import request as _request
from dbqueue.durable.context import FAN_OUT, JobContext, awaitable_here, job_context
from dbqueue.exceptions import CheckpointMismatch, NoRetry
from dbqueue.storage.checkpoints import StoredCheckpoint
from dbqueue.task import Task


def call(task: Task | str, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``task``'s function here, checkpointed: on replay, return its recorded result.

    In an ``async def`` task, await it: ``value = await call(step, x)``. Outside a job it
    simply calls the function. Concurrent calls (``asyncio.gather``) take their positions in
    the order they start, so keep that order deterministic.
    """
    context = job_context()
    step = resolve(task, context)
    if step.typing:
        step.check_arguments(args, kwargs)
    if awaitable_here():
        return _call_async(context, step, args, kwargs)
    if context is None:
        return _invoke(step, args, kwargs)
    index, recorded = context.next_position()
    if recorded is not None:
        return replay(context, index, recorded, step.name)
    try:
        value = _run_step(context, step, args, kwargs)
    except NoRetry as error:
        context.record(_error_checkpoint(index, step.name, error))
        raise
    return _record_result(context, index, step.name, value)


async def _call_async(
    context: JobContext | None, step: Task, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if context is None:
        return await _invoke_async(step, args, kwargs)
    index = context.take_position()
    if context.durable:
        await asyncio.to_thread(context.preload)
    recorded = context.recorded(index)
    if recorded is not None:
        return replay(context, index, recorded, step.name)
    token = _request.push(_step_request(context, step, args, kwargs))
    try:
        value = await _invoke_async(step, args, kwargs)
    except NoRetry as error:
        await asyncio.to_thread(context.record, _error_checkpoint(index, step.name, error))
        raise
    finally:
        _request.pop(token)
    return await asyncio.to_thread(_record_result, context, index, step.name, value)


def resolve(task: Task | str, context: JobContext | None) -> Task:
    """A Task from a task or a registered name (of the running job's app)."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        if context is None or context.app is None:
            from dbqueue.app import current_app

            return current_app().tasks[task]
        return context.app.tasks[task]
    raise TypeError(f"call() takes a task or a task name, not {type(task).__name__}")


def replay(context: JobContext, index: int, recorded: StoredCheckpoint, name: str) -> Any:
    """The recorded outcome at ``index``, after checking the same call is made there."""
    if recorded.type != name:
        raise CheckpointMismatch(
            f"job {context.id} replayed position {index}: the first run recorded "
            f"{describe(recorded.type)} there, but the code now makes {describe(name)}. "
            "The workflow's code changed under a live job; it cannot be replayed safely"
        )
    value = context.value(recorded)
    if recorded.error_type is not None:
        raise NoRetry(value)
    return value


def describe(call_type: str) -> str:
    """How an error message names what was recorded at a position."""
    return "a fan_out()" if call_type == FAN_OUT else f"a call of {call_type!r}"


def _record_result(context: JobContext, index: int, name: str, value: Any) -> Any:
    """Store the step's result; return it as a replay would (round-tripped), so both runs see
    the same types (a tuple comes back as a list under JSON, every time)."""
    content_type, data = context.encode(value, f"step {name!r}")
    checkpoint = StoredCheckpoint(index, name, data, content_type)
    context.record(checkpoint)
    return context.value(checkpoint)


def _error_checkpoint(index: int, name: str, error: NoRetry) -> StoredCheckpoint:
    cls = type(error.exc)
    return StoredCheckpoint(
        index, name, None, None, f"{cls.__module__}.{cls.__qualname__}"[:255], str(error.exc)
    )


def _step_request(
    context: JobContext, step: Task, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _request.Context:
    """The request a step runs under: the job's (same id, same checkpoints), the step's name."""
    fields = dict(context.request.__dict__)
    fields.update(task=step.name, args=args, kwargs=kwargs, _task=step, _durable=context)
    return _request.Context(**fields)


def _run_step(
    context: JobContext, step: Task, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    token = _request.push(_step_request(context, step, args, kwargs))
    try:
        return _invoke(step, args, kwargs)
    finally:
        _request.pop(token)


def _function(step: Task) -> Any:
    from dbqueue.execution import _function as function

    return function(step)


def _invoke(step: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call the step's function in this thread (an async one on a loop of its own)."""
    if step.is_async:
        from dbqueue.worker.aio import run_coroutine

        awaitable: Awaitable[Any] = _function(step)(*args, **kwargs)
        return run_coroutine(awaitable)
    return _function(step)(*args, **kwargs)


async def _invoke_async(step: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Await an async step; run a sync one in a thread, so the event loop keeps going."""
    if step.is_async:
        return await _function(step)(*args, **kwargs)
    return await asyncio.to_thread(_function(step), *args, **kwargs)
