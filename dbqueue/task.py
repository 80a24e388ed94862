"""``Task``: Celery's task class. ``@app.task`` turns a function into a subclass instance.

Options are class attributes with Celery's names and defaults; ``delay`` and ``apply_async``
check the call against the function's signature, serialize it and insert one row.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from dbqueue import request as _request
from dbqueue.exceptions import MaxRetriesExceededError, Retry
from dbqueue.result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from dbqueue.app import DBQueue


class Task:
    """A task type. Subclass it (``base=``) to share options and handlers between tasks."""

    app: DBQueue
    #: The registered name; defaults to ``module.function``.
    name: str = ""
    #: Check calls against the signature at ``delay()`` time.
    typing: bool = True
    #: Retries allowed after the first run (None: unlimited). Celery's default.
    max_retries: int | None = 3
    #: Seconds before a retry when neither countdown nor eta is given.
    default_retry_delay: float = 180
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    #: False, True (factor 1) or a number: exponential countdown ``factor * 2**retries``.
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    #: Store no result (the job row still records success or failure).
    ignore_result: bool | None = None
    serializer: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    queue: str | None = None
    priority: int | None = None
    expires: float | dt.datetime | None = None
    #: A unique key for every call: a ``str.format`` template over the arguments, or a function
    #: of ``(*args, **kwargs)``. At most one live job holds a key.
    unique_key: str | Callable[..., str] | None = None
    #: Expected exceptions: logged without a traceback.
    throws: tuple[type[BaseException], ...] = ()
    rate_limit: str | None = None
    acks_late: bool = True
    track_started: bool = True
    reject_on_worker_lost: bool | None = None
    #: Whether ``run`` is a coroutine function (set from the decorated function).
    is_async: bool = False
    #: Whether the function receives the task instance as its first argument.
    bind: bool = False
    MaxRetriesExceededError = MaxRetriesExceededError

    _signature: inspect.Signature | None = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task body; the decorator supplies it."""
        raise NotImplementedError(f"task {self.name!r} has no run() method")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the body in this process, now, as a plain function call."""
        current = _request.current_request()
        if current is not None and current.task == self.name and not current.called_directly:
            return self.run(*args, **kwargs)
        token = _request.push(
            _request.Context(task=self.name, args=args, kwargs=kwargs, _task=self)
        )
        try:
            return self.run(*args, **kwargs)
        finally:
            _request.pop(token)

    @property
    def request(self) -> _request.Context:
        """The running job's request (Celery's ``self.request``)."""
        current = _request.current_request()
        if current is not None and current.task == self.name:
            return current
        return _request.Context()

    # -- calling -----------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Enqueue a call with default options. Returns once the job is committed."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        expires: float | dt.datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue a call with Celery's options (countdown, eta, expires, priority, queue, ...).

        ``unique_key`` makes the job unique among live jobs: a duplicate returns the live job's
        result instead of enqueuing a second one.
        """
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if self.typing:
            self.check_arguments(args, kwargs)
        if self.app.conf.task_always_eager:
            job = self.app.build_job(
                self,
                args,
                kwargs,
                dict(
                    options,
                    task_id=task_id,
                    countdown=countdown,
                    eta=eta,
                    expires=expires,
                    priority=priority,
                    queue=queue,
                    unique_key=unique_key,
                ),
            )
            options.update(queue=job.queue, priority=job.priority)
            return self.apply(args, kwargs, task_id=job.id, **options)
        return self.app.publish(
            self,
            args,
            kwargs,
            task_id=task_id,
            countdown=countdown,
            eta=eta,
            expires=expires,
            priority=priority,
            queue=queue,
            unique_key=unique_key,
            **options,
        )

    def delay_many(self, calls: Iterable[Any], **options: Any) -> list[AsyncResult]:
        """Enqueue many calls in one round trip (COPY on PostgreSQL).

        Each item is a tuple of positional arguments, a dict of keyword arguments, or an
        ``(args, kwargs)`` pair given as ``([...], {...})``.
        """
        normalized = [_split_call(item) for item in calls]
        if self.typing:
            for call_args, call_kwargs in normalized:
                self.check_arguments(call_args, call_kwargs)
        if self.app.conf.task_always_eager:
            return [self.apply(a, k, **options) for a, k in normalized]
        return self.app.publish_many(self, normalized, **options)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here and now through the worker's execution path (signals included)."""
        from dbqueue.execution import apply_eagerly

        return apply_eagerly(self, tuple(args or ()), dict(kwargs or {}), task_id, throw, options)

    def retry(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: dt.datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Schedule the running job to run again; raises :class:`Retry` (Celery semantics).

        With no retries left it re-raises ``exc``, or raises MaxRetriesExceededError.
        """
        request = self.request
        if request.called_directly or request.id is None:
            raise exc if exc is not None else Retry("Task can be retried", None)
        limit = (
            max_retries
            if max_retries is not None
            else request.__dict__.get("max_retries", self.max_retries)
        )
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}",
                task_args=request.args,
                task_kwargs=request.kwargs,
            )
        when: float | dt.datetime
        if eta is not None:
            when = eta
        else:
            when = self.default_retry_delay if countdown is None else countdown
        error = Retry(exc=exc, when=when)
        error.new_args = tuple(args) if args is not None else None  # type: ignore[attr-defined]
        error.new_kwargs = dict(kwargs) if kwargs is not None else None  # type: ignore[attr-defined]
        if throw:
            raise error
        request.pending_retry = error
        return error

    def ignores_result(self, override: bool | None = None) -> bool:
        """Whether a run stores no value: the call's option, the task's, then the setting."""
        if override is not None:
            return bool(override)
        if self.ignore_result is not None:
            return bool(self.ignore_result)
        return bool(self.app.conf.task_ignore_result)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    # -- signature checking -----------------------------------------------------------------

    def signature_for_check(self) -> inspect.Signature:
        """The call signature users pass arguments to (without ``self`` for bound tasks)."""
        if self._signature is None:
            self._signature = inspect.signature(self.run)
        return self._signature

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError naming the task when a call does not fit its signature."""
        if not kwargs:
            low, high = self._positional_range()
            if low <= len(args) <= high:
                return
        try:
            self.signature_for_check().bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"task {self.name!r} called with bad arguments: {error}") from None

    def _positional_range(self) -> tuple[int, float]:
        """How many positional arguments alone satisfy the signature (the common fast check)."""
        cached = self.__dict__.get("_positional")
        if cached is None:
            params = self.signature_for_check().parameters.values()
            positional = [
                p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            required = sum(1 for p in positional if p.default is p.empty)
            high = (
                float("inf") if any(p.kind is p.VAR_POSITIONAL for p in params) else len(positional)
            )
            if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
                high = -1
            cached = self.__dict__["_positional"] = (required, high)
        return cached

    def param_names(self) -> list[str]:
        return list(self.signature_for_check().parameters)

    def unique_key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The task-level unique key for a call, if the task declares one."""
        template = self.unique_key
        if template is None:
            return None
        if callable(template):
            return str(template(*args, **kwargs))
        bound = self.signature_for_check().bind_partial(*args, **kwargs)
        bound.apply_defaults()
        return template.format(*args, **bound.arguments)

    # -- handlers (override in a base class) --------------------------------------------------

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Runs before the body."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Runs after the result is committed."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Runs after the failure is committed."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Runs after the retry is committed."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Runs after every run, whatever its outcome."""

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"


def _split_call(item: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(item, dict):
        return (), dict(item)
    if (
        isinstance(item, list | tuple)
        and len(item) == 2
        and isinstance(item[0], list | tuple)
        and isinstance(item[1], dict)
    ):
        return tuple(item[0]), dict(item[1])
    if isinstance(item, list | tuple):
        return tuple(item), {}
    return (item,), {}


def make_task(
    app: DBQueue, fun: Callable[..., Any], base: type[Task], options: dict[str, Any], name: str
) -> Task:
    """Build a Task subclass around ``fun`` with ``options`` as attributes, and instantiate it."""
    bind = bool(options.pop("bind", False))
    attrs: dict[str, Any] = {
        "app": app,
        "name": name,
        "bind": bind,
        "is_async": inspect.iscoroutinefunction(fun),
        "run": fun if bind else staticmethod(fun),
        "__doc__": fun.__doc__,
        "__module__": fun.__module__,
        "__qualname__": fun.__qualname__,
        "__wrapped__": fun,
        "_signature": None,
    }
    for key, value in options.items():
        if key in _TUPLE_OPTIONS and value is not None:
            value = tuple(value)
        elif key == "unique_key" and inspect.isfunction(value):
            value = staticmethod(value)
        attrs[key] = value
    task_cls = type(fun.__name__, (base,), attrs)
    return task_cls()


_TUPLE_OPTIONS = {"autoretry_for", "dont_autoretry_for", "throws"}
