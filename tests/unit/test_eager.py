"""Eager execution (``task.apply()``, ``task_always_eager``, ``task_eager_propagates``) through
the tracer in ``dbqueue/execution.py``: results, ``self.request``, Celery's retry semantics,
predicates (Ignore, Reject, NoRetry, RetryAfter), signal and handler order, async tasks."""

from __future__ import annotations

import asyncio
import datetime as dt
import types
from zoneinfo import ZoneInfo

import pytest

from dbqueue import DBQueue, Task, signals
from dbqueue.exceptions import (
    EncodeError,
    Ignore,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    NoRetry,
    Reject,
    Retry,
    RetryAfter,
)
from dbqueue.execution import classify
from dbqueue.request import Context
from dbqueue.result import EagerResult
from tests.unit.helpers import count_jobs


class Boom(Exception):
    """The exception the failing tasks raise."""


# --- results -----------------------------------------------------------------------------------


def test_apply_returns_a_successful_eager_result(app: DBQueue) -> None:
    @app.task
    def add(x, y):
        return x + y

    result = add.apply((2, 3), task_id="fixed-id")
    assert isinstance(result, EagerResult)
    assert (result.id, result.state, result.result, result.get()) == ("fixed-id", "SUCCESS", 5, 5)
    assert result.successful() and result.ready() and not result.failed()
    assert result.traceback is None
    assert result.name == add.name


def test_always_eager_runs_delay_inline_and_stores_nothing(eager_app: DBQueue) -> None:
    runs = []

    @eager_app.task
    def record(x):
        runs.append(x)
        return x * 2

    result = record.delay(21)
    assert isinstance(result, EagerResult)
    assert result.get() == 42
    assert runs == [21]
    assert record.apply_async((1,)).get() == 2
    assert count_jobs(eager_app) == 0


def test_arguments_go_through_the_serializer(app: DBQueue) -> None:
    """As in Celery, eager calls see what a worker would see: JSON turns tuples into lists."""

    @app.task
    def echo(value, when):
        return type(value).__name__, when

    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert echo.apply(((1, 2), when)).get() == ("list", when)
    with pytest.raises(EncodeError, match="'value'"):
        echo.apply((object(), when))


def test_failure_is_recorded_not_raised_by_default(app: DBQueue) -> None:
    @app.task
    def fail():
        raise Boom("bad")

    result = fail.apply()
    assert result.state == "FAILURE" and result.failed()
    assert isinstance(result.result, Boom)
    assert "Boom: bad" in result.traceback
    with pytest.raises(Boom, match="bad"):
        result.get()
    assert isinstance(result.get(propagate=False), Boom)


def test_eager_propagates_raises_from_delay(make_app) -> None:
    app = make_app(task_always_eager=True, task_eager_propagates=True)

    @app.task
    def fail():
        raise Boom("propagated")

    with pytest.raises(Boom, match="propagated"):
        fail.delay()


def test_throw_argument_overrides_the_setting(make_app) -> None:
    def fail():
        raise Boom()

    propagating = make_app(task_eager_propagates=True).task(name="eager.throw1")(fail)
    quiet = make_app().task(name="eager.throw2")(fail)
    assert propagating.apply(throw=False).state == "FAILURE"
    with pytest.raises(Boom):
        propagating.apply()
    with pytest.raises(Boom):
        quiet.apply(throw=True)


# --- self.request ------------------------------------------------------------------------------


def test_request_fields_inside_an_eager_run(app: DBQueue) -> None:
    seen = {}

    @app.task(bind=True, name="eager.req")
    def inspect_request(self, a, b=0):
        r = self.request
        seen.update(
            id=r.id,
            task=r.task,
            args=list(r.args),
            kwargs=r.kwargs,
            retries=r.retries,
            is_eager=r.is_eager,
            called_directly=r.called_directly,
            root_id=r.root_id,
            parent_id=r.parent_id,
        )

    inspect_request.apply((1,), {"b": 2}, task_id="req-1")
    assert seen == {
        "id": "req-1",
        "task": "eager.req",
        "args": [1],
        "kwargs": {"b": 2},
        "retries": 0,
        "is_eager": True,
        "called_directly": False,
        "root_id": "req-1",
        "parent_id": None,
    }


