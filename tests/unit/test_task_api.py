"""``dbqueue/task.py`` and the producer behind ``delay``/``apply_async``: task naming and
registration, the signature check, unique keys, ``delay_many``, Celery's apply_async options
and the publish signals. Every enqueue is read back from the row it wrote."""

from __future__ import annotations

import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

import pytest

from dbqueue import DBQueue, Task, signals
from dbqueue.exceptions import NotRegistered
from dbqueue.storage import DuplicateJobId
from dbqueue.worker.completer import Receipt
from tests.unit.helpers import count_jobs, stored_call

# --- naming and registration ---------------------------------------------------------------------


def test_task_name_is_module_dot_function(app: DBQueue) -> None:
    @app.task
    def add(x, y):
        return x + y

    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add


def test_explicit_name(app: DBQueue) -> None:
    @app.task(name="proj.math.add")
    def add(x, y):
        return x + y

    assert add.name == "proj.math.add"
    assert app.tasks["proj.math.add"] is add


def test_main_module_uses_the_apps_main_name(make_app) -> None:
    def job():
        return None

    job.__module__ = "__main__"
    assert make_app("proj").task(job).name == "proj.job"
    assert make_app(None).task(job).name == "__main__.job"


def test_bare_decorator_and_decorator_with_options(app: DBQueue) -> None:
    @app.task
    def bare():
        return "bare"

    @app.task()
    def empty_call():
        return "empty"

    @app.task(max_retries=7, queue="q", default_retry_delay=5, autoretry_for=[ValueError])
    def configured():
        return "configured"

    assert isinstance(bare, Task) and isinstance(empty_call, Task)
    assert (bare(), empty_call(), configured()) == ("bare", "empty", "configured")
    assert (configured.max_retries, configured.queue, configured.default_retry_delay) == (7, "q", 5)
    assert configured.autoretry_for == (ValueError,)
    assert bare.max_retries == 3, "Celery's default max_retries"
    assert bare.default_retry_delay == 180


def test_task_keeps_the_functions_metadata(app: DBQueue) -> None:
    @app.task
    def documented(x):
        """Does a thing."""
        return x

    assert documented.__doc__ == "Does a thing."
    assert documented.__wrapped__.__name__ == "documented"


def test_options_on_a_base_class_are_inherited(app: DBQueue) -> None:
    class Patient(Task):
        max_retries = 10
        queue = "slow"

    @app.task(base=Patient)
    def job():
        return None

    assert isinstance(job, Patient)
    assert (job.max_retries, job.queue) == (10, "slow")
    assert app.storage.get_job(job.delay().id)["queue"] == "slow"


def test_unknown_task_name_raises_not_registered_naming_it(app: DBQueue) -> None:
    with pytest.raises(NotRegistered, match=r"'proj\.nope'") as info:
        app.tasks["proj.nope"]
    assert isinstance(info.value, KeyError)


def test_register_class_based_task(app: DBQueue) -> None:
    class Multiply(Task):
        def run(self, x, y):
            return x * y

    class Named(Task):
        name = "proj.named"

        def run(self):
            return "named"

    multiply = app.register_task(Multiply)
    named = app.register_task(Named())
    assert multiply.name == f"{__name__}.Multiply"
    assert app.tasks[multiply.name] is multiply
    assert app.tasks["proj.named"] is named
    assert multiply(3, 4) == 12
    assert stored_call(app, multiply.delay(3, y=4).id) == ([3], {"y": 4})


# --- signature check --------------------------------------------------------------------------


def test_bad_arguments_raise_type_error_naming_the_task(app: DBQueue) -> None:
    @app.task(name="sig.add")
    def add(x, y):
        return x + y

    calls = [
        lambda: add.delay(1),
        lambda: add.delay(1, 2, 3),
        lambda: add.delay(1, z=2),
        lambda: add.apply_async((1,), {"x": 2}),
        lambda: add.delay_many([(1, 2), (1,)]),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=r"'sig\.add'"):
            call()
    assert count_jobs(app) == 0


def test_good_arguments_pass_the_check(app: DBQueue) -> None:
    @app.task(name="sig.defaults")
    def job(a, b=2, *rest, c, **extra):
        return None

    result = job.apply_async((1, 2, 3), {"c": 4, "d": 5})
    assert stored_call(app, result.id) == ([1, 2, 3], {"c": 4, "d": 5})


def test_bound_task_signature_excludes_self(app: DBQueue) -> None:
    @app.task(bind=True, name="sig.bound")
    def bound(self, x):
        return x

    with pytest.raises(TypeError, match=r"'sig\.bound'"):
        bound.delay()
    with pytest.raises(TypeError, match=r"'sig\.bound'"):
        bound.delay(1, 2)
    assert stored_call(app, bound.delay(1).id) == ([1], {})


