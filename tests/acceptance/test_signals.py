"""Celery's signals fire inside a real worker process, with Celery's senders and arguments.

The task module's handlers write a row per call (the argument values as JSON); a handler that
raises must not break the job it observes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.acceptance import effects
from tests.acceptance.conftest import FAST
from tests.support import wait_until
from tests.support.processes import WorkerProcess

TASKS = """
import json

from dbqueue import signals


def note(kind, job_id=None, **info):
    effects.record(kind, job_id, info=json.dumps(info, default=repr))


@signals.worker_init.connect
def on_worker_init(sender, **kwargs):
    note("worker_init", sender=type(sender).__name__, name=sender.name)


@signals.worker_ready.connect
def on_worker_ready(sender, **kwargs):
    note("worker_ready", sender=type(sender).__name__, name=sender.name)


@signals.worker_process_init.connect
def on_worker_process_init(sender, **kwargs):
    note("worker_process_init", sender=sender)


@signals.worker_shutting_down.connect
def on_shutting_down(sender, sig, how, exitcode, **kwargs):
    note("worker_shutting_down", sender=sender, sig=sig, how=how, exitcode=exitcode)


@signals.worker_shutdown.connect
def on_worker_shutdown(sender, **kwargs):
    note("worker_shutdown", sender=type(sender).__name__)


@signals.worker_process_shutdown.connect
def on_process_shutdown(sender, pid, exitcode, **kwargs):
    note("worker_process_shutdown", sender=sender, pid=pid, exitcode=exitcode)


@signals.task_prerun.connect
def broken(sender, **kwargs):
    raise RuntimeError("handler bug in task_prerun")


@signals.task_prerun.connect
def on_prerun(sender, task_id, task, args, kwargs, **extra):
    note("task_prerun", task_id, sender=sender.name, task=task.name, args=list(args),
         kwargs=kwargs)


@signals.task_postrun.connect
def on_postrun(sender, task_id, task, args, kwargs, retval, state, **extra):
    note("task_postrun", task_id, sender=sender.name, state=state, retval=repr(retval))


@signals.task_success.connect
def on_success(sender, result, **extra):
    note("task_success", sender.request.id, sender=sender.name, result=result)


@signals.task_failure.connect
def on_failure(sender, task_id, exception, args, kwargs, traceback, einfo, **extra):
    note("task_failure", task_id, sender=sender.name, exception=type(exception).__name__,
         message=str(exception), traceback=traceback is not None,
         einfo="ValueError: boom" in str(einfo))


@signals.task_retry.connect
def on_retry(sender, request, reason, einfo, **extra):
    note("task_retry", request.id, sender=sender.name, reason=str(reason),
         retries=request.retries)


@signals.task_failure.connect
def broken_failure(sender, **kwargs):
    raise RuntimeError("handler bug in task_failure")


@app.task
def double(x):
    return x * 2


@app.task
def boom():
    raise ValueError("boom")


@app.task(bind=True, max_retries=2)
def flaky(self):
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("first try"), countdown=0)
    return "second try"