def test_request_in_a_nested_eager_call_names_its_parent(eager_app: DBQueue) -> None:
    @eager_app.task(bind=True)
    def child(self):
        return self.request.parent_id, self.request.root_id, self.request.id

    @eager_app.task(bind=True)
    def parent(self):
        return child.delay().get()

    parent_id, root_id, child_id = parent.apply(task_id="root").get()
    assert (parent_id, root_id) == ("root", "root")
    assert child_id != "root"


def test_unknown_request_fields_raise_like_celery(app: DBQueue) -> None:
    @app.task(bind=True)
    def job(self):
        try:
            self.request.no_such_field  # noqa: B018 - the attribute access is the test
        except AttributeError:
            return "AttributeError", self.request.get("retries")
        return "no error", None

    assert job.apply().get() == ("AttributeError", 0)


def test_request_get_returns_the_default_for_missing_fields(app: DBQueue) -> None:
    @app.task(bind=True)
    def job(self):
        return self.request.get("also_missing", "dflt")

    assert job.apply().get() == "dflt"


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_max_retries_n_means_n_plus_one_runs_then_the_exception(app, max_retries) -> None:
    runs = []

    @app.task(bind=True, max_retries=max_retries)
    def flaky(self):
        runs.append(self.request.retries)
        raise self.retry(exc=Boom(f"run {len(runs)}"), countdown=0)

    result = flaky.apply()
    assert runs == list(range(max_retries + 1))
    assert result.state == "FAILURE"
    assert isinstance(result.result, Boom)
    assert str(result.result) == f"run {max_retries + 1}"


@pytest.mark.parametrize("max_retries", [0, 2])
def test_final_exception_is_raised_when_eager_propagates(make_app, max_retries) -> None:
    app = make_app(task_always_eager=True, task_eager_propagates=True)
    runs = []

    @app.task(bind=True, max_retries=max_retries)
    def flaky(self):
        runs.append(1)
        raise self.retry(exc=Boom(f"run {len(runs)}"), countdown=0)

    with pytest.raises(Boom, match=f"run {max_retries + 1}"):
        flaky.delay()
    assert len(runs) == max_retries + 1


def test_exhausted_retry_without_exc_raises_when_eager_propagates(make_app) -> None:
    app = make_app(task_eager_propagates=True)

    @app.task(bind=True, max_retries=1)
    def flaky(self):
        self.retry(countdown=0)

    with pytest.raises(MaxRetriesExceededError):
        flaky.apply()


def test_exhausted_retry_without_exc_raises_max_retries_exceeded(app: DBQueue) -> None:
    runs = []

    @app.task(bind=True, max_retries=2)
    def flaky(self, x):
        runs.append(1)
        self.retry(countdown=0)

    result = flaky.apply((5,))
    assert len(runs) == 3
    assert isinstance(result.result, MaxRetriesExceededError)
    assert result.result.task_args == [5]
    assert flaky.name in str(result.result)


def test_retry_max_retries_argument_overrides_the_task(app: DBQueue) -> None:
    runs = []

    @app.task(bind=True, max_retries=10)
    def flaky(self):
        runs.append(1)
        raise self.retry(exc=Boom(), max_retries=1, countdown=0)

    assert flaky.apply().state == "FAILURE"
    assert len(runs) == 2


def test_max_retries_apply_option(app: DBQueue) -> None:
    runs = []

    @app.task(bind=True, max_retries=10)
    def flaky(self):
        runs.append(self.request.max_retries)
        raise self.retry(exc=Boom(), countdown=0)

    flaky.apply(max_retries=2)
    assert runs == [2, 2, 2]


def test_retry_id_stays_the_same_and_retries_counts_up(app: DBQueue) -> None:
    seen = []

    @app.task(bind=True, max_retries=2)
    def flaky(self):
        seen.append((self.request.id, self.request.retries))
        raise self.retry(exc=Boom(), countdown=0)

    flaky.apply(task_id="same")
    assert seen == [("same", 0), ("same", 1), ("same", 2)]


