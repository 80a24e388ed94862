"""``self.request``: what a running task knows about its job, with Celery's field names.

The current request lives in a context variable, so sync tasks in threads and async tasks on
one event loop each see their own.
"""

from __future__ import annotations

import contextvars
from typing import Any

_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "dbqueue_request", default=None
)


class Context:
    """The request of one task run (Celery's ``Context``); unknown fields read as None."""

    id: str | None = None
    task: str | None = None
    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] = {}
    retries: int = 0
    attempt: int = 1
    max_retries: int | None = None
    eta: str | None = None
    expires: str | None = None
    hostname: str | None = None
    worker_id: str | None = None
    delivery_info: dict[str, Any] = {}
    is_eager: bool = False
    called_directly: bool = True
    origin: str | None = None
    timelimit: tuple[float | None, float | None] = (None, None)
    ignore_result: bool = False
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Any = None
    chain: Any = None
    callbacks: Any = None
    errbacks: Any = None
    headers: dict[str, Any] | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    shadow: str | None = None
    properties: dict[str, Any] = {}
    utc: bool = True
    queue: str | None = None
    priority: int = 0
    #: A ``retry(throw=False)`` the run still owes: the job is retried once the body returns.
    pending_retry: Any = None
    #: Whether the job has checkpoints to replay (read once, at its first durable call).
    checkpointed: bool = False
    #: The fan-out this job is a child of, if any.
    fan_out_id: str | None = None

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)
        if "correlation_id" not in fields and "id" in fields:
            self.correlation_id = fields["id"]

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context: {self.__dict__!r}>"


def current_request() -> Context | None:
    """The request of the task running in this thread or asyncio task, if any."""
    return _current.get()


def push(request: Context) -> contextvars.Token[Context | None]:
    return _current.set(request)


def pop(token: contextvars.Token[Context | None]) -> None:
    _current.reset(token)