"""


def _notes(url: str, kind: str) -> list[dict[str, Any]]:
    return [{**r, "info": json.loads(r["info"])} for r in effects.rows(url, kind)]


def _run_jobs(
    url: str, load_tasks: Callable[..., Any], start_worker: Callable[..., WorkerProcess]
) -> tuple[Any, WorkerProcess, dict[str, str]]:
    tasks = load_tasks("signal_tasks", TASKS, url, **FAST)
    worker = start_worker("signal_tasks", url, "-P", "prefork", "-c", "1", "-n", "sig@%h")
    ids = {
        "double": tasks.double.delay(21).id,
        "boom": tasks.boom.delay().id,
        "flaky": tasks.flaky.delay().id,
    }
    assert tasks.app.AsyncResult(ids["double"]).get(timeout=30) == 42
    assert tasks.app.AsyncResult(ids["flaky"]).get(timeout=30) == "second try"
    boom = tasks.app.AsyncResult(ids["boom"])
    with pytest.raises(ValueError, match="boom"):
        boom.get(timeout=30)
    # Handlers run after the outcome is committed, so get() can return before they wrote.
    expected = {"task_postrun": 4, "task_success": 2, "task_failure": 1, "task_retry": 1}
    wait_until(
        lambda: all(effects.count(url, kind) == n for kind, n in expected.items()),
        timeout=15,
        message=f"signal handlers ran: {expected}",
    )
    return tasks, worker, ids


def test_signals_fire_in_the_worker_with_celerys_arguments(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """worker_init/ready in the parent, worker_process_init in the child, task_* per run."""
    _, worker, ids = _run_jobs(db_url, load_tasks, start_worker)
    name = worker.wait_for_log(r"(sig@\S+) ready\.").group(1)

    [init] = _notes(db_url, "worker_init")
    [ready] = _notes(db_url, "worker_ready")
    assert init["pid"] == ready["pid"] == worker.pid
    assert init["info"] == ready["info"] == {"sender": "Worker", "name": name}
    assert init["seq"] < ready["seq"]

    children = _notes(db_url, "worker_process_init")
    assert children and all(c["info"] == {"sender": name} for c in children)
    child_pids = {c["pid"] for c in children}
    assert worker.pid not in child_pids

    prerun = {r["job_id"]: r for r in _notes(db_url, "task_prerun")}
    assert prerun[ids["double"]]["info"] == {
        "sender": "signal_tasks.double",
        "task": "signal_tasks.double",
        "args": [21],
        "kwargs": {},
    }
    assert prerun[ids["double"]]["pid"] in child_pids  # task signals fire in the child

    postrun = [(r["job_id"], r["info"]["state"]) for r in _notes(db_url, "task_postrun")]
    assert (ids["double"], "SUCCESS") in postrun
    assert (ids["boom"], "FAILURE") in postrun
    assert [s for j, s in postrun if j == ids["flaky"]] == ["RETRY", "SUCCESS"]
    [double_post] = [r for r in _notes(db_url, "task_postrun") if r["job_id"] == ids["double"]]
    assert double_post["info"]["retval"] == "42"

    results = [r["info"]["result"] for r in _notes(db_url, "task_success")]
    senders = {r["info"]["sender"] for r in _notes(db_url, "task_success")}
    assert sorted(results, key=str) == [42, "second try"]
    assert senders == {"signal_tasks.double", "signal_tasks.flaky"}

    [failure] = _notes(db_url, "task_failure")
    assert failure["job_id"] == ids["boom"]
    assert failure["info"] == {
        "sender": "signal_tasks.boom",
        "exception": "ValueError",
        "message": "boom",
        "traceback": True,
        "einfo": True,
    }

    [retry] = _notes(db_url, "task_retry")
    assert retry["job_id"] == ids["flaky"]
    assert retry["info"]["sender"] == "signal_tasks.flaky"
    assert retry["info"]["retries"] == 0
    assert "first try" in retry["info"]["reason"]

    # The raising handlers ran (and were logged), yet every job ended as it should.
    log = worker.log()
    assert "handler bug in task_prerun" in log
    assert "handler bug in task_failure" in log
    assert effects.status_counts(db_url) == {"completed": 2, "failed": 1}
    assert worker.is_running()

    # Shutdown signals: in the parent while stopping, and in each child as it leaves.
    worker.terminate()
    assert worker.wait(30) == 0
    [stopping] = _notes(db_url, "worker_shutting_down")
    assert stopping["info"] == {"sender": name, "sig": "SIGTERM", "how": "Warm", "exitcode": 0}
    [stopped] = _notes(db_url, "worker_shutdown")
    assert stopped["info"] == {"sender": "Worker"}
    assert stopping["pid"] == stopped["pid"] == worker.pid
    leaving = _notes(db_url, "worker_process_shutdown")
    assert leaving, "worker_process_shutdown fired in no child"
    assert all(r["info"]["sender"] == name for r in leaving)
    assert all(r["info"]["pid"] == r["pid"] and r["pid"] in child_pids for r in leaving)


def test_task_success_handler_sees_the_request(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Celery's idiom ``sender.request.id`` in a task_success handler names the job.

    (It was None until afad0e8: handlers ran after the request context was popped.)
    """
    _, _, ids = _run_jobs(db_url, load_tasks, start_worker)
    successes = {r["job_id"] for r in _notes(db_url, "task_success")}
    assert successes == {ids["double"], ids["flaky"]}