def test_retry_args_and_kwargs_replace_the_next_runs_arguments(app: DBQueue) -> None:
    seen = []

    @app.task(bind=True, max_retries=3)
    def paginate(self, page, size=10):
        seen.append((page, size))
        if page < 3:
            raise self.retry(args=(page + 1,), kwargs={"size": size * 2}, countdown=0)
        return page

    assert paginate.apply((1,)).get() == 3
    assert seen == [(1, 10), (2, 20), (3, 40)]


def test_retry_with_only_args_keeps_the_kwargs(app: DBQueue) -> None:
    seen = []

    @app.task(bind=True)
    def job(self, n, *, label):
        seen.append((n, label))
        if n == 0:
            raise self.retry(args=(1,), countdown=0)

    job.apply((0,), {"label": "x"})
    assert seen == [(0, "x"), (1, "x")]


def test_retry_called_directly_raises_the_exception(app: DBQueue) -> None:
    @app.task(bind=True)
    def job(self):
        raise self.retry(exc=Boom("direct"))

    with pytest.raises(Boom, match="direct"):
        job()


def test_retry_raises_retry_with_countdown_or_eta(app: DBQueue) -> None:
    captured = []
    eta = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)

    @app.task(bind=True, max_retries=5, default_retry_delay=42)
    def job(self, how):
        try:
            if how == "countdown":
                self.retry(countdown=7)
            elif how == "eta":
                self.retry(eta=eta)
            else:
                self.retry(exc=Boom("why"))
        except Retry as retry:
            captured.append(retry)
        return None

    for how in ("countdown", "eta", "default"):
        job.apply((how,))
    assert [r.when for r in captured] == [7, eta, 42]
    assert isinstance(captured[2].exc, Boom)


def test_naive_retry_eta_uses_the_timezone_setting_like_apply_async(make_app) -> None:
    app = make_app(timezone="Asia/Tokyo")  # UTC+9 all year
    task = app.task(name="eager.tz")(lambda: None)
    naive = dt.datetime.now(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None) + dt.timedelta(hours=1)
    request = Context(id="j", task=task.name, called_directly=False)
    decision = classify(task, request, Retry(when=naive))
    assert decision.delay == pytest.approx(3600, abs=60)


# --- autoretry ---------------------------------------------------------------------------------


def test_autoretry_for_retries_listed_exceptions(app: DBQueue) -> None:
    runs = []

    @app.task(autoretry_for=(ValueError,), max_retries=2, retry_backoff=False)
    def flaky(kind):
        runs.append(kind)
        raise (ValueError if kind == "value" else KeyError)(kind)

    value = flaky.apply(("value",))
    assert len(runs) == 3
    assert isinstance(value.result, ValueError)
    runs.clear()
    key = flaky.apply(("key",))
    assert len(runs) == 1
    assert isinstance(key.result, KeyError)


def test_dont_autoretry_for_wins_over_autoretry_for(app: DBQueue) -> None:
    runs = []

    @app.task(autoretry_for=(LookupError,), dont_autoretry_for=(KeyError,), max_retries=1)
    def flaky(kind):
        runs.append(kind)
        raise (KeyError if kind == "key" else IndexError)(kind)

    flaky.apply(("key",))
    flaky.apply(("index",))
    assert runs == ["key", "index", "index"]


def test_retry_kwargs_are_used_by_autoretry(app: DBQueue) -> None:
    runs = []

    @app.task(autoretry_for=(Boom,), retry_kwargs={"max_retries": 1, "countdown": 3})
    def flaky():
        runs.append(1)
        raise Boom()

    assert flaky.apply().state == "FAILURE"
    assert len(runs) == 2


def _autoretry_delay(task: Task, retries: int) -> float:
    """The countdown the tracer picks for an autoretried failure after ``retries`` retries."""
    request = Context(
        id="job", task=task.name, retries=retries, max_retries=None, called_directly=False
    )
    decision = classify(task, request, Boom())
    assert decision.kind == "retry"
    return decision.delay