def test_class_based_task_signature_is_checked(app: DBQueue) -> None:
    class Resize(Task):
        name = "sig.resize"

        def run(self, image, width):
            return None

    resize = app.register_task(Resize)
    with pytest.raises(TypeError, match=r"'sig\.resize'"):
        resize.delay("a.png")
    assert count_jobs(app) == 0


def test_typing_false_disables_the_check(app: DBQueue) -> None:
    @app.task(typing=False, name="sig.untyped")
    def loose(x):
        return x

    result = loose.delay(1, 2, 3)
    assert stored_call(app, result.id) == ([1, 2, 3], {})


def test_send_task_is_not_checked_against_unknown_signatures(app: DBQueue) -> None:
    result = app.send_task("other.service.task", args=[1, 2, 3], kwargs={"k": 1})
    assert stored_call(app, result.id) == ([1, 2, 3], {"k": 1})
    assert app.storage.get_job(result.id)["task"] == "other.service.task"


# --- direct calls --------------------------------------------------------------------------


def test_direct_call_runs_the_function_here_with_called_directly(app: DBQueue) -> None:
    @app.task(bind=True)
    def whoami(self, x, y):
        r = self.request
        return x + y, r.called_directly, r.id, list(r.args), r.kwargs, r.is_eager

    assert whoami(1, y=2) == (3, True, None, [1], {"y": 2}, False)
    assert count_jobs(app) == 0


def test_request_outside_a_run_is_empty(app: DBQueue) -> None:
    @app.task
    def job():
        return None

    assert job.request.id is None
    assert job.request.called_directly is True


# --- unique keys ---------------------------------------------------------------------------------


def test_unique_key_template_over_named_arguments(app: DBQueue) -> None:
    @app.task(unique_key="sync-{account}-{mode}")
    def sync(account, mode="full"):
        return None

    first = sync.delay(42)
    assert app.storage.get_job(first.id)["unique_key"] == "sync-42-full"
    assert sync.delay(account=42).id == first.id, "a duplicate returns the live job"
    other = sync.delay(42, mode="delta")
    assert other.id != first.id
    assert app.storage.get_job(other.id)["unique_key"] == "sync-42-delta"
    assert count_jobs(app) == 2


def test_unique_key_callable(app: DBQueue) -> None:
    @app.task(unique_key=lambda user, *, force=False: f"user:{user['id']}")
    def refresh(user, *, force=False):
        return None

    first = refresh.delay({"id": 7, "name": "a"})
    again = refresh.delay({"id": 7, "name": "b"}, force=True)
    assert again.id == first.id
    assert app.storage.get_job(first.id)["unique_key"] == "user:7"
    assert count_jobs(app) == 1


def test_unique_key_callable_object(app: DBQueue) -> None:
    class ByUser:
        def __call__(self, user, *, force=False):
            return f"user:{user['id']}"

    @app.task(unique_key=ByUser())
    def refresh(user, *, force=False):
        return None

    first = refresh.delay({"id": 7, "name": "a"})
    assert refresh.delay({"id": 7, "name": "b"}, force=True).id == first.id
    assert app.storage.get_job(first.id)["unique_key"] == "user:7"


def test_unique_key_per_call_overrides_and_frees_after_revoke(app: DBQueue) -> None:
    @app.task(unique_key="task-level")
    def job(x):
        return None

    first = job.apply_async((1,), unique_key="call-level")
    assert app.storage.get_job(first.id)["unique_key"] == "call-level"
    assert job.apply_async((2,), unique_key="call-level").id == first.id
    first.revoke()
    fresh = job.apply_async((3,), unique_key="call-level")
    assert fresh.id != first.id


# --- delay_many ----------------------------------------------------------------------------------


def test_delay_many_accepts_tuples_dicts_and_pairs(app: DBQueue) -> None:
    @app.task(name="many.add")
    def add(x, y=0):
        return x + y

    results = add.delay_many([(1, 2), {"x": 3, "y": 4}, ([5], {"y": 6}), [7], 8])
    assert [stored_call(app, r.id) for r in results] == [
        ([1, 2], {}),
        ([], {"x": 3, "y": 4}),
        ([5], {"y": 6}),
        ([7], {}),
        ([8], {}),
    ]
    assert len({r.id for r in results}) == 5
    assert count_jobs(app) == 5


def test_delay_many_applies_options_to_every_job(app: DBQueue) -> None:
    @app.task(name="many.opts")
    def job(x):
        return None

    results = job.delay_many([(1,), (2,)], queue="bulk", priority=5)
    for result in results:
        row = app.storage.get_job(result.id)
        assert (row["queue"], row["priority"]) == ("bulk", 5)


def test_delay_many_of_nothing(app: DBQueue) -> None:
    @app.task(name="many.none")
    def job(x):
        return None

    assert job.delay_many([]) == []


