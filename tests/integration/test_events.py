"""The event stream: app.events() in one app sees what workers and other apps on the same
database do (notifications on PostgreSQL, the event table elsewhere)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from dbqueue import DBQueue, signals
from dbqueue.events import Event, EventStream
from tests.integration.helpers import JOB_TIMEOUT, settle, sql, wait_status
from tests.support.polling import wait_until


@pytest.fixture
def follower(make_app, db_url: str):
    """A stream followed from another app on the same database; closed after the test."""
    streams: list[EventStream] = []

    def follow(**options) -> EventStream:
        stream = make_app(db_url).events(**options)
        streams.append(stream)
        return stream

    yield follow
    for stream in streams:
        stream.close()


def collect(stream: EventStream, until: Callable[[list[Event]], bool]) -> list[Event]:
    """Events from the stream until ``until(events)`` holds (or the deadline passes)."""
    seen: list[Event] = []

    def done() -> bool:
        event = stream.get(timeout=0.1)
        if event is not None:
            seen.append(event)
        return until(seen)

    try:
        wait_until(done, timeout=JOB_TIMEOUT, interval=0, message="the events expected")
    except AssertionError as error:
        raise AssertionError(f"{error}; events so far: {seen}") from None
    return seen


def of(events: list[Event], job_id: str) -> list[str]:
    return [e.type for e in events if e.job_id == job_id]


def test_job_events_of_a_worker_reach_another_app(
    app: DBQueue, follower, run_worker, record_signals
) -> None:
    @app.task(name="ok")
    def ok() -> int:
        return 1

    @app.task(name="bad", max_retries=0)
    def bad() -> None:
        raise ValueError("it broke")

    @app.task(name="again", bind=True, max_retries=1)
    def again(self) -> str:
        if self.request.retries == 0:
            raise self.retry(exc=KeyError("first"), countdown=0)
        return "second"

    @app.task(name="progress", bind=True)
    def progress(self) -> None:
        app.emit_custom_event(None, "progress", {"done": 50})

    custom = record_signals(signals.custom_event)
    stream = follower()
    handle = run_worker(app, hostname="events@test")
    wait_until(lambda: handle.worker.control.events.on, timeout=JOB_TIMEOUT, message="noticed")
    results = [ok.delay(), bad.delay(), again.delay(), progress.delay()]
    for result in results:
        settle(result)
    good, failed, retried, reporting = (r.id for r in results)
    events = collect(
        stream,
        lambda seen: (
            of(seen, good)[-1:] == ["job.completed"]
            and of(seen, failed)[-1:] == ["job.failed"]
            and of(seen, retried).count("job.completed") == 1
            and "custom" in of(seen, reporting)
            and of(seen, reporting)[-1:] == ["job.completed"]
        ),
    )
    assert of(events, good) == ["job.started", "job.completed"]
    assert of(events, failed) == ["job.started", "job.failed"]
    # The second run may be claimed before the first run's event is published: no order
    # across runs is promised, only that each run's events come.
    assert sorted(of(events, retried)) == sorted(
        ["job.started", "job.retrying", "job.started", "job.completed"]
    )
    assert of(events, retried)[-1] == "job.completed"
    started = next(e for e in events if e.job_id == good)
    assert (started.task, started.queue, started.worker, started.data) == (
        "ok",
        "celery",
        "events@test",
        {"attempt": 1},
    )
    failure = next(e for e in events if e.type == "job.failed")
    assert failure.data == {"error_type": "builtins.ValueError", "error": "it broke"}
    retry = next(e for e in events if e.type == "job.retrying")
    assert retry.data["error_type"] == "builtins.KeyError" and retry.data["delay"] == 0
    [note] = [e for e in events if e.type == "custom"]
    assert (note.job_id, note.kind, note.data, note.worker) == (
        reporting,
        "progress",
        {"done": 50},
        "events@test",
    )
    assert [(s.kwargs["job_id"], s.kwargs["kind"]) for s in custom] == [(reporting, "progress")]
    assert all(e.timestamp > 0 for e in events)


def test_pause_and_resume_events_from_any_app(
    app: DBQueue, make_app, db_url: str, follower, run_worker
) -> None:
    @app.task(name="held", bind=True, max_retries=2)
    def held(self) -> str:
        if self.request.retries == 0:
            gate.wait(JOB_TIMEOUT)
            raise self.retry(countdown=0)
        return "ran"

    gate = threading.Event()
    stream = follower()
    other = make_app(db_url)
    handle = run_worker(app, hostname="pauses@test")
    wait_until(lambda: handle.worker.control.events.on, timeout=JOB_TIMEOUT, message="noticed")

    other.pause_queue("nightly")
    other.resume_queue("nightly")
    waiting = held.apply_async(queue="parked")
    other.pause_job(waiting.id)
    other.resume_job(waiting.id)
    other.pause_worker("pauses@test")
    wait_until(lambda: handle.worker.is_paused, timeout=JOB_TIMEOUT, message="paused")
    handle.worker.resume()

    running = held.delay()
    wait_status(app, running.id, "running")
    other.pause_job(running.id)
    gate.set()
    wait_status(app, running.id, "paused")
    events = collect(stream, lambda seen: of(seen, running)[-1:] == ["job.paused"])
    kinds = [(e.type, e.queue or e.worker or e.job_id) for e in events if e.job_id != running.id]
    assert kinds == [
        ("queue.paused", "nightly"),
        ("queue.resumed", "nightly"),
        ("job.paused", "parked"),
        ("job.resumed", "parked"),
        ("worker.paused", "pauses@test"),
        ("worker.resumed", "pauses@test"),
    ]
    assert events[2].job_id == waiting.id and events[2].data == {"mode": "graceful"}
    assert events[3].data == {"status": "pending"}
    assert events[4].data["mode"] == "graceful"
    assert of(events, running) == ["job.started", "job.paused"]
    landed = next(e for e in events if e.job_id == running.id and e.type == "job.paused")
    assert (landed.data, landed.task, landed.worker) == (
        {"mode": "graceful"},
        "held",
        "pauses@test",
    )


def test_types_filter_and_cancel_events(app: DBQueue, follower) -> None:
    @app.task(name="idle")
    def idle() -> None:
        pass

    stream = follower(types=["job.cancelled"])
    doomed = idle.delay()
    app.control.revoke(doomed.id)
    app.emit_custom_event(doomed.id, "ignored-by-the-filter")
    [event] = collect(stream, lambda seen: len(seen) == 1)
    assert (event.type, event.job_id, event.data) == (
        "job.cancelled",
        doomed.id,
        {"terminate": False},
    )


def test_nothing_is_published_without_a_subscriber(
    app: DBQueue, db_url: str, follower, run_worker
) -> None:
    @app.task(name="quiet")
    def quiet() -> None:
        pass

    handle = run_worker(app)
    settle(quiet.delay())
    app.pause_queue("q")
    app.emit_custom_event(None, "unheard")
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_events") == [(0,)]
    assert not handle.worker.control.events.on

    stream = follower()
    assert app.storage.count_subscribers(15.0) == 1
    wait_until(lambda: handle.worker.control.events.on, timeout=JOB_TIMEOUT, message="noticed")
    stream.close()
    assert stream.closed
    assert app.storage.count_subscribers(15.0) == 0
    wait_until(lambda: not handle.worker.control.events.on, timeout=JOB_TIMEOUT, message="gone")


def test_checkpoint_saved_is_forwarded_when_the_durable_layer_defines_it(
    app: DBQueue, make_app, db_url: str, follower, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = signals.Signal("checkpoint_saved")
    monkeypatch.setattr(signals, "checkpoint_saved", saved, raising=False)

    @app.task(name="stepped")
    def stepped() -> None:
        pass

    stream = follower()
    publisher = make_app(db_url)
    publisher.tasks["stepped"] = stepped
    stepped.app = publisher
    _ = publisher.event_bus  # connects the forwarder
    saved.send(stepped, job_id="job-1", call_index=2, call_type="charge")
    [event] = collect(stream, lambda seen: len(seen) == 1)
    assert (event.type, event.job_id, event.task, event.data) == (
        "checkpoint.saved",
        "job-1",
        "stepped",
        {"call_index": 2, "call_type": "charge"},
    )


def test_custom_events_refuse_bad_input(app: DBQueue) -> None:
    with pytest.raises(ValueError, match="non-empty kind"):
        app.emit_custom_event("job", "")
    with pytest.raises(ValueError, match="'odd': data must be JSON-serializable"):
        app.emit_custom_event("job", "odd", {"when": object()})
    with pytest.raises(ValueError, match="the limit is 4000"):
        app.emit_custom_event("job", "huge", {"blob": "x" * 5000})
