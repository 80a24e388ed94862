"""Turning a call into a job row: routing, serialization, timing, publish signals.

``apply_async`` accepts Celery's options. Those that only mean something to an AMQP broker
(exchange, routing details, publish retry policies) are accepted and ignored; an option
nobody knows is a TypeError naming it, so a typo never silently changes behaviour.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dbqueue import signals
from dbqueue.request import current_request
from dbqueue.result import AsyncResult
from dbqueue.routing import MapRouter, compile_routes, lookup
from dbqueue.serialization import check_allowed, encode_call
from dbqueue.storage import NewJob
from dbqueue.utils.ids import new_ids
from dbqueue.utils.timeutils import iso, to_epoch

if TYPE_CHECKING:
    from dbqueue.app import DBQueue
    from dbqueue.task import Task

#: Celery options that only matter to AMQP brokers or kombu producers.
IGNORED_OPTIONS = frozenset(
    {
        "exchange",
        "exchange_type",
        "retry",
        "retry_policy",
        "connection",
        "producer",
        "add_to_parent",
        "reply_to",
        "compression",
        "mandatory",
        "immediate",
        "delivery_mode",
        "declare",
        "stamped_headers",
        "stamps",
        "group_id",
        "group_index",
        "publisher",
    }
)
#: Options stored with the job and read back by the worker.
STORED_OPTIONS = ("ignore_result", "time_limit", "soft_time_limit", "shadow")
#: Canvas options not supported yet: refusing them beats dropping callbacks on the floor.
UNSUPPORTED_OPTIONS = frozenset({"link", "link_error", "chain", "chord"})
#: Celery's default max_retries, used for tasks this process does not know.
DEFAULT_MAX_RETRIES = 3


class Producer:
    """Builds and inserts job rows for one app."""

    def __init__(self, app: DBQueue) -> None:
        self.app = app
        self._routes_source: Any = object()
        self._routers: list[Any] = []
        self._allowed: dict[str, str] = {}
        self._origin = f"gen{os.getpid()}@{socket.gethostname()}"

    def publish(
        self,
        task: Task | None,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> AsyncResult:
        job = self.build(task, name, args, kwargs, options)
        self._before(job, args, kwargs, options)
        job_id = self.app.storage.insert_job(job)
        self._after(job, args, kwargs)
        self.app.wake_local(job.queue)
        return AsyncResult(job_id, app=self.app, task_name=name)

    def publish_many(
        self,
        task: Task,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        options: dict[str, Any],
    ) -> list[AsyncResult]:
        if not calls:
            return []
        if options.get("task_id"):
            raise TypeError("delay_many() cannot take task_id: each job needs its own id")
        jobs = self.build_many(task, calls, options)
        ids = self.app.storage.insert_jobs(jobs)
        self.announce(jobs, calls)
        return [AsyncResult(job_id, app=self.app, task_name=task.name) for job_id in ids]

    def build_many(
        self,
        task: Task,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        options: dict[str, Any],
        ids: Sequence[str] | None = None,
    ) -> list[NewJob]:
        """Rows for many calls of one task: options checked and routed once (unless a router
        function looks at the arguments), ``before_task_publish`` sent for each. ``ids``
        gives the jobs' ids (a fan-out derives its children's); random ones otherwise."""
        if ids is None:
            ids = new_ids(len(calls))
        if self._routes_by_arguments():
            jobs = [
                self.build(task, task.name, a, k, {**options, "task_id": job_id})
                for job_id, (a, k) in zip(ids, calls, strict=True)
            ]
        else:
            first = self.build(task, task.name, *calls[0], {**options, "task_id": ids[0]})
            jobs = [first, *self._siblings(first, task, calls[1:], options, ids[1:])]
        if signals.before_task_publish.receivers:
            for job, (args, kwargs) in zip(jobs, calls, strict=True):
                self._before(job, args, kwargs, options)
        return jobs

    def announce(
        self, jobs: list[NewJob], calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> None:
        """After the rows are committed: ``after_task_publish``, and wake local workers."""
        for job, (args, kwargs) in zip(jobs, calls, strict=True):
            self._after(job, args, kwargs)
        for queue in {job.queue for job in jobs}:
            self.app.wake_local(queue)

    def _siblings(
        self,
        first: NewJob,
        task: Task,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        options: dict[str, Any],
        ids: Sequence[str],
    ) -> list[NewJob]:
        """The other calls of a bulk enqueue: the first job's checked options, their own
        arguments (and unique keys); everything that does not depend on them is done once."""
        serializer = options.get("serializer") or task.serializer or self.app.conf.task_serializer
        names = task.param_names()
        fixed_key = options.get("unique_key")
        keyed = fixed_key is None and task.unique_key is not None
        fixed = None if fixed_key is None else str(fixed_key)
        name, queue, priority = first.task, first.queue, first.priority
        max_retries, run_at, delay = first.max_retries, first.run_at, first.delay
        expires_at, parent_id, root_id = first.expires_at, first.parent_id, first.root_id
        stored = first.options
        jobs = []
        for job_id, (args, kwargs) in zip(ids, calls, strict=True):
            content_type, payload = encode_call(name, args, kwargs, serializer, names)
            key = task.unique_key_for(args, kwargs) if keyed else fixed
            jobs.append(
                NewJob(
                    job_id,
                    name,
                    queue,
                    payload,
                    content_type,
                    priority,
                    max_retries,
                    run_at,
                    delay,
                    expires_at,
                    None if key is None else str(key),
                    parent_id,
                    root_id,
                    stored,
                )
            )
        return jobs

    def _routes_by_arguments(self) -> bool:
        """Whether a router function may send calls of one task to different queues."""
        return any(not isinstance(r, MapRouter) for r in self._compiled_routes())

    def build(
        self,
        task: Task | None,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> NewJob:
        """The row for one call, with every option checked."""
        options = {k: v for k, v in options.items() if v is not None}
        _check_options(options)
        conf = self.app.conf
        queue, priority = self._route(task, name, args, kwargs, options)
        serializer = options.get("serializer") or (task and task.serializer) or conf.task_serializer
        self._check_serializer(serializer)
        content_type, payload = encode_call(
            name, args, kwargs, serializer, task.param_names() if task else ()
        )
        run_at, delay = self._timing(options)
        expires = options.get("expires", task.expires if task else None)
        expires_at = self._absolute(expires) if expires is not None else None
        unique_key = options.get("unique_key")
        if unique_key is None and task is not None:
            unique_key = task.unique_key_for(args, kwargs)
        parent = current_request()
        stored = {k: options[k] for k in STORED_OPTIONS if k in options}
        if options.get("headers"):
            stored["headers"] = options["headers"]
        if run_at is not None or delay:
            stored["eta"] = iso(run_at if run_at is not None else time.time() + delay)
        if expires_at is not None:
            stored["expires"] = iso(expires_at)
        max_retries = options.get("max_retries", task.max_retries if task else DEFAULT_MAX_RETRIES)
        return NewJob(
            id=str(options.get("task_id") or uuid.uuid4()),
            task=name,
            queue=queue,
            payload=payload,
            content_type=content_type,
            priority=priority,
            max_retries=max_retries,
            run_at=run_at,
            delay=delay,
            expires_at=expires_at,
            unique_key=None if unique_key is None else str(unique_key),
            parent_id=options.get("parent_id") or (parent.id if parent else None),
            root_id=options.get("root_id") or (parent.root_id or parent.id if parent else None),
            options=json.dumps(stored, separators=(",", ":"), default=str) if stored else None,
        )

    def _route(
        self, task: Task | None, name: str, args: Any, kwargs: Any, options: dict[str, Any]
    ) -> tuple[str, int]:
        conf = self.app.conf
        queue = options.get("queue") or options.get("routing_key") or (task and task.queue)
        priority = options.get("priority", task.priority if task else None)
        if queue is None or priority is None:
            route = lookup(self._compiled_routes(), name, args, kwargs, options, task)
            queue = queue or route.get("queue")
            priority = priority if priority is not None else route.get("priority")
        queue = queue or conf.task_default_queue
        if priority is None:
            priority = conf.task_default_priority or 0
        if not isinstance(queue, str) or not queue or len(queue) > 255:
            raise ValueError(
                f"queue must be a non-empty string of at most 255 characters, got {queue!r}"
            )
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an integer, got {priority!r}")
        return queue, priority

    def _compiled_routes(self) -> list[Any]:
        source = self.app.conf.task_routes
        if source is not self._routes_source:
            self._routers = compile_routes(source)
            self._routes_source = source
        return self._routers

    def _check_serializer(self, serializer: str) -> None:
        if serializer not in self._allowed:
            self._allowed[serializer] = check_allowed(serializer, self.app.accept)

    def _timing(self, options: dict[str, Any]) -> tuple[float | None, float]:
        """(absolute run_at or None, relative delay in seconds) from eta / countdown."""
        if "eta" in options:
            if "countdown" in options:
                raise TypeError("pass either eta or countdown, not both")
            return self._absolute(options["eta"]), 0.0
        countdown = options.get("countdown", 0)
        if not isinstance(countdown, int | float) or isinstance(countdown, bool):
            raise TypeError(f"countdown must be a number of seconds, got {countdown!r}")
        return None, float(countdown)

    def _absolute(self, value: Any) -> float:
        """Epoch seconds for an eta or expires value (naive datetimes use ``timezone``)."""
        return to_epoch(value, self.app.conf.timezone)

    def _before(
        self, job: NewJob, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> None:
        """Celery's before_task_publish; handlers may add headers, which are stored."""
        if not signals.before_task_publish.receivers:
            return
        headers = self._headers(job, args, kwargs)
        custom = dict(options.get("headers") or {})
        headers.update(custom)
        before = dict(headers)
        signals.before_task_publish.send(
            job.task,
            body=(list(args), kwargs, {}),
            exchange="",
            routing_key=job.queue,
            headers=headers,
            properties={"correlation_id": job.id, "priority": job.priority},
            declare=[],
            retry_policy=None,
        )
        added = {k: v for k, v in headers.items() if before.get(k, _MISSING) != v or k in custom}
        if added:
            stored = json.loads(job.options) if job.options else {}
            stored["headers"] = {**stored.get("headers", {}), **added}
            job.options = json.dumps(stored, separators=(",", ":"), default=str)

    def _after(self, job: NewJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if signals.after_task_publish.receivers:
            signals.after_task_publish.send(
                job.task,
                body=(list(args), kwargs, {}),
                exchange="",
                routing_key=job.queue,
                headers=self._headers(job, args, kwargs),
            )

    def _headers(self, job: NewJob, args: Any, kwargs: Any) -> dict[str, Any]:
        """Celery's protocol v2 headers for this job, for publish signal handlers."""
        stored = json.loads(job.options) if job.options else {}
        return {
            "lang": "py",
            "task": job.task,
            "id": job.id,
            "shadow": stored.get("shadow"),
            "eta": stored.get("eta"),
            "expires": stored.get("expires"),
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [stored.get("time_limit"), stored.get("soft_time_limit")],
            "root_id": job.root_id or job.id,
            "parent_id": job.parent_id,
            "argsrepr": repr(tuple(args))[:1024],
            "kwargsrepr": repr(kwargs)[:1024],
            "origin": self._origin,
            "ignore_result": bool(stored.get("ignore_result", False)),
        }


_MISSING = object()
_KNOWN = {
    "task_id",
    "countdown",
    "eta",
    "expires",
    "priority",
    "queue",
    "routing_key",
    "unique_key",
    "headers",
    "serializer",
    "max_retries",
    "parent_id",
    "root_id",
    *STORED_OPTIONS,
}


def _check_options(options: dict[str, Any]) -> None:
    for key in options:
        if key in _KNOWN or key in IGNORED_OPTIONS:
            continue
        if key in UNSUPPORTED_OPTIONS:
            raise NotImplementedError(
                f"apply_async({key}=...) is not supported yet: canvas callbacks arrive with "
                "dbqueue's group/chain/chord support"
            )
        raise TypeError(f"unknown apply_async option {key!r}")