# --- apply_async options -----------------------------------------------------------------------


@pytest.fixture
def noop(app: DBQueue) -> Task:
    @app.task(name="opts.noop")
    def noop(*args, **kwargs):
        return None

    return noop


def test_task_id_option(app: DBQueue, noop: Task) -> None:
    result = noop.apply_async(task_id="my-own-id")
    assert result.id == "my-own-id"
    assert app.storage.get_job("my-own-id")["task"] == "opts.noop"


def test_reused_task_id_is_refused(app: DBQueue, noop: Task) -> None:
    noop.apply_async(task_id="dup")
    with pytest.raises(DuplicateJobId, match="'dup'"):
        noop.apply_async(task_id="dup")
    assert count_jobs(app) == 1


def test_countdown_delays_run_at_from_the_database_clock(app: DBQueue, noop: Task) -> None:
    now = app.storage.get_job(noop.delay().id)
    later = app.storage.get_job(noop.apply_async(countdown=120).id)
    assert now["run_at"] == pytest.approx(now["created_at"], abs=1e-3)
    assert later["run_at"] - later["created_at"] == pytest.approx(120, abs=1e-3)


def test_eta_sets_an_absolute_run_at(app: DBQueue, noop: Task) -> None:
    eta = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    job = app.storage.get_job(noop.apply_async(eta=eta).id)
    assert job["run_at"] == pytest.approx(eta.timestamp())
    assert job["options"] is not None and "2031-01-02T03:04:05" in job["options"]


