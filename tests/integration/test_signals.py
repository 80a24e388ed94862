"""Celery's signals sent by a real worker, with Celery's senders and arguments."""

from __future__ import annotations

import re
import traceback
import types

import pytest

from dbqueue import DBQueue, NotRegistered, signals
from tests.integration.helpers import JOB_TIMEOUT, job, settle, wait_status
from tests.support.polling import wait_until

TASK_SIGNALS = (
    signals.task_prerun,
    signals.task_postrun,
    signals.task_success,
    signals.task_failure,
    signals.task_retry,
)


def sent_by(seen, task, count: int | None = None) -> list:
    """Deliveries whose sender is ``task`` (each test runs one job per task).

    With ``count``, wait for that many: get() may return as soon as the outcome is committed,
    before the worker thread has sent the signals that follow the commit.
    """

    def mine() -> list:
        return [item for item in seen if item.sender is task]

    if count is not None:
        wait_until(lambda: len(mine()) >= count, timeout=JOB_TIMEOUT, message=str(mine()))
    return mine()


def test_success_sends_prerun_success_postrun(app: DBQueue, run_worker, record_signals) -> None:
    seen = record_signals(*TASK_SIGNALS)

    @app.task(name="greet", bind=True)
    def greet(self, name: str, punctuation: str = "!") -> dict:
        return {"id": self.request.id, "text": f"hello {name}{punctuation}"}

    result = greet.apply_async(("ada",), {"punctuation": "?"})
    run_worker(app)
    settle(result)
    mine = sent_by(seen, greet, 3)
    assert [s.signal for s in mine] == ["task_prerun", "task_success", "task_postrun"]
    prerun, success, postrun = mine

    assert prerun.sender is greet
    assert prerun.kwargs["task"] is greet
    assert list(prerun.kwargs["args"]) == ["ada"]
    assert prerun.kwargs["kwargs"] == {"punctuation": "?"}

    assert success.sender is greet
    assert success.kwargs["result"] == {"id": result.id, "text": "hello ada?"}

    assert postrun.sender is greet
    assert postrun.kwargs["task"] is greet
    assert postrun.kwargs["state"] == "SUCCESS"
    assert postrun.kwargs["retval"] == {"id": result.id, "text": "hello ada?"}
    assert list(postrun.kwargs["args"]) == ["ada"]


def test_failure_sends_exception_and_traceback(app: DBQueue, run_worker, record_signals) -> None:
    seen = record_signals(*TASK_SIGNALS)

    @app.task(name="broken")
    def broken(n: int) -> None:
        raise ZeroDivisionError(f"division of {n} by zero")

    result = broken.delay(7)
    run_worker(app)
    settle(result)
    mine = sent_by(seen, broken, 3)
    assert [s.signal for s in mine] == ["task_prerun", "task_failure", "task_postrun"]
    failure = mine[1]
    assert failure.sender is broken
    assert failure.kwargs["task_id"] == result.id
    exception = failure.kwargs["exception"]
    assert isinstance(exception, ZeroDivisionError)
    assert str(exception) == "division of 7 by zero"
    assert list(failure.kwargs["args"]) == [7]
    assert failure.kwargs["kwargs"] == {}
    einfo = failure.kwargs["einfo"]
    assert einfo.exception is exception
    assert "ZeroDivisionError: division of 7 by zero" in einfo.traceback
    assert mine[2].kwargs["state"] == "FAILURE"
    assert mine[2].kwargs["retval"] is exception


def test_failure_traceback_is_a_traceback_object(app: DBQueue, run_worker, record_signals):
    """Celery passes exc.__traceback__, which handlers hand to the traceback module."""
    seen = record_signals(signals.task_failure)

    @app.task(name="broken")
    def broken() -> None:
        raise ZeroDivisionError("nope")

    result = broken.delay()
    run_worker(app)
    settle(result)
    (failure,) = sent_by(seen, broken, 1)
    tb = failure.kwargs["traceback"]
    assert isinstance(tb, types.TracebackType)
    assert "in broken" in "".join(traceback.format_tb(tb))


def test_retry_sends_task_retry_with_reason(app: DBQueue, run_worker, record_signals) -> None:
    seen = record_signals(*TASK_SIGNALS)
    reason = ConnectionError("flaky upstream")

    @app.task(name="again", bind=True, max_retries=1)
    def again(self) -> str:
        if self.request.retries == 0:
            raise self.retry(exc=reason, countdown=0)
        return "ok"

    result = again.delay()
    # One thread: the retry is claimable once committed, which is before the first run's
    # after-commit signals; with more threads the second run may start before they are sent.
    run_worker(app, concurrency=1)
    assert settle(result) == "ok"
    mine = sent_by(seen, again, 6)
    assert [s.signal for s in mine] == [
        "task_prerun",
        "task_retry",
        "task_postrun",
        "task_prerun",
        "task_success",
        "task_postrun",
    ]
    retry = mine[1]
    assert retry.sender is again
    assert retry.kwargs["request"].id == result.id
    assert retry.kwargs["request"].retries == 0
    got = retry.kwargs["reason"]
    assert got is reason or getattr(got, "exc", None) is reason
    assert "flaky upstream" in str(got)
    assert mine[2].kwargs["state"] == "RETRY"


