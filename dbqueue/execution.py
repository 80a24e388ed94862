"""The tracer: run one job and decide what happened, the same way in a worker and in ``apply()``.

A run has two halves. :func:`run_sync` / :func:`run_async` call the task (prerun signal,
before_start, the body) and classify its ending into a :class:`Decision`. After the worker has
committed the matching :class:`~dbqueue.storage.Outcome`, :func:`after_commit` calls the
handlers and Celery's signals, so a ``task_success`` handler always sees a committed result.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback as tb
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from dbqueue import request as _request
from dbqueue import signals, states
from dbqueue.exceptions import (
    EncodeError,
    Ignore,
    JobStopped,
    NoRetry,
    Reject,
    Retry,
    RetryAfter,
    SoftTimeLimitExceeded,
    Suspended,
)
from dbqueue.result import EagerResult
from dbqueue.serialization import check_allowed, decode_call, encode, encode_call
from dbqueue.storage import Outcome
from dbqueue.task import Task
from dbqueue.utils.timeutils import to_epoch

logger = logging.getLogger("dbqueue.app.trace")

#: Longest stored traceback, in characters.
MAX_TRACEBACK = 64 * 1024


class ExceptionInfo:
    """Celery's ``einfo``: the exception, its type and its formatted traceback."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.tb = exc.__traceback__
        self.traceback = "".join(tb.format_exception(exc))[-MAX_TRACEBACK:]

    def __str__(self) -> str:
        return self.traceback


@dataclass
class Decision:
    """How a run ended. kind: success, ignored, fail, retry, requeue, rejected, suspended (it
    waits for fan-out children), stopped (the worker stopped it on request: an aggressive pause
    or a termination)."""

    kind: str
    retval: Any = None
    exc: BaseException | None = None
    einfo: ExceptionInfo | None = None
    delay: float = 0.0
    new_args: tuple[Any, ...] | None = None
    new_kwargs: dict[str, Any] | None = None
    runtime: float = 0.0
    #: The Retry behind a retry decision (Celery's ``reason`` for the task_retry signal).
    retry: Retry | None = None

    @property
    def state(self) -> str:
        return _STATE[self.kind]


_STATE = {
    "success": states.SUCCESS,
    "ignored": states.IGNORED,
    "fail": states.FAILURE,
    "retry": states.RETRY,
    "requeue": states.PENDING,
    "rejected": states.REJECTED,
    "stopped": states.PENDING,
    "suspended": states.STARTED,
}


def build_request(
    task: Task,
    job: Any,
    args: list[Any],
    kwargs: dict[str, Any],
    hostname: str,
    worker_id: str | None,
) -> _request.Context:
    """The ``self.request`` of a claimed job."""
    options = job.options
    request = _request.Context.__new__(_request.Context)
    request.__dict__ = {
        "id": job.id,
        "task": job.task,
        "args": args,
        "kwargs": kwargs,
        "retries": job.attempt - 1,
        "attempt": job.attempt,
        "max_retries": job.max_retries,
        "hostname": hostname,
        "worker_id": worker_id,
        "delivery_info": {
            "exchange": "",
            "routing_key": job.queue,
            "priority": job.priority,
            "redelivered": job.attempt > 1,
        },
        "is_eager": False,
        "called_directly": False,
        "ignore_result": task.ignores_result(options.get("ignore_result") if options else None),
        "root_id": job.root_id or job.id,
        "parent_id": job.parent_id,
        "queue": job.queue,
        "priority": job.priority,
        "correlation_id": job.id,
        "checkpointed": job.checkpointed,
        "fan_out_id": job.fan_out_id,
        "_task": task,
    }
    if options:
        request.__dict__.update(
            eta=options.get("eta"),
            expires=options.get("expires"),
            origin=options.get("origin"),
            timelimit=(options.get("time_limit"), options.get("soft_time_limit")),
            headers=options.get("headers"),
            shadow=options.get("shadow"),
        )
    return request


def _function(task: Task) -> Any:
    """Celery calls ``task`` itself when a base class overrides ``__call__`` (Flask pattern)."""
    return task if type(task).__call__ is not Task.__call__ else task.run


def _prerun(task: Task, request: _request.Context) -> _request.Context:
    if signals.task_prerun.receivers:
        signals.task_prerun.send(
            task, task_id=request.id, task=task, args=request.args, kwargs=request.kwargs
        )
    if type(task).before_start is not Task.before_start:
        task.before_start(str(request.id), request.args, request.kwargs)
    return request