def test_naive_eta_is_in_the_configured_timezone(make_app) -> None:
    app = make_app(timezone="Europe/Paris")
    task = app.task(name="opts.tz")(lambda: None)
    naive = dt.datetime(2031, 7, 1, 12, 0)
    job = app.storage.get_job(task.apply_async(eta=naive).id)
    assert job["run_at"] == pytest.approx(
        naive.replace(tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    )


def test_expires_in_seconds(app: DBQueue, noop: Task) -> None:
    before = time.time()
    job = app.storage.get_job(noop.apply_async(expires=60).id)
    assert before + 60 <= job["expires_at"] <= time.time() + 60


def test_max_retries_option_is_stored(app: DBQueue, noop: Task) -> None:
    assert app.storage.get_job(noop.delay().id)["max_retries"] == 3
    assert app.storage.get_job(noop.apply_async(max_retries=0).id)["max_retries"] == 0


def test_unknown_option_is_a_type_error_naming_it(app: DBQueue, noop: Task) -> None:
    with pytest.raises(TypeError, match="'contdown'"):
        noop.apply_async(contdown=5)
    assert count_jobs(app) == 0


@pytest.mark.parametrize("option", ["link", "link_error", "chain", "chord"])
def test_canvas_callbacks_are_refused_not_dropped(app: DBQueue, noop: Task, option: str) -> None:
    with pytest.raises(NotImplementedError, match=option):
        noop.apply_async(**{option: "some.signature"})
    assert count_jobs(app) == 0


def test_eta_and_countdown_together_are_refused(app: DBQueue, noop: Task) -> None:
    with pytest.raises(TypeError, match="eta or countdown"):
        noop.apply_async(eta=dt.datetime.now(dt.UTC), countdown=5)
    assert count_jobs(app) == 0


@pytest.mark.parametrize("priority", ["5", 1.5, True])
def test_non_integer_priority_is_refused(app: DBQueue, noop: Task, priority) -> None:
    with pytest.raises(TypeError, match="priority"):
        noop.apply_async(priority=priority)
    assert count_jobs(app) == 0


@pytest.mark.parametrize("countdown", ["10", True])
def test_non_numeric_countdown_is_refused(app: DBQueue, noop: Task, countdown) -> None:
    with pytest.raises(TypeError, match="countdown"):
        noop.apply_async(countdown=countdown)


@pytest.mark.parametrize(
    "options",
    [
        {"exchange": "tasks", "exchange_type": "direct"},
        {"retry": True, "retry_policy": {"max_retries": 3, "interval_start": 0}},
        {"mandatory": True, "immediate": False, "delivery_mode": 2},
        {"compression": "gzip", "reply_to": "callback-queue"},
        {"add_to_parent": True, "group_id": "g", "group_index": 0},
        {"stamped_headers": [], "stamps": {}},
    ],
    ids=lambda o: ",".join(o),
)
def test_amqp_only_options_are_accepted(app: DBQueue, noop: Task, options: dict) -> None:
    result = noop.apply_async((1,), **options)
    job = app.storage.get_job(result.id)
    assert job is not None and job["queue"] == "celery"


def test_routing_key_selects_the_queue(app: DBQueue, noop: Task) -> None:
    assert app.storage.get_job(noop.apply_async(routing_key="rk").id)["queue"] == "rk"


# --- publish signals -----------------------------------------------------------------------------


def test_before_task_publish_gets_celerys_arguments_and_headers(app, noop, connect) -> None:
    seen = []
    connect(signals.before_task_publish, lambda sender, **kw: seen.append((sender, kw)))
    eta = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    result = noop.apply_async((1, "a"), {"k": 2}, eta=eta)
    [(sender, kw)] = seen
    assert sender == "opts.noop"
    assert set(kw) >= {
        "body",
        "exchange",
        "routing_key",
        "headers",
        "properties",
        "declare",
        "retry_policy",
    }
    args, kwargs, _embed = kw["body"]
    assert (list(args), kwargs) == ([1, "a"], {"k": 2})
    assert kw["routing_key"] == "celery"
    headers = kw["headers"]
    assert headers["task"] == "opts.noop"
    assert headers["id"] == result.id
    assert headers["root_id"] == result.id
    assert headers["parent_id"] is None
    assert headers["retries"] == 0
    assert headers["argsrepr"] == repr((1, "a"))
    assert headers["kwargsrepr"] == repr({"k": 2})
    assert dt.datetime.fromisoformat(headers["eta"]) == eta
    assert headers["origin"]
    assert kw["properties"]["correlation_id"] == result.id


def test_countdown_appears_as_an_eta_header(app, noop, connect) -> None:
    seen = []
    connect(signals.before_task_publish, lambda sender, headers=None, **kw: seen.append(headers))
    before = time.time()
    noop.apply_async(countdown=60)
    assert seen[0]["eta"] is not None
    assert dt.datetime.fromisoformat(seen[0]["eta"]).timestamp() >= before + 60


def test_header_added_by_a_handler_is_stored_with_the_job(app, noop, connect) -> None:
    def add_trace(sender, headers=None, **kw):
        headers["trace_id"] = "trace-123"

    connect(signals.before_task_publish, add_trace)
    result = noop.apply_async(headers={"tenant": "acme"})
    options = json.loads(app.storage.get_job(result.id)["options"])
    assert options["headers"] == {"tenant": "acme", "trace_id": "trace-123"}


def test_after_task_publish_sees_the_committed_row(app, noop, connect) -> None:
    seen = []

    def after(sender, headers=None, **kw):
        seen.append((sender, app.storage.get_job(headers["id"]) is not None))

    connect(signals.after_task_publish, after)
    noop.delay()
    assert seen == [("opts.noop", True)]


def test_publish_signals_fire_once_per_job_in_delay_many(app, noop, connect) -> None:
    before, after = [], []
    connect(
        signals.before_task_publish, lambda sender, headers=None, **kw: before.append(headers["id"])
    )
    connect(
        signals.after_task_publish, lambda sender, headers=None, **kw: after.append(headers["id"])
    )
    results = noop.delay_many([(1,), (2,), (3,)])
    assert before == after == [r.id for r in results]


# --- options taken from settings -------------------------------------------------------------


def _run_one_job(app: DBQueue) -> str:
    """Claim the one queued job and run it through the worker's runner, in this thread."""
    from dbqueue.worker.runner import JobRunner

    storage = app.storage
    [job] = storage.claim("unit-worker", ["celery"], 1)

    def commit(outcome, wait: bool = True) -> Receipt:
        return Receipt.resolved(outcome.job_id in storage.finish("unit-worker", [outcome]))

    JobRunner(app, "unit@host", "unit-worker", commit).run(job)
    return job.id


def test_task_ignore_result_option_stores_no_result(app: DBQueue) -> None:
    kept = app.task(name="res.kept")(lambda: 42)
    dropped = app.task(name="res.dropped", ignore_result=True)(lambda: 42)
    kept.delay()
    kept_id = _run_one_job(app)
    dropped.delay()
    dropped_id = _run_one_job(app)
    assert app.AsyncResult(kept_id).result == 42
    assert app.AsyncResult(dropped_id).state == "SUCCESS"
    assert app.AsyncResult(dropped_id).result is None


def test_task_ignore_result_setting_stores_no_result(make_app) -> None:
    app = make_app(task_ignore_result=True)
    app.task(name="res.global")(lambda: 42).delay()
    job_id = _run_one_job(app)
    assert app.AsyncResult(job_id).state == "SUCCESS"
    assert app.AsyncResult(job_id).result is None


def test_retry_without_throw_still_schedules_the_retry(app: DBQueue) -> None:
    @app.task(bind=True, name="res.nothrow")
    def job(self):
        if self.request.retries == 0:
            self.retry(countdown=0, throw=False)
        return "returned"

    job.delay()
    job_id = _run_one_job(app)
    row = app.storage.get_job(job_id)
    assert row["status"] in ("pending", "retrying")
