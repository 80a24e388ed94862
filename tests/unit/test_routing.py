"""``dbqueue/routing.py`` through the app: ``task_routes`` in all of Celery's forms, and the
precedence apply_async(queue=) > @task(queue=) > routes > task_default_queue. The chosen queue
and priority are read back from the enqueued row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbqueue import DBQueue
from dbqueue.exceptions import ImproperlyConfigured


def routed(app: DBQueue, name: str, **task_options) -> tuple[str, int]:
    """Register a no-argument task called ``name``, enqueue it, return its row's queue/priority."""
    task = app.task(name=name, **task_options)(lambda: None)
    job = app.storage.get_job(task.delay().id)
    assert job is not None
    return job["queue"], job["priority"]


def test_no_routes_uses_task_default_queue(make_app) -> None:
    assert routed(make_app(), "a.b") == ("celery", 0)
    assert routed(make_app(task_default_queue="default"), "a.b") == ("default", 0)


def test_exact_name_route(make_app) -> None:
    app = make_app(task_routes={"feed.tasks.import_feed": {"queue": "feeds"}})
    assert routed(app, "feed.tasks.import_feed") == ("feeds", 0)
    assert routed(app, "feed.tasks.other") == ("celery", 0)


def test_route_value_may_be_a_queue_name(make_app) -> None:
    app = make_app(task_routes={"mail.send": "emails"})
    assert routed(app, "mail.send") == ("emails", 0)


def test_glob_route(make_app) -> None:
    app = make_app(task_routes={"feed.*": {"queue": "feeds"}})
    assert routed(app, "feed.tasks.import_feed") == ("feeds", 0)
    assert routed(app, "feedback.send") == ("celery", 0)
    assert routed(app, "x.feed.y") == ("celery", 0), "globs match the whole name"


def test_regex_route(make_app) -> None:
    app = make_app(task_routes={re.compile(r"(video|image)\.tasks\..*"): {"queue": "media"}})
    assert routed(app, "video.tasks.encode") == ("media", 0)
    assert routed(app, "image.tasks.resize") == ("media", 0)
    assert routed(app, "audio.tasks.mix") == ("celery", 0)


def test_exact_name_beats_a_matching_glob(make_app) -> None:
    app = make_app(task_routes={"feed.*": "feeds", "feed.urgent": "urgent"})
    assert routed(app, "feed.urgent") == ("urgent", 0)
    assert routed(app, "feed.slow") == ("feeds", 0)


def test_priority_from_route(make_app) -> None:
    app = make_app(task_routes={"report.*": {"queue": "reports", "priority": 7}})
    assert routed(app, "report.monthly") == ("reports", 7)


def test_priority_only_route_keeps_default_queue(make_app) -> None:
    app = make_app(task_routes={"vip.*": {"priority": 9}})
    assert routed(app, "vip.call") == ("celery", 9)


def test_task_default_priority(make_app) -> None:
    assert routed(make_app(task_default_priority=4), "a.b") == ("celery", 4)


def test_router_function_with_celerys_full_signature(make_app) -> None:
    seen = []

    def router(name, args, kwargs, options, task=None, **kw):
        seen.append((name, args, kwargs, task))
        return {"queue": "fn"} if name.startswith("billing.") else None

    app = make_app(task_routes=router)
    charge = app.task(name="billing.charge")(lambda amount, currency="EUR": None)
    job = app.storage.get_job(charge.delay(5, currency="USD").id)
    assert job["queue"] == "fn"
    assert seen == [("billing.charge", (5,), {"currency": "USD"}, charge)]
    assert routed(app, "other.task") == ("celery", 0)


def test_router_function_with_four_arguments(make_app) -> None:
    def router(name, args, kwargs, options):
        return "four" if name == "x.y" else None

    app = make_app(task_routes=[router])
    assert routed(app, "x.y") == ("four", 0)


ROUTER_MODULE = """
    def route_task(name, args, kwargs, options, task=None, **kw):
        if name.startswith("media."):
            return {"queue": "media", "priority": 2}
        return None
"""