def test_retry_backoff_countdowns_without_jitter(app: DBQueue) -> None:
    @app.task(autoretry_for=(Boom,), retry_backoff=True, retry_jitter=False)
    def factor_one():
        raise Boom()

    @app.task(autoretry_for=(Boom,), retry_backoff=3, retry_backoff_max=50, retry_jitter=False)
    def factor_three():
        raise Boom()

    assert [_autoretry_delay(factor_one, r) for r in range(5)] == [1, 2, 4, 8, 16]
    assert _autoretry_delay(factor_one, 12) == 600, "retry_backoff_max defaults to 600"
    assert [_autoretry_delay(factor_three, r) for r in range(6)] == [3, 6, 12, 24, 48, 50]


def test_retry_backoff_with_jitter_stays_within_zero_and_the_countdown(app: DBQueue) -> None:
    @app.task(autoretry_for=(Boom,), retry_backoff=2, retry_backoff_max=100)
    def jittery():
        raise Boom()

    assert jittery.retry_jitter is True, "Celery's default"
    samples = [_autoretry_delay(jittery, 3) for _ in range(200)]
    assert all(0 <= s <= 16 for s in samples)
    assert len(set(samples)) > 1


def test_retry_backoff_overrides_retry_kwargs_countdown(app: DBQueue) -> None:
    @app.task(
        autoretry_for=(Boom,),
        retry_backoff=5,
        retry_jitter=False,
        retry_kwargs={"countdown": 999},
    )
    def job():
        raise Boom()

    assert _autoretry_delay(job, 1) == 10


def test_backoff_countdowns_of_an_eager_run(app: DBQueue) -> None:
    countdowns = []

    class Recording(Task):
        def retry(self, *args, countdown=None, **kwargs):
            countdowns.append(countdown)
            return super().retry(*args, countdown=countdown, **kwargs)

    @app.task(
        base=Recording, autoretry_for=(Boom,), max_retries=4, retry_backoff=2, retry_jitter=False
    )
    def flaky():
        raise Boom()

    assert flaky.apply().state == "FAILURE"
    assert countdowns == [2, 4, 8, 16, 32]  # the fifth call finds no retry left


# --- predicates --------------------------------------------------------------------------------


def test_no_retry_fails_at_once_even_when_autoretry_matches(app: DBQueue) -> None:
    runs = []

    @app.task(autoretry_for=(Exception,), max_retries=5)
    def fatal():
        runs.append(1)
        raise NoRetry(ValueError("invalid input"))

    result = fatal.apply()
    assert runs == [1]
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert str(result.result) == "invalid input"


def test_retry_after_counts_against_max_retries_then_fails_with_exc(app: DBQueue) -> None:
    runs = []

    @app.task(max_retries=2)
    def limited():
        runs.append(1)
        raise RetryAfter(30, ConnectionError("429 Too Many Requests"))

    result = limited.apply()
    assert len(runs) == 3
    assert result.state == "FAILURE"
    assert isinstance(result.result, ConnectionError)


def test_retry_after_uses_its_own_delay(app: DBQueue) -> None:
    @app.task
    def limited():
        raise RetryAfter(12.5, "slow down")

    request = Context(id="j", task=limited.name, retries=0, max_retries=3)
    decision = classify(limited, request, RetryAfter(12.5, "slow down"))
    assert (decision.kind, decision.delay) == ("retry", 12.5)
    assert str(decision.exc) == "slow down"


def test_ignore_gives_state_ignored(app: DBQueue, connect) -> None:
    failures = []

    @app.task
    def skip():
        raise Ignore()

    connect(signals.task_failure, lambda sender, **kw: failures.append(kw))
    result = skip.apply()
    assert result.state == "IGNORED"
    assert failures == []


def test_reject_without_requeue_gives_state_rejected(app: DBQueue) -> None:
    @app.task
    def refuse():
        raise Reject("malformed", requeue=False)

    result = refuse.apply()
    assert result.state == "REJECTED"
    assert isinstance(result.result, Reject)
    assert result.result.reason == "malformed"


def test_reject_is_not_reported_as_a_failure(app: DBQueue, connect) -> None:
    failures = []

    class Base(Task):
        def on_failure(self, exc, task_id, args, kwargs, einfo):
            failures.append("on_failure")

    @app.task(base=Base)
    def refuse():
        raise Reject("nope", requeue=False)

    connect(signals.task_failure, lambda sender, **kw: failures.append("task_failure"))
    refuse.apply()
    assert failures == []