def test_handlers_see_the_outcome_already_committed(
    app: DBQueue, run_worker, connect_signal
) -> None:
    observed: dict[str, str] = {}

    def read_state(task_id: str) -> str:
        # A new handle: no cache, a fresh read of the row on another connection.
        return app.AsyncResult(task_id).state

    def on_success(sender, result=None, **kwargs) -> None:
        observed["success"] = read_state(result)

    def on_failure(sender, task_id=None, **kwargs) -> None:
        observed["failure"] = read_state(task_id)

    def on_retry(sender, request=None, **kwargs) -> None:
        observed["retry"] = read_state(request.id)

    def on_postrun(sender, task_id=None, state=None, **kwargs) -> None:
        observed[f"postrun-{state}"] = read_state(task_id)

    connect_signal(signals.task_success, on_success)
    connect_signal(signals.task_failure, on_failure)
    connect_signal(signals.task_retry, on_retry)
    connect_signal(signals.task_postrun, on_postrun)

    @app.task(name="ok", bind=True)
    def ok(self) -> str:
        return self.request.id

    @app.task(name="bad")
    def bad() -> None:
        raise ValueError("bad")

    @app.task(name="later", bind=True, max_retries=1)
    def later(self) -> None:
        raise self.retry(countdown=60)

    results = [ok.delay(), bad.delay(), later.delay()]
    run_worker(app)
    settle(results[0])
    settle(results[1])
    wait_status(app, results[2].id, "retrying")
    wait_until(lambda: len(observed) == 6, timeout=JOB_TIMEOUT, message=str(observed))
    assert observed == {
        "success": "SUCCESS",
        "postrun-SUCCESS": "SUCCESS",
        "failure": "FAILURE",
        "postrun-FAILURE": "FAILURE",
        "retry": "RETRY",
        "postrun-RETRY": "RETRY",
    }


def test_handlers_can_read_sender_request(app: DBQueue, run_worker, connect_signal) -> None:
    ids: dict[str, str | None] = {}

    def on_success(sender, **kwargs) -> None:
        ids["success"] = sender.request.id

    def on_failure(sender, **kwargs) -> None:
        ids["failure"] = sender.request.id

    def on_postrun(sender, task_id=None, **kwargs) -> None:
        ids[f"postrun-{sender.name}"] = sender.request.id

    connect_signal(signals.task_success, on_success)
    connect_signal(signals.task_failure, on_failure)
    connect_signal(signals.task_postrun, on_postrun)

    @app.task(name="plain")
    def plain() -> int:
        return 1

    @app.task(name="oops")
    def oops() -> None:
        raise ValueError("oops")

    good, bad = plain.delay(), oops.delay()
    run_worker(app)
    settle(good)
    settle(bad)
    wait_until(lambda: len(ids) == 4, timeout=JOB_TIMEOUT, message=str(ids))
    assert ids == {
        "success": good.id,
        "postrun-plain": good.id,
        "failure": bad.id,
        "postrun-oops": bad.id,
    }


def test_unknown_task_sends_task_unknown_and_fails(app: DBQueue, run_worker, record_signals):
    seen = record_signals(signals.task_unknown, signals.task_prerun)
    result = app.send_task("nowhere.to_be_found", args=(1,), kwargs={"x": 2})
    worker = run_worker(app)
    with pytest.raises(NotRegistered, match=re.escape("nowhere.to_be_found")):
        result.get(timeout=JOB_TIMEOUT)
    unknown = [s for s in seen if s.signal == "task_unknown"]
    assert len(unknown) == 1
    assert unknown[0].sender is worker.worker
    assert unknown[0].kwargs["name"] == "nowhere.to_be_found"
    assert unknown[0].kwargs["id"] == result.id
    assert isinstance(unknown[0].kwargs["exc"], NotRegistered)
    assert unknown[0].kwargs["message"].id == result.id
    assert not [s for s in seen if s.signal == "task_prerun"]


def test_worker_lifecycle_signals(app: DBQueue, run_worker, record_signals) -> None:
    seen = record_signals(signals.worker_init, signals.worker_ready, signals.worker_shutdown)
    worker = run_worker(app)
    mine = [s for s in seen if s.sender is worker.worker]
    assert [s.signal for s in mine] == ["worker_init", "worker_ready"]
    worker.stop()
    mine = [s for s in seen if s.sender is worker.worker]
    assert [s.signal for s in mine] == ["worker_init", "worker_ready", "worker_shutdown"]
    # By worker_shutdown the worker has left the registry.
    assert all(w["id"] != worker.id for w in app.storage.live_workers(60))


def test_task_received_is_sent_before_the_run(app: DBQueue, run_worker, record_signals) -> None:
    seen = record_signals(signals.task_received, signals.task_prerun)

    @app.task(name="noted")
    def noted() -> None:
        pass

    result = noted.delay()
    worker = run_worker(app)
    settle(result)
    mine = [
        s
        for s in seen
        if s.kwargs.get("task_id") == result.id
        or getattr(s.kwargs.get("request"), "id", None) == result.id
    ]
    assert [s.signal for s in mine] == ["task_received", "task_prerun"]
    assert mine[0].sender is worker.worker
    assert job(app, result.id)["status"] == "completed"