def run_sync(
    task: Task, request: _request.Context, guard: AbstractContextManager[Any] | None = None
) -> Decision:
    """Run a sync task body and classify how it ended.

    ``guard`` wraps just the body (the time-limit watchdog), inside the exception handler, so
    a limit that fires as the body returns still ends up classified, never loose.
    """
    token = _request.push(request)
    started = time.perf_counter()
    try:
        _prerun(task, request)
        if guard is None:
            retval = _function(task)(*request.args, **request.kwargs)
        else:
            with guard:
                retval = _function(task)(*request.args, **request.kwargs)
    except JobStopped as stopped:
        decision = Decision("stopped", exc=stopped)
    except Suspended:
        decision = Decision("suspended")
    except Exception as exc:
        decision = classify(task, request, exc)
    else:
        decision = _succeeded(task, request, retval)
    finally:
        _request.pop(token)
    decision.runtime = time.perf_counter() - started
    return decision


async def run_async(
    task: Task,
    request: _request.Context,
    limit: float | None = None,
    limit_exc: type[Exception] = SoftTimeLimitExceeded,
) -> Decision:
    """Run an ``async def`` task body on the running event loop and classify how it ended.

    After ``limit`` seconds the body is cancelled (it sees CancelledError and may clean up)
    and the run ends with ``limit_exc``.
    """
    token = _request.push(request)
    started = time.perf_counter()
    try:
        _prerun(task, request)
        if limit:
            scope = asyncio.timeout(limit)
            try:
                async with scope:
                    retval = await _function(task)(*request.args, **request.kwargs)
            except TimeoutError as error:
                if not scope.expired():
                    raise
                raise limit_exc(f"{task.name} exceeded its time limit of {limit}s") from error
        else:
            retval = await _function(task)(*request.args, **request.kwargs)
    except JobStopped as stopped:
        decision = Decision("stopped", exc=stopped)
    except Suspended:
        decision = Decision("suspended")
    except Exception as exc:
        decision = classify(task, request, exc)
    else:
        decision = _succeeded(task, request, retval)
    finally:
        _request.pop(token)
    decision.runtime = time.perf_counter() - started
    return decision


def _succeeded(task: Task, request: _request.Context, retval: Any) -> Decision:
    """The body returned; a ``retry(throw=False)`` it made still turns the run into a retry."""
    if request.pending_retry is not None:
        return _retry_decision(task, request.pending_retry)
    return Decision("success", retval=retval)


def classify(task: Task, request: _request.Context, exc: Exception) -> Decision:
    """Turn an exception from the body into a Decision (Celery's rules, plus the seed's)."""
    if isinstance(exc, Retry):
        return _retry_decision(task, exc)
    if isinstance(exc, Ignore):
        return Decision("ignored", exc=exc)
    if isinstance(exc, Reject):
        return Decision("requeue" if exc.requeue else "rejected", exc=exc, einfo=ExceptionInfo(exc))
    if isinstance(exc, NoRetry):
        return Decision("fail", exc=exc.exc, einfo=ExceptionInfo(exc.exc))
    if isinstance(exc, RetryAfter):
        reason = exc.exc or exc
        limit = request.__dict__.get("max_retries", task.max_retries)
        if limit is None or request.retries < limit:
            return _retry_decision(task, Retry(exc=reason, when=exc.seconds))
        return Decision("fail", exc=reason, einfo=ExceptionInfo(reason))
    if (
        task.autoretry_for
        and isinstance(exc, task.autoretry_for)
        and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
    ):
        return _autoretry(task, request, exc)
    return Decision("fail", exc=exc, einfo=ExceptionInfo(exc))


def _retry_decision(task: Task, exc: Retry) -> Decision:
    when = exc.when
    if isinstance(when, int | float) or when is None:
        delay = float(when or 0)
    else:
        delay = to_epoch(when, task.app.conf.timezone) - time.time()
    reason = exc.exc or exc
    return Decision(
        "retry",
        exc=reason,
        einfo=ExceptionInfo(reason),
        delay=max(delay, 0.0),
        new_args=getattr(exc, "new_args", None),
        new_kwargs=getattr(exc, "new_kwargs", None),
        retry=exc,
    )