# --- signals and handlers, in Celery's order -----------------------------------------------------


SIGNAL_KWARGS = {
    "task_prerun": ["task_id", "task", "args", "kwargs"],
    "task_success": ["result", "runtime"],
    "task_failure": ["task_id", "exception", "args", "kwargs", "traceback", "einfo"],
    "task_retry": ["request", "reason", "einfo"],
    "task_postrun": ["task_id", "task", "args", "kwargs", "retval", "state"],
}


class Recorder(Task):
    """Base class recording its handlers into ``self.log`` (set per test)."""

    log: list

    def before_start(self, task_id, args, kwargs):
        self.log.append(("before_start", task_id, list(args), kwargs))

    def on_success(self, retval, task_id, args, kwargs):
        self.log.append(("on_success", retval, task_id))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.log.append(("on_failure", exc, task_id, einfo.exception))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self.log.append(("on_retry", exc, task_id))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.log.append(("after_return", status, retval))


@pytest.fixture
def traced(app: DBQueue, connect):
    """``traced(fn, **options)``: a task on the Recorder base whose signals go to one log."""

    def make(fn, **options):
        log: list = []
        task = app.task(base=Recorder, **options)(fn)
        task.log = log
        for name, expected in SIGNAL_KWARGS.items():

            def handler(sender, _name=name, _expected=expected, **kwargs):
                assert kwargs.pop("signal") is getattr(signals, _name)
                assert list(kwargs) == _expected, f"{_name} arguments"
                log.append((_name, kwargs))

            connect(getattr(signals, name), handler, sender=task)
        return task

    return make


def _names(log: list) -> list[str]:
    return [entry[0] for entry in log]


def test_success_order_and_arguments(traced) -> None:
    def add(x, y):
        return x + y

    task = traced(add, name="order.add")
    result = task.apply((1,), {"y": 2}, task_id="ok-1")
    log = task.log
    assert _names(log) == [
        "task_prerun",
        "before_start",
        "on_success",
        "task_success",
        "after_return",
        "task_postrun",
    ]
    prerun, before_start, on_success, success, after_return, postrun = log
    assert prerun[1]["task_id"] == "ok-1" and prerun[1]["task"] is task
    assert (list(prerun[1]["args"]), prerun[1]["kwargs"]) == ([1], {"y": 2})
    assert before_start == ("before_start", "ok-1", [1], {"y": 2})
    assert on_success == ("on_success", 3, "ok-1")
    assert success[1]["result"] == 3 and success[1]["runtime"] >= 0
    assert after_return == ("after_return", "SUCCESS", 3)
    assert (postrun[1]["retval"], postrun[1]["state"]) == (3, "SUCCESS")
    assert result.get() == 3


def test_failure_order_and_arguments(traced) -> None:
    error = Boom("failed")

    def fail(x):
        raise error

    task = traced(fail, name="order.fail")
    task.apply((1,), task_id="bad-1")
    assert _names(task.log) == [
        "task_prerun",
        "before_start",
        "on_failure",
        "task_failure",
        "after_return",
        "task_postrun",
    ]
    on_failure, failure = task.log[2], task.log[3][1]
    assert on_failure == ("on_failure", error, "bad-1", error)
    assert failure["task_id"] == "bad-1"
    assert failure["exception"] is error
    assert (list(failure["args"]), failure["kwargs"]) == ([1], {})
    assert failure["einfo"].exception is error
    assert failure["einfo"].type is Boom
    assert "Boom: failed" in str(failure["einfo"])
    assert task.log[4] == ("after_return", "FAILURE", error)
    assert (task.log[5][1]["retval"], task.log[5][1]["state"]) == (error, "FAILURE")


def test_failure_signal_traceback_is_a_traceback_object(traced) -> None:
    def fail():
        raise Boom()

    task = traced(fail, name="order.tb")
    task.apply()
    failure = task.log[3][1]
    assert isinstance(failure["traceback"], types.TracebackType)


