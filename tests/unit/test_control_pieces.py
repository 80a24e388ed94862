"""The parts of pause/stop and the event stream that need no server: the event wire form,
NOTIFY payload chunking, reading a sequence with late commits, raising into a job's thread
only while its body runs, the runner's gate, and raise_if_stopped."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from dbqueue import control
from dbqueue.events import GAP_PATIENCE, Event, _SeqTracker, encode
from dbqueue.exceptions import JobStopped, SoftTimeLimitExceeded
from dbqueue.request import Context, pop, push
from dbqueue.storage import ClaimedJob, Outcome
from dbqueue.storage.control import MAX_NOTIFY_PAYLOAD, _chunks
from dbqueue.worker.completer import Receipt
from dbqueue.worker.limits import LimitGuard, Stopper, Watchdog
from dbqueue.worker.runner import JobRunner

# --- events on the wire ---------------------------------------------------------------------------


def test_an_event_survives_its_wire_form() -> None:
    row = encode("job.failed", "j1", ts=12.5, task="t", queue="q", worker="w@h", data={"e": 1})
    event = Event.from_row(json.loads(json.dumps(row)))
    assert event == Event("job.failed", 12.5, "j1", "t", "q", "w@h", None, {"e": 1})
    assert event.to_dict() == {
        "type": "job.failed",
        "timestamp": 12.5,
        "job_id": "j1",
        "task": "t",
        "queue": "q",
        "worker": "w@h",
        "data": {"e": 1},
    }


@pytest.mark.parametrize("row", [[1, 2.0], ["t", 1.0, None, None, None, None, None, []], "x"])
def test_a_malformed_row_is_refused(row: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        Event.from_row(row)  # type: ignore[arg-type]


def test_chunks_fit_one_notify_each_and_keep_every_event_in_order() -> None:
    events = [encode("job.completed", f"{n:036d}", ts=n, worker="w@h") for n in range(600)]
    payloads = _chunks(events, "schema_1")
    assert len(payloads) > 1
    seen = []
    for payload in payloads:
        assert len(payload) <= MAX_NOTIFY_PAYLOAD
        message = json.loads(payload)
        assert message["scope"] == "schema_1"
        seen.extend(tuple(row) for row in message["events"])
    assert seen == events


def test_a_grouped_row_too_large_for_one_notification_is_split() -> None:
    ids = [f"{n:036d}" for n in range(500)]
    row = encode("job.completed", ts=1.0, worker="w@h")
    grouped = (row[0], row[1], ids, *row[3:])
    payloads = _chunks([grouped], "")
    assert len(payloads) > 1
    assert all(len(p) <= MAX_NOTIFY_PAYLOAD for p in payloads)
    rows = [r for p in payloads for r in json.loads(p)["events"]]
    assert [i for r in rows for i in r[2]] == ids
    assert {(r[0], r[5]) for r in rows} == {("job.completed", "w@h")}


def test_an_event_too_large_for_a_notification_is_left_out() -> None:
    huge = encode("custom", data={"blob": "x" * MAX_NOTIFY_PAYLOAD})
    small = encode("custom", ts=1.0)
    [payload] = _chunks([huge, small], "")
    assert [tuple(row) for row in json.loads(payload)["events"]] == [small]


# --- reading the event table ----------------------------------------------------------------------


def test_seq_tracker_yields_each_number_once_and_waits_for_a_gap() -> None:
    tracker = _SeqTracker(10)
    assert [s for s in (11, 13, 14) if tracker.accept(s)] == [11, 13, 14]
    tracker.advance(now=100.0)
    assert tracker.low == 11, "12 may still commit: keep reading from 11"
    assert not tracker.accept(13) and not tracker.accept(11)
    assert tracker.accept(12), "a late commit inside the patience is delivered"
    tracker.advance(now=101.0)
    assert (tracker.low, tracker.seen) == (14, set())


def test_seq_tracker_gives_up_on_a_gap_after_its_patience() -> None:
    tracker = _SeqTracker(0)
    tracker.accept(2)
    tracker.advance(now=50.0)
    assert tracker.low == 0
    tracker.advance(now=50.0 + GAP_PATIENCE / 2)
    assert tracker.low == 0
    tracker.advance(now=50.0 + GAP_PATIENCE)
    assert tracker.low == 2, "1 was rolled back: move on"
    assert not tracker.accept(1)


# --- raising into a job's thread ------------------------------------------------------------------


def test_interrupt_reaches_only_the_armed_body_and_only_once() -> None:
    stopper = Stopper()
    entered, outcome = threading.Event(), {}

    def body() -> None:
        try:
            with stopper.prepare("job-1"):
                entered.set()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    time.sleep(0.005)
            outcome["result"] = "ran to the end"
        except JobStopped:
            outcome["result"] = "stopped"
        outcome["after"] = stopper.interrupt("job-1", JobStopped)
        with stopper.prepare("job-2"):
            outcome["next job"] = stopper.interrupt("job-1", JobStopped)

    assert stopper.interrupt("job-1", JobStopped) is False, "nothing runs it yet"
    thread = threading.Thread(target=body)
    thread.start()
    assert entered.wait(5)
    assert stopper.interrupt("job-1", JobStopped) is True
    assert stopper.interrupt("job-1", JobStopped) is True, "asking twice raises once"
    thread.join(5)
    assert outcome == {"result": "stopped", "after": False, "next job": False}


def test_limits_and_stops_share_one_body() -> None:
    watchdog, stopper = Watchdog(), Stopper()
    try:
        with pytest.raises(SoftTimeLimitExceeded):
            with LimitGuard(watchdog, 0.05, None, stopper.prepare("job-3")):
                assert stopper.interrupt("nope", JobStopped) is False
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    time.sleep(0.005)
        assert stopper.interrupt("job-3", JobStopped) is False, "disarmed on the way out"
    finally:
        watchdog.stop()


# --- the runner's gate ----------------------------------------------------------------------------


class HoldingControl:
    """A worker control whose gate holds every job."""

    active = True

    def __init__(self) -> None:
        self.held: list[str] = []

    def holds(self, job: ClaimedJob) -> bool:
        return True

    def hold_receipt(self, job: ClaimedJob, commit: Any) -> Receipt:
        self.held.append(job.id)
        receipt: Receipt = commit(Outcome("release", job.id), True)
        return receipt


def test_the_runner_releases_a_held_job_without_running_it(app) -> None:
    ran: list[int] = []

    @app.task(name="gated")
    def gated() -> None:
        ran.append(1)

    committed: list[Outcome] = []

    def commit(outcome: Outcome, wait: bool) -> Receipt:
        committed.append(outcome)
        return Receipt.resolved(True)

    gate = HoldingControl()
    runner = JobRunner(app, "host", "worker-id", commit, None, gate)  # type: ignore[arg-type]
    job = ClaimedJob(
        "j1", "gated", "q", 0, b"[[], {}, {}]", "application/json", 1, 3, 0.0, None, 0.0, None, None
    )
    runner.run(job)
    assert ran == []
    assert gate.held == ["j1"]
    assert [(o.kind, o.job_id) for o in committed] == [("release", "j1")]


# --- stop checks at durable boundaries -----------------------------------------------------------


def test_raise_if_stopped_stops_only_the_job_asked_to_stop() -> None:
    token = push(Context(id="mine"))
    try:
        control.raise_if_stopped()
        assert not control.stop_requested()
        control._stopping.add("someone-else")
        control.raise_if_stopped()
        control._stopping.add("mine")
        assert control.stop_requested()
        with pytest.raises(JobStopped, match="job mine was stopped"):
            control.raise_if_stopped()
    finally:
        control._stopping.difference_update({"mine", "someone-else"})
        pop(token)
    assert not control.stop_requested("mine")


@pytest.mark.parametrize("mode", ["graceful", "aggressive"])
def test_check_mode_accepts_the_two_modes(mode: str) -> None:
    assert control.check_mode(mode) == mode