def test_router_as_dotted_path_string(make_app, write_module, tmp_path: Path) -> None:
    module = write_module(tmp_path, "dbq_unit_routers", ROUTER_MODULE)
    app = make_app(task_routes=f"{module}.route_task")
    assert routed(app, "media.encode") == ("media", 2)
    app2 = make_app(task_routes=[f"{module}:route_task"])
    assert routed(app2, "media.encode") == ("media", 2)
    assert routed(app2, "text.render") == ("celery", 0)


def test_list_of_routes_first_match_wins(make_app) -> None:
    def nothing(name, args, kwargs, options, task=None, **kw):
        return None

    app = make_app(
        task_routes=[nothing, {"feed.*": "first"}, {"feed.import": "second"}, lambda *a, **k: "x"]
    )
    assert routed(app, "feed.import") == ("first", 0)
    assert routed(app, "other.task") == ("x", 0)


def test_routes_changed_after_first_publish_take_effect(app: DBQueue) -> None:
    assert routed(app, "late.route") == ("celery", 0)
    app.conf.task_routes = {"late.*": "late"}
    assert routed(app, "late.route2") == ("late", 0)


def test_ordered_items_form(make_app) -> None:
    app = make_app(
        task_routes=(
            [
                ("feed.tasks.*", {"queue": "feeds"}),
                ("web.tasks.*", {"queue": "web"}),
                (re.compile(r"(video|image)\.tasks\..*"), {"queue": "media"}),
            ],
        )
    )
    assert routed(app, "web.tasks.render") == ("web", 0)
    assert routed(app, "image.tasks.crop") == ("media", 0)


@pytest.mark.parametrize("routes", [42, [42]])
def test_unusable_routes_are_refused(make_app, routes) -> None:
    app = make_app(task_routes=routes)
    with pytest.raises(ImproperlyConfigured, match="42"):
        routed(app, "a.b")


# --- precedence --------------------------------------------------------------------------------


@pytest.fixture
def routed_app(make_app) -> DBQueue:
    return make_app(
        task_default_queue="default", task_routes={"p.*": {"queue": "routed", "priority": 3}}
    )


def test_routes_beat_the_default_queue(routed_app: DBQueue) -> None:
    assert routed(routed_app, "p.one") == ("routed", 3)


def test_task_option_beats_routes(routed_app: DBQueue) -> None:
    assert routed(routed_app, "p.two", queue="task-queue") == ("task-queue", 3)
    assert routed(routed_app, "p.three", priority=1) == ("routed", 1)


def test_apply_async_queue_beats_task_option_and_routes(routed_app: DBQueue) -> None:
    task = routed_app.task(name="p.four", queue="task-queue", priority=1)(lambda: None)
    job = routed_app.storage.get_job(task.apply_async(queue="call-queue", priority=8).id)
    assert (job["queue"], job["priority"]) == ("call-queue", 8)


def test_send_task_uses_routes_for_unregistered_names(routed_app: DBQueue) -> None:
    result = routed_app.send_task("p.remote", args=[1])
    job = routed_app.storage.get_job(result.id)
    assert (job["queue"], job["priority"]) == ("routed", 3)
    explicit = routed_app.send_task("p.remote", queue="there")
    assert routed_app.storage.get_job(explicit.id)["queue"] == "there"


def test_overlong_queue_name_is_refused(app: DBQueue) -> None:
    task = app.task(name="bad.queue")(lambda: None)
    with pytest.raises(ValueError, match="255"):
        task.apply_async(queue="q" * 256)


def test_route_returning_a_non_string_queue_is_refused(make_app) -> None:
    app = make_app(task_routes={"bad.*": {"queue": 5}})
    with pytest.raises(ValueError, match="queue must be a non-empty string"):
        routed(app, "bad.route")


def test_route_returning_a_non_integer_priority_is_refused(make_app) -> None:
    app = make_app(task_routes={"bad.*": {"priority": "high"}})
    with pytest.raises(TypeError, match="priority"):
        routed(app, "bad.route")