def _autoretry(task: Task, request: _request.Context, exc: Exception) -> Decision:
    from dbqueue.backoff import task_backoff

    options = dict(task.retry_kwargs or {})
    if task.retry_backoff:
        factor = 1.0 if task.retry_backoff is True else float(task.retry_backoff)
        options["countdown"] = task_backoff(
            factor, request.retries, task.retry_backoff_max, task.retry_jitter
        )
    token = _request.push(request)
    try:
        task.retry(exc=exc, **options)
    except Retry as retry:
        return _retry_decision(task, retry)
    except Exception as final:
        return Decision("fail", exc=final, einfo=ExceptionInfo(final))
    finally:
        _request.pop(token)
    return Decision("fail", exc=exc, einfo=ExceptionInfo(exc))


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"[:255]


#: Longest stored error message, in characters.
MAX_ERROR = 16 * 1024


def to_outcome(
    task: Task,
    request: _request.Context,
    decision: Decision,
    result_serializer: str,
    task_serializer: str,
) -> Outcome:
    """The storage write for a decision; a result that does not serialize fails the job."""
    job_id = str(request.id)
    kind = decision.kind
    if kind == "success":
        if request.ignore_result or decision.retval is None:
            return Outcome("complete", job_id)
        try:
            content_type, data = encode(decision.retval, result_serializer)
        except Exception as error:
            failure = EncodeError(
                f"result of task {task.name!r} ({type(decision.retval).__name__}) cannot be "
                f"serialized with {result_serializer}: {error}"
            )
            decision.kind, decision.exc = "fail", failure
            decision.einfo = ExceptionInfo(failure)
            return to_outcome(task, request, decision, result_serializer, task_serializer)
        return Outcome("complete", job_id, result=data, result_type=content_type)
    if kind == "ignored":
        return Outcome("complete", job_id, error_type=states.IGNORED_MARK)
    if kind in ("requeue", "stopped"):
        return Outcome("release", job_id)
    if kind == "suspended":
        return Outcome("suspend", job_id)
    exc = decision.exc
    assert exc is not None
    error_type = states.REJECTED_MARK if kind == "rejected" else _error_type(exc)
    message = str(getattr(exc, "reason", None) or exc) if kind == "rejected" else str(exc)
    message = message[:MAX_ERROR]
    traceback = decision.einfo.traceback if decision.einfo else None
    if kind == "retry":
        payload = None
        if decision.new_args is not None or decision.new_kwargs is not None:
            args = decision.new_args if decision.new_args is not None else request.args
            kwargs = decision.new_kwargs if decision.new_kwargs is not None else request.kwargs
            _, payload = encode_call(task.name, args, kwargs, task_serializer)
        return Outcome(
            "retry",
            job_id,
            error_type=error_type,
            error=message,
            traceback=traceback,
            delay=decision.delay,
            payload=payload,
        )
    return Outcome("fail", job_id, error_type=error_type, error=message, traceback=traceback)


def after_commit(
    task: Task, request: _request.Context, decision: Decision, owned: bool = True
) -> None:
    """Handlers, Celery's signals and the log line, once the outcome is committed.

    The job's request is current again meanwhile, so handlers can read ``sender.request``.
    """
    token = _request.push(request)
    try:
        _after_commit(task, request, decision, owned)
    finally:
        _request.pop(token)


def _after_commit(task: Task, request: _request.Context, decision: Decision, owned: bool) -> None:
    args, kwargs, task_id = request.args, request.kwargs, str(request.id)
    einfo = decision.einfo
    if decision.kind == "stopped":
        _stopped(task, request, owned)
        return
    if not owned:
        _log_discarded(task, task_id)
    elif decision.kind == "success":
        log_success(task, task_id, decision)
        task.on_success(decision.retval, task_id, args, kwargs)
        signals.task_success.send(task, result=decision.retval, runtime=decision.runtime)
    elif decision.kind == "retry":
        assert decision.exc is not None
        reason = "" if isinstance(decision.exc, Retry) else f": {decision.exc!r}"
        logger.info(
            "Task %s[%s] retry: Retry in %gs%s",
            task.name,
            task_id,
            round(decision.delay, 3),
            reason,
        )
        task.on_retry(decision.exc, task_id, args, kwargs, einfo)
        signals.task_retry.send(task, request=request, reason=decision.retry, einfo=einfo)
    elif decision.kind == "rejected":
        logger.warning("Task %s[%s] rejected: %r", task.name, task_id, decision.exc)
    elif decision.kind == "fail":
        assert decision.exc is not None
        _log_failure(task, task_id, decision)
        task.on_failure(decision.exc, task_id, args, kwargs, einfo)
        signals.task_failure.send(
            task,
            task_id=task_id,
            exception=decision.exc,
            args=args,
            kwargs=kwargs,
            traceback=einfo.tb if einfo else None,
            einfo=einfo,
        )
    task.after_return(
        decision.state,
        decision.retval if decision.kind == "success" else decision.exc,
        task_id,
        args,
        kwargs,
        einfo,
    )
    signals.task_postrun.send(
        task,
        task_id=task_id,
        task=task,
        args=args,
        kwargs=kwargs,
        retval=decision.retval if decision.kind == "success" else decision.exc,
        state=decision.state,
    )


