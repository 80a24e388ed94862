"""Celery's signals, with Celery's names, senders and keyword arguments, on blinker.

Handlers connect the Celery way (``@task_prerun.connect``, ``sig.connect(fn, sender=...,
weak=False, dispatch_uid=...)``) and are called as ``handler(sender, **kwargs)``. A handler that
raises is logged and skipped: observability code must never break a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import blinker

logger = logging.getLogger("dbqueue.signals")

_namespace = blinker.Namespace()


class Signal(blinker.NamedSignal):
    """A blinker signal that accepts Celery's ``connect`` forms and isolates failing handlers."""

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        self._uids: dict[tuple[Any, Any], Callable[..., Any]] = {}

    def connect(
        self,
        receiver: Callable[..., Any] | None = None,
        sender: Any = blinker.ANY,
        weak: bool = True,
        dispatch_uid: Any = None,
    ) -> Any:
        """Connect ``receiver``; without it, return a decorator (``@sig.connect(sender=t)``)."""
        if receiver is None:

            def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
                self.connect(fn, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
                return fn

            return decorator
        if dispatch_uid is not None:
            key = (dispatch_uid, _sender_key(sender))
            if key in self._uids:
                return self._uids[key]
            self._uids[key] = receiver
        super().connect(receiver, sender=sender, weak=weak)
        return receiver

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        sender: Any = blinker.ANY,
        dispatch_uid: Any = None,
    ) -> None:
        """Disconnect by receiver or by the ``dispatch_uid`` it was connected with."""
        if dispatch_uid is not None:
            receiver = self._uids.pop((dispatch_uid, _sender_key(sender)), receiver)
        if receiver is not None:
            super().disconnect(receiver, sender)

    def send(self, sender: Any = None, /, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every handler; log and skip those that raise. Returns (handler, result) pairs."""
        if not self.receivers:
            return []
        results = []
        for receiver in self.receivers_for(sender):
            try:
                results.append((receiver, receiver(sender, signal=self, **kwargs)))
            except Exception:
                logger.exception("Signal handler %r for %s raised", receiver, self.name)
        return results

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


def _sender_key(sender: Any) -> Any:
    """Celery keys dispatch_uid by (uid, sender); strings and ints compare by value."""
    return sender if isinstance(sender, str | int) else id(sender)


def _signal(name: str, doc: str) -> Signal:
    sig = Signal(name, doc)
    _namespace[name] = sig
    return sig


before_task_publish = _signal(
    "before_task_publish",
    "sender=task name; body, exchange, routing_key, headers, properties, declare, retry_policy",
)
after_task_publish = _signal(
    "after_task_publish", "sender=task name; body, exchange, routing_key, headers"
)
task_received = _signal("task_received", "sender=worker; request")
task_prerun = _signal("task_prerun", "sender=task; task_id, task, args, kwargs")
task_postrun = _signal("task_postrun", "sender=task; task_id, task, args, kwargs, retval, state")
task_success = _signal("task_success", "sender=task; result, runtime")
task_failure = _signal(
    "task_failure", "sender=task; task_id, exception, args, kwargs, traceback, einfo"
)
task_retry = _signal("task_retry", "sender=task; request, reason, einfo")
task_revoked = _signal("task_revoked", "sender=task; request, terminated, signum, expired")
task_unknown = _signal("task_unknown", "sender=worker; message, exc, name, id")
task_rejected = _signal("task_rejected", "sender=worker; message, exc")
worker_init = _signal("worker_init", "sender=worker")
worker_ready = _signal("worker_ready", "sender=worker")
worker_shutting_down = _signal("worker_shutting_down", "sender=hostname; sig, how, exitcode")
worker_shutdown = _signal("worker_shutdown", "sender=worker")
worker_process_init = _signal("worker_process_init", "sender=hostname (in each prefork child)")
worker_process_shutdown = _signal(
    "worker_process_shutdown", "sender=hostname; pid, exitcode (in each prefork child)"
)
import_modules = _signal("import_modules", "sender=app")
beat_init = _signal(
    "beat_init", "sender=the scheduler (dbqueue beat), once its schedules are stored"
)
beat_embedded_init = _signal(
    "beat_embedded_init", "sender=the scheduler in a worker (-B), once its schedules are stored"
)

# dbqueue's own (the seed's events). Job started/completed/failed/retrying are Celery's
# task_prerun/task_success/task_failure/task_retry; app.events() carries all of them across
# processes.
job_paused = _signal("job_paused", "sender=app; job_id, mode (a running job: when it lands)")
job_resumed = _signal("job_resumed", "sender=app; job_id, status (the status it returned to)")
queue_paused = _signal("queue_paused", "sender=app; queue")
queue_resumed = _signal("queue_resumed", "sender=app; queue")
worker_paused = _signal("worker_paused", "sender=worker; mode")
worker_resumed = _signal("worker_resumed", "sender=worker")
custom_event = _signal("custom_event", "sender=app; job_id, kind, data")

checkpoint_saved = _signal(
    "checkpoint_saved", "sender=task (of the job); job_id, call_index, call_type"
)
job_waiting = _signal("job_waiting", "sender=task; job_id, fan_out_id, children")
job_woken = _signal("job_woken", "sender=None; job_id, fan_out_id, status (the decision)")

__all__ = [
    "Signal",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "before_task_publish",
    "checkpoint_saved",
    "custom_event",
    "import_modules",
    "job_paused",
    "job_resumed",
    "job_waiting",
    "job_woken",
    "queue_paused",
    "queue_resumed",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_paused",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_resumed",
    "worker_shutdown",
    "worker_shutting_down",
]
