"""``dbqueue/signals.py``: Celery's ways to connect, sender filtering, dispatch_uid, and a
handler that raises being logged without stopping the others. Mechanics are tested on private
Signal instances; sender filtering on the real task and publish signals."""

from __future__ import annotations

import gc
import logging

import pytest

from dbqueue import DBQueue, signals
from dbqueue.signals import Signal


@pytest.fixture
def sig() -> Signal:
    """A signal of this test's own, so nothing is shared with other tests."""
    return Signal("unit_test_signal")


def test_decorator_connect_and_signal_kwarg(sig: Signal) -> None:
    calls = []

    @sig.connect
    def handler(sender, **kwargs):
        calls.append((sender, kwargs))

    sig.send("me", x=1)
    assert calls == [("me", {"signal": sig, "x": 1})]
    assert handler.__name__ == "handler", "the decorator returns the function itself"


def test_plain_connect_call(sig: Signal) -> None:
    calls = []

    def handler(sender, **kwargs):
        calls.append(kwargs["value"])

    assert sig.connect(handler) is handler
    sig.send(None, value=42)
    assert calls == [42]


def test_send_returns_handler_results(sig: Signal) -> None:
    def one(sender, **kwargs):
        return 1

    def two(sender, **kwargs):
        return 2

    sig.connect(one)
    sig.connect(two)
    assert sorted(result for _, result in sig.send("s")) == [1, 2]


def test_send_without_handlers_returns_empty_list(sig: Signal) -> None:
    assert sig.send("s", a=1) == []


def test_decorator_with_sender_filters_by_identity(sig: Signal) -> None:
    first, second = object(), object()
    calls = []

    @sig.connect(sender=first)
    def handler(sender, **kwargs):
        calls.append(sender)

    sig.send(second)
    sig.send(first)
    assert calls == [first]


def test_sender_string_filters_by_equality(sig: Signal) -> None:
    calls = []

    def handler(sender, **kwargs):
        calls.append(sender)

    sig.connect(handler, sender="proj.tasks.add")
    sig.send("proj.tasks.mul")
    sig.send("".join(["proj.tasks.", "add"]))  # equal, not the same object
    assert calls == ["proj.tasks.add"]


def test_connecting_the_same_handler_twice_calls_it_once(sig: Signal) -> None:
    calls = []

    def handler(sender, **kwargs):
        calls.append(1)

    sig.connect(handler)
    sig.connect(handler)
    sig.send("s")
    assert calls == [1]


def test_dispatch_uid_deduplicates(sig: Signal) -> None:
    calls = []

    def make_handler():
        def handler(sender, **kwargs):
            calls.append(1)

        return handler

    # The same module imported twice defines two function objects with one dispatch_uid.
    first, second = make_handler(), make_handler()
    sig.connect(first, dispatch_uid="audit")
    sig.connect(second, dispatch_uid="audit")
    sig.send("s")
    assert calls == [1]


def test_dispatch_uid_keeps_the_first_handler(sig: Signal) -> None:
    calls = []

    def first(sender, **kwargs):
        calls.append("first")

    def second(sender, **kwargs):
        calls.append("second")

    sig.connect(first, dispatch_uid="uid")
    sig.connect(second, dispatch_uid="uid")
    sig.send("s")
    assert calls == ["first"]


def test_same_dispatch_uid_for_two_senders_keeps_both(sig: Signal) -> None:
    calls = []

    def handler(sender, **kwargs):
        calls.append(sender)

    sig.connect(handler, sender="a", dispatch_uid="uid")
    sig.connect(handler, sender="b", dispatch_uid="uid")
    sig.send("a")
    sig.send("b")
    assert calls == ["a", "b"]


def test_disconnect_by_dispatch_uid(sig: Signal) -> None:
    calls = []

    def handler(sender, **kwargs):
        calls.append(1)

    sig.connect(handler, dispatch_uid="to-remove")
    sig.disconnect(dispatch_uid="to-remove")
    sig.send("s")
    assert calls == []
    sig.connect(handler, dispatch_uid="to-remove")
    sig.send("s")
    assert calls == [1], "the uid is free again after disconnecting"


def test_disconnect_by_receiver(sig: Signal) -> None:
    calls = []

    def handler(sender, **kwargs):
        calls.append(1)

    sig.connect(handler)
    sig.disconnect(handler)
    sig.send("s")
    assert calls == []


def test_raising_handler_is_logged_and_others_still_run(
    sig: Signal, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def broken(sender, **kwargs):
        raise RuntimeError("handler exploded")

    def healthy(sender, **kwargs):
        calls.append(sender)
        return "ok"

    sig.connect(broken)
    sig.connect(healthy)
    with caplog.at_level(logging.ERROR, logger="dbqueue.signals"):
        results = sig.send("sender")
    assert calls == ["sender"]
    assert [r for _, r in results] == ["ok"]
    records = [r for r in caplog.records if r.name == "dbqueue.signals"]
    assert len(records) == 1
    assert "unit_test_signal" in records[0].getMessage()
    assert "broken" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert "handler exploded" in caplog.text


def test_weak_false_keeps_a_handler_without_other_references(sig: Signal) -> None:
    calls = []

    def make(tag):
        def handler(sender, **kwargs):
            calls.append(tag)

        return handler

    sig.connect(make("strong"), weak=False)
    sig.connect(make("weak"))
    gc.collect()
    sig.send("s")
    assert calls == ["strong"]


def test_celerys_signal_names_exist() -> None:
    names = [
        "before_task_publish",
        "after_task_publish",
        "task_received",
        "task_prerun",
        "task_postrun",
        "task_success",
        "task_failure",
        "task_retry",
        "task_revoked",
        "task_unknown",
        "task_rejected",
        "worker_init",
        "worker_ready",
        "worker_shutting_down",
        "worker_shutdown",
        "worker_process_init",
        "worker_process_shutdown",
        "import_modules",
    ]
    for name in names:
        assert isinstance(getattr(signals, name), Signal)
        assert getattr(signals, name).name == name


# --- sender filtering on the real signals -------------------------------------------------------


def test_task_signal_sender_filter_by_task_instance(make_app, connect) -> None:
    app: DBQueue = make_app()
    watched = app.task(name="sig.watched")(lambda: "w")
    other = app.task(name="sig.other")(lambda: "o")
    seen = []
    connect(signals.task_prerun, lambda sender, **kw: seen.append(kw["task"].name), sender=watched)
    other.apply()
    watched.apply()
    assert seen == ["sig.watched"]


def test_task_signal_decorator_form_with_sender(make_app) -> None:
    app: DBQueue = make_app()
    task = app.task(name="sig.deco")(lambda: 5)
    results = []

    @signals.task_success.connect(sender=task)
    def on_success(sender, result=None, **kwargs):
        results.append((sender, result))

    try:
        task.apply()
    finally:
        signals.task_success.disconnect(on_success)
    assert results == [(task, 5)]


def test_publish_signal_sender_filter_by_task_name(make_app, connect) -> None:
    app: DBQueue = make_app()
    watched = app.task(name="sig.pub.watched")(lambda: None)
    other = app.task(name="sig.pub.other")(lambda: None)
    seen = []
    connect(
        signals.before_task_publish,
        lambda sender, headers=None, **kw: seen.append((sender, headers["task"])),
        sender="sig.pub.watched",
    )
    other.delay()
    watched.delay()
    app.send_task("sig.pub.watched")
    assert seen == [("sig.pub.watched", "sig.pub.watched")] * 2