def test_retry_order_and_arguments(traced) -> None:
    def flaky(self):
        if self.request.retries == 0:
            raise self.retry(exc=Boom("again"), countdown=0)
        return "second time"

    task = traced(flaky, name="order.retry", bind=True)
    assert task.apply(task_id="r-1").get() == "second time"
    assert _names(task.log) == [
        "task_prerun",
        "before_start",
        "on_retry",
        "task_retry",
        "after_return",
        "task_postrun",
        "task_prerun",
        "before_start",
        "on_success",
        "task_success",
        "after_return",
        "task_postrun",
    ]
    on_retry, retry = task.log[2], task.log[3][1]
    assert on_retry[0] == "on_retry" and isinstance(on_retry[1], Boom)
    assert on_retry[2] == "r-1"
    assert retry["request"].id == "r-1" and retry["request"].retries == 0
    assert task.log[4][:2] == ("after_return", "RETRY")
    assert task.log[5][1]["state"] == "RETRY"


def test_retry_signal_reason_is_the_retry_exception(traced) -> None:
    def flaky(self):
        if self.request.retries == 0:
            raise self.retry(exc=Boom("again"), countdown=9)

    task = traced(flaky, name="order.reason", bind=True)
    task.apply()
    reason = task.log[3][1]["reason"]
    assert isinstance(reason, Retry)
    assert isinstance(reason.exc, Boom)
    assert reason.when == 9


def test_ignore_and_reject_end_with_postrun_state(traced) -> None:
    def ignored():
        raise Ignore()

    def rejected():
        raise Reject("no", requeue=False)

    for fn, state in ((ignored, "IGNORED"), (rejected, "REJECTED")):
        task = traced(fn, name=f"order.{fn.__name__}")
        task.apply()
        assert task.log[-1][0] == "task_postrun"
        assert task.log[-1][1]["state"] == state
        assert ("on_success" in _names(task.log)) is False


# --- async tasks -------------------------------------------------------------------------------


def test_async_task_runs_eagerly(app: DBQueue) -> None:
    @app.task(bind=True)
    async def double(self, x):
        await asyncio.sleep(0)
        return x * 2, self.request.id, self.request.is_eager

    assert double.is_async is True
    assert double.apply((21,), task_id="a-1").get() == (42, "a-1", True)


def test_async_task_with_always_eager_and_retries(eager_app: DBQueue) -> None:
    runs = []

    @eager_app.task(autoretry_for=(Boom,), max_retries=2)
    async def flaky():
        runs.append(1)
        raise Boom("async")

    result = flaky.delay()
    assert len(runs) == 3
    assert result.state == "FAILURE"
    assert str(result.result) == "async"


def test_async_task_applied_from_inside_a_running_event_loop(app: DBQueue) -> None:
    @app.task
    async def triple(x):
        await asyncio.sleep(0)
        return x * 3

    async def caller():
        return triple.apply((5,)).get()

    assert asyncio.run(caller()) == 15


# --- eager mode must check what a real publish checks -------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"contdown": 5}, TypeError),
        ({"link": "other.task"}, NotImplementedError),
        ({"eta": dt.datetime(2031, 1, 1, tzinfo=dt.UTC), "countdown": 5}, TypeError),
        ({"priority": "high"}, TypeError),
    ],
    ids=["unknown", "link", "eta+countdown", "priority"],
)
def test_always_eager_validates_apply_async_options(eager_app, options, error) -> None:
    task = eager_app.task(name="eager.opts")(lambda: None)
    with pytest.raises(error):
        task.apply_async(**options)


def test_always_eager_refuses_pickle_like_a_real_publish(make_app) -> None:
    app = make_app(task_always_eager=True, task_serializer="pickle")
    task = app.task(name="eager.pickle")(lambda x: x)
    with pytest.raises(ImproperlyConfigured, match="accept_content"):
        task.delay(1)


def test_always_eager_still_checks_the_signature(eager_app: DBQueue) -> None:
    runs = []

    @eager_app.task(name="eager.sig")
    def job(x):
        runs.append(x)

    with pytest.raises(TypeError, match=r"'eager\.sig'"):
        job.delay(1, 2)
    with pytest.raises(TypeError, match=r"'eager\.sig'"):
        job.delay_many([(1,), ()])
    assert runs == []