def log_success(task: Task, task_id: str, decision: Decision, owned: bool = True) -> None:
    """Celery's "succeeded in" line (at INFO), once the outcome is committed."""
    if not owned:
        _log_discarded(task, task_id)
    elif logger.isEnabledFor(logging.INFO):
        logger.info(
            "Task %s[%s] succeeded in %.6fs: %s",
            task.name,
            task_id,
            decision.runtime,
            _short_repr(decision.retval),
        )


def _log_discarded(task: Task, task_id: str) -> None:
    logger.warning(
        "Task %s[%s] finished but the job was taken over or revoked meanwhile; "
        "its outcome was discarded",
        task.name,
        task_id,
    )


def _stopped(task: Task, request: _request.Context, owned: bool) -> None:
    """A run stopped on request: given back (paused, or to the queue) or terminated."""
    if owned:
        logger.warning(
            "Task %s[%s] stopped: released without using up its attempt", task.name, request.id
        )
        return
    logger.warning("Task %s[%s] terminated (revoked)", task.name, request.id)
    signals.task_revoked.send(task, request=request, terminated=True, signum=None, expired=False)


def _log_failure(task: Task, task_id: Any, decision: Decision) -> None:
    exc = decision.exc
    if task.throws and isinstance(exc, task.throws):
        logger.info("Task %s[%s] raised expected: %r", task.name, task_id, exc)
    else:
        logger.error(
            "Task %s[%s] raised unexpected: %r\n%s",
            task.name,
            task_id,
            exc,
            decision.einfo.traceback if decision.einfo else "",
        )


def _short_repr(value: Any, limit: int = 256) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def apply_eagerly(
    task: Task,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    task_id: str | None,
    throw: bool | None,
    options: dict[str, Any],
) -> EagerResult:
    """``Task.apply()``: run in-process through the same tracer; retries re-run inline."""
    app = task.app
    serializer = task.serializer or app.conf.task_serializer
    check_allowed(serializer, app.accept)
    content_type, payload = encode_call(task.name, args, kwargs, serializer, task.param_names())
    call_args, call_kwargs = decode_call(payload, content_type, app.accept)
    job_id = task_id or str(uuid.uuid4())
    retries = int(options.get("retries", 0))
    parent = _request.current_request()
    while True:
        request = _request.Context(
            id=job_id,
            task=task.name,
            args=call_args,
            kwargs=call_kwargs,
            retries=retries,
            attempt=retries + 1,
            max_retries=options.get("max_retries", task.max_retries),
            is_eager=True,
            called_directly=False,
            delivery_info={
                "exchange": "",
                "routing_key": options.get("queue"),
                "priority": options.get("priority"),
                "redelivered": False,
            },
            hostname="eager",
            root_id=parent.root_id if parent else job_id,
            parent_id=parent.id if parent else None,
            headers=options.get("headers"),
            ignore_result=task.ignores_result(options.get("ignore_result")),
            _task=task,
        )
        if task.is_async:
            from dbqueue.worker.aio import run_coroutine

            decision = run_coroutine(run_async(task, request))
        else:
            decision = run_sync(task, request)
        after_commit(task, request, decision)
        if decision.kind != "retry":
            break
        retries += 1
        if decision.new_args is not None:
            call_args = list(decision.new_args)
        if decision.new_kwargs is not None:
            call_kwargs = decision.new_kwargs
    propagate = app.conf.task_eager_propagates if throw is None else throw
    value = decision.retval if decision.kind == "success" else decision.exc
    if propagate and decision.kind in ("fail", "rejected"):
        assert decision.exc is not None
        raise decision.exc
    return EagerResult(
        job_id,
        value,
        decision.state,
        decision.einfo.traceback if decision.einfo else None,
        task.name,
    )
