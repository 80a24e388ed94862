"""The worker's pure helpers (``dbqueue/worker/worker.py``, ``banner.parse_loglevel``) and how a
``Worker`` turns its options into queue groups and slots, without starting it."""

from __future__ import annotations

import logging

import pytest

from dbqueue import DBQueue
from dbqueue.exceptions import ImproperlyConfigured
from dbqueue.worker import worker as worker_module
from dbqueue.worker.banner import parse_loglevel
from dbqueue.worker.worker import expand_hostname, parse_queues

# --- parse_queues --------------------------------------------------------------------------------


def test_parse_queues_with_and_without_limits() -> None:
    assert parse_queues("default,emails:5", "celery") == [("default", None), ("emails", 5)]


def test_parse_queues_strips_blanks_and_skips_empty_items() -> None:
    assert parse_queues(" a , ,b:2,", "celery") == [("a", None), ("b", 2)]


@pytest.mark.parametrize("spec", [None, "", " , ", []])
def test_parse_queues_falls_back_to_the_default_queue(spec) -> None:
    assert parse_queues(spec, "default") == [("default", None)]


def test_parse_queues_accepts_a_list() -> None:
    assert parse_queues(["a", "b:3"], "celery") == [("a", None), ("b", 3)]


@pytest.mark.parametrize("item", ["emails:0", "emails:x", "emails:", "emails:-1", "emails:1.5"])
def test_parse_queues_refuses_bad_limits_naming_the_item(item: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="positive integer") as info:
        parse_queues(f"default,{item}", "celery")
    assert repr(item) in str(info.value)


def test_parse_queues_refuses_an_empty_queue_name() -> None:
    with pytest.raises(ImproperlyConfigured):
        parse_queues("default,:5", "celery")


# --- expand_hostname -----------------------------------------------------------------------------


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(worker_module.socket, "gethostname", lambda: "node7.example.com")
    return "node7.example.com"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("worker1@%h", "worker1@node7.example.com"),
        ("%n", "node7"),
        ("%d", "example.com"),
        ("w@%n.%d", "w@node7.example.com"),
        ("100%%@%n", "100%@node7"),
        ("%%h", "%h"),
        ("plain", "plain"),
    ],
)
def test_expand_hostname(host: str, template: str, expected: str) -> None:
    assert expand_hostname(template) == expected


def test_expand_hostname_without_a_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module.socket, "gethostname", lambda: "box")
    assert expand_hostname("a@%h/%n/%d") == "a@box/box/"


# --- parse_loglevel ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("info", logging.INFO),
        ("DEBUG", logging.DEBUG),
        ("Warning", logging.WARNING),
        ("warn", logging.WARNING),
        (" error ", logging.ERROR),
        ("critical", logging.CRITICAL),
        ("fatal", logging.CRITICAL),
        ("15", 15),
        (25, 25),
        (None, logging.WARNING),
    ],
)
def test_parse_loglevel(level, expected: int) -> None:
    assert parse_loglevel(level) == expected


def test_parse_loglevel_refuses_unknown_names() -> None:
    with pytest.raises(ImproperlyConfigured, match="'verbose'"):
        parse_loglevel("verbose")


# --- Worker options (constructed, never started) ----------------------------------------------


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> DBQueue:
    """An app that a Worker reads settings from; the Worker here never touches storage."""
    monkeypatch.delenv("DBQUEUE_BROKER_URL", raising=False)
    return DBQueue("workeropts", set_as_current=False)


def _groups(worker) -> list[tuple[list[str], int, bool]]:
    return [(g.queues, g.concurrency, g.shared) for g in worker.groups]


def test_shared_pool_and_own_limits(app: DBQueue, host: str) -> None:
    worker = app.Worker(queues="default,reports,emails:5", concurrency=4, pool="threads")
    assert _groups(worker) == [(["default", "reports"], 4, True), (["emails"], 5, False)]
    assert worker.total_slots == 9
    assert worker.queue_names == ["default", "reports", "emails"]
    assert worker.name == "dbqueue@node7.example.com"


def test_only_limited_queues_have_no_shared_group(app: DBQueue) -> None:
    worker = app.Worker(queues="a:2,b:3", concurrency=8, pool="threads")
    assert _groups(worker) == [(["a"], 2, False), (["b"], 3, False)]
    assert worker.total_slots == 5


def test_defaults_come_from_the_settings(app: DBQueue) -> None:
    app.conf.task_default_queue = "jobs"
    app.conf.worker_concurrency = 3
    app.conf.worker_pool = "threads"
    worker = app.Worker()
    assert _groups(worker) == [(["jobs"], 3, True)]
    assert worker.pool_name == "threads"
    assert worker.loglevel == logging.WARNING


def test_solo_pool_runs_one_job_at_a_time(app: DBQueue) -> None:
    worker = app.Worker(queues="a,b:5", concurrency=8, pool="SOLO")
    assert worker.pool_name == "solo"
    assert _groups(worker) == [(["a"], 1, True), (["b"], 1, False)]


def test_hostname_template_and_loglevel(app: DBQueue, host: str) -> None:
    worker = app.Worker(hostname="w1@%n", loglevel="info", pool="threads")
    assert worker.name == "w1@node7"
    assert worker.loglevel == logging.INFO


def test_unknown_pool_is_refused_naming_choices(app: DBQueue) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        app.Worker(pool="gevent")
    message = str(info.value)
    assert "'gevent'" in message
    assert all(name in message for name in ("prefork", "threads", "solo"))


def test_bad_queue_limit_is_refused_at_construction(app: DBQueue) -> None:
    with pytest.raises(ImproperlyConfigured, match="'emails:0'"):
        app.Worker(queues="emails:0", pool="threads")


def test_max_tasks_per_child_from_option_or_setting(app: DBQueue) -> None:
    app.conf.worker_max_tasks_per_child = 50
    assert app.Worker(pool="threads").max_tasks_per_child == 50
    assert app.Worker(pool="threads", max_tasks_per_child=5).max_tasks_per_child == 5
