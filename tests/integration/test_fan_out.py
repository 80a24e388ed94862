"""Fan-out / fan-in through a real worker (threads pool) on SQLite, PostgreSQL and MariaDB:
the parent frees its slot while it waits and resumes exactly once, results come back in input
order, each strategy decides as early as it can, counts always match the children, timeouts,
retries, cancellation (of a child, and with the parent), nesting, and the recovery backstop."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from dbqueue import (
    CollectAll,
    DBQueue,
    FailFast,
    FanOutFailed,
    Threshold,
    call,
    current_job,
    fan_out,
    signals,
    sub,
)
from dbqueue.storage import fanouts, recount
from tests.integration.helpers import JOB_TIMEOUT, Runs, job, settle, sql, wait_status
from tests.support.polling import wait_until


class PaymentDeclined(Exception):
    """A child's own exception type: the parent gets it back, not a plain error."""


def fan_out_row(app: DBQueue, parent_id: str) -> dict[str, Any]:
    rows = sql(
        app,
        "SELECT id, status, total, completed, failed, cancelled, needed FROM dbqueue_fan_outs "
        "WHERE parent_id = :p",
        p=parent_id,
    )
    assert len(rows) == 1, rows
    keys = ("id", "status", "total", "completed", "failed", "cancelled", "needed")
    return dict(zip(keys, rows[0], strict=True))


def children_statuses(app: DBQueue, fan_out_id: str) -> list[str]:
    rows = sql(
        app,
        "SELECT status FROM dbqueue_jobs WHERE fan_out_id = :f ORDER BY fan_out_index",
        f=fan_out_id,
    )
    return [status for (status,) in rows]


def assert_counts_match(app: DBQueue, parent_id: str) -> dict[str, Any]:
    """INV-FANOUT-COUNTS: the fan-out row's counts are exactly its children's statuses."""
    row = fan_out_row(app, parent_id)
    statuses = children_statuses(app, row["id"])
    assert len(statuses) == row["total"]
    assert row["completed"] == statuses.count("completed"), (row, statuses)
    assert row["failed"] == statuses.count("failed"), (row, statuses)
    assert row["cancelled"] == statuses.count("cancelled"), (row, statuses)
    return row


@pytest.fixture
def gates() -> Any:
    """Named events children block on; all released at teardown so no worker thread hangs."""
    made: dict[str, threading.Event] = {}

    def gate(name: str) -> threading.Event:
        return made.setdefault(name, threading.Event())

    yield gate
    for event in made.values():
        event.set()


def test_results_in_input_order_and_the_parent_resumes_once(
    app: DBQueue, run_worker, runs: Runs
) -> None:
    """Children finish in reverse order; one worker slot is enough (the parent frees it)."""

    @app.task(name="square")
    def square(i: int) -> int:
        time.sleep(0.01 * (5 - i))
        return i * i

    @app.task(name="parent")
    def parent() -> list[int]:
        runs.add(current_job().attempt)
        return fan_out([sub(square, i) for i in range(6)], CollectAll()).values()

    result = parent.delay()
    run_worker(app, concurrency=1)
    assert result.get(timeout=JOB_TIMEOUT) == [0, 1, 4, 9, 16, 25]
    assert runs.items == [1, 1]  # first run and one replay, the attempt given back in between
    row = job(app, result.id)
    assert (row["status"], row["attempt"]) == ("completed", 1)
    counts = assert_counts_match(app, result.id)
    assert counts["status"] == "completed"


def test_child_ids_derive_from_the_fan_out_and_a_deleted_child_reads_as_missing(
    app: DBQueue, run_worker, gates
) -> None:
    """Children are found by the primary-key range their fan-out derives; one whose row was
    deleted comes back as "missing" (found by the fallback lookup), the others as they ended."""

    @app.task(name="held")
    def held(i: int) -> int:
        if i == 0:
            assert gates("held").wait(JOB_TIMEOUT)
        return i

    @app.task(name="holds")
    def holds() -> list[str]:
        return [r.status for r in fan_out([sub(held, i) for i in range(3)], CollectAll())]

    result = holds.delay()
    run_worker(app, concurrency=4)
    wait_status(app, result.id, "waiting")
    fan_out_id = fan_out_row(app, result.id)["id"]
    wait_until(
        lambda: children_statuses(app, fan_out_id)[1:] == ["completed", "completed"],
        timeout=JOB_TIMEOUT,
        message="children 1 and 2 done",
    )
    rows = sql(
        app, "SELECT id, fan_out_index FROM dbqueue_jobs WHERE fan_out_id = :f", f=fan_out_id
    )
    assert sorted(rows, key=lambda r: r[1]) == [
        (fanouts.child_id(fan_out_id, i), i) for i in range(3)
    ]
    assert all(uuid.UUID(child).version == 4 for child, _ in rows)
    sql(app, "DELETE FROM dbqueue_jobs WHERE id = :id", id=fanouts.child_id(fan_out_id, 1))
    gates("held").set()
    assert result.get(timeout=JOB_TIMEOUT) == ["completed", "missing", "completed"]


def test_fail_fast_cancels_the_siblings_and_keeps_the_error_type(
    app: DBQueue, run_worker, gates
) -> None:
    @app.task(name="declines")
    def declines() -> None:
        raise PaymentDeclined("card 4242 declined")

    @app.task(name="waits")
    def waits(name: str) -> str:
        assert gates(name).wait(JOB_TIMEOUT)
        return name

    @app.task(name="ff_parent")
    def ff_parent() -> Any:
        try:
            fan_out([sub(waits, "a"), sub(declines), sub(waits, "b"), sub(waits, "c")])
        except FanOutFailed as error:
            return [str(error), [(r.status, type(r.error).__name__) for r in error.results]]
        return "not failed"

    result = ff_parent.delay()
    run_worker(app, concurrency=4)  # three children block: the failing one needs a slot
    message, outcomes = result.get(timeout=JOB_TIMEOUT)
    assert "failed (fail_fast)" in message
    assert "PaymentDeclined: card 4242 declined" in message
    assert outcomes[1] == ["failed", "PaymentDeclined"]
    # The siblings are cancelled right after the decision: the parent may replay a moment
    # before that lands, and then sees them unfinished.
    for i, (status, name) in enumerate(outcomes):
        if i != 1:
            assert (status, name) in {
                ("cancelled", "SubJobCancelled"),
                ("running", "SubJobIncomplete"),
                ("pending", "SubJobIncomplete"),
            }
    fan_out_id = fan_out_row(app, result.id)["id"]
    wait_until(
        lambda: children_statuses(app, fan_out_id).count("cancelled") == 3,
        timeout=JOB_TIMEOUT,
        message="siblings cancelled",
    )
    row = assert_counts_match(app, result.id)
    assert (row["status"], row["failed"], row["cancelled"]) == ("failed", 1, 3)


def test_a_failed_fan_out_fails_the_parent_with_fan_out_failed(app: DBQueue, run_worker) -> None:
    @app.task(name="bad_child")
    def bad_child(i: int) -> int:
        if i == 2:
            raise PaymentDeclined(f"no {i}")
        return i

    @app.task(name="uncaught")
    def uncaught() -> None:
        fan_out([sub(bad_child, i) for i in range(3)])

    result = uncaught.delay()
    run_worker(app)
    error = settle(result)
    assert isinstance(error, FanOutFailed)
    assert "PaymentDeclined: no 2" in str(error)
    assert result.state == "FAILURE"


def test_collect_all_returns_values_errors_and_cancellations(
    app: DBQueue, run_worker, gates
) -> None:
    started = threading.Event()

    @app.task(name="maybe")
    def maybe(i: int) -> int:
        if i == 1:
            raise PaymentDeclined(f"child {i}")
        return i * 10

    @app.task(name="held")
    def held() -> str:
        started.set()
        assert gates("held").wait(JOB_TIMEOUT)
        return "held"

    @app.task(name="collector")
    def collector() -> Any:
        results = fan_out(
            [sub(maybe, 0), sub(maybe, 1), sub(held), sub(maybe, 3)], strategy=CollectAll()
        )
        good, bad = results.partition()
        return {
            "values": results.values(),
            "good": good,
            "bad": [type(e).__name__ for e in bad],
            "all": results.all_succeeded(),
            "count": results.success_count(),
            "held_error": str(results[2].error),
        }

    result = collector.delay()
    run_worker(app, concurrency=3)
    assert started.wait(JOB_TIMEOUT)
    held_id = sql(app, "SELECT id FROM dbqueue_jobs WHERE task = 'held'")[0][0]
    app.AsyncResult(held_id).revoke()  # cancelling one child: CollectAll still completes
    value = result.get(timeout=JOB_TIMEOUT)
    assert value["values"] == [0, 30] and value["good"] == [0, 30]
    assert value["bad"] == ["PaymentDeclined", "SubJobCancelled"]
    assert (value["all"], value["count"]) == (False, 2)
    assert "was cancelled" in value["held_error"] and held_id in value["held_error"]
    row = assert_counts_match(app, result.id)
    assert (row["status"], row["completed"], row["failed"], row["cancelled"]) == (
        "completed",
        2,
        1,
        1,
    )


def test_fail_fast_counts_a_cancelled_child_as_a_failure(app: DBQueue, run_worker, gates) -> None:
    started = threading.Event()

    @app.task(name="blocker")
    def blocker() -> str:
        started.set()
        assert gates("blocker").wait(JOB_TIMEOUT)
        return "x"

    @app.task(name="ok_child")
    def ok_child() -> str:
        return "ok"

    @app.task(name="ff_cancel")
    def ff_cancel() -> None:
        fan_out([sub(ok_child), sub(blocker)])

    result = ff_cancel.delay()
    run_worker(app)
    assert started.wait(JOB_TIMEOUT)
    wait_until(
        lambda: (
            sql(app, "SELECT status FROM dbqueue_jobs WHERE task = 'ok_child'") == [("completed",)]
        ),
        timeout=JOB_TIMEOUT,
        message="the other child completed",
    )
    blocked = sql(app, "SELECT id FROM dbqueue_jobs WHERE task = 'blocker'")[0][0]
    app.control.revoke(blocked)
    error = settle(result)
    assert isinstance(error, FanOutFailed)
    assert "1 cancelled" in str(error)
    assert assert_counts_match(app, result.id)["status"] == "failed"


def test_threshold_succeeds_as_soon_as_reached(app: DBQueue, run_worker, gates) -> None:
    """8 of 10 complete while 2 are still blocked: the parent goes on; the 2 are cancelled."""

    @app.task(name="quick")
    def quick(i: int) -> int:
        return i

    @app.task(name="stuck")
    def stuck() -> int:
        assert gates("stuck").wait(JOB_TIMEOUT)
        return -1

    @app.task(name="thresh")
    def thresh() -> Any:
        results = fan_out(
            [*(sub(quick, i) for i in range(8)), sub(stuck), sub(stuck)], Threshold(0.8)
        )
        return [results.success_count(), [type(r.error).__name__ for r in results if not r.ok]]

    result = thresh.delay()
    run_worker(app, concurrency=4)
    count, errors = result.get(timeout=JOB_TIMEOUT)
    assert count == 8
    assert set(errors) <= {"SubJobCancelled", "SubJobIncomplete"} and len(errors) == 2
    row = fan_out_row(app, result.id)
    assert (row["status"], row["needed"], row["completed"]) == ("completed", 8, 8)
    wait_until(
        lambda: children_statuses(app, row["id"]).count("cancelled") == 2,
        timeout=JOB_TIMEOUT,
        message="the unneeded children were cancelled",
    )
    assert_counts_match(app, result.id)


def test_threshold_fails_as_soon_as_it_can_no_longer_succeed(
    app: DBQueue, run_worker, gates
) -> None:
    @app.task(name="fails")
    def fails(i: int) -> None:
        raise PaymentDeclined(str(i))

    @app.task(name="slowpoke")
    def slowpoke() -> int:
        assert gates("slowpoke").wait(JOB_TIMEOUT)
        return 1

    @app.task(name="thresh_fail")
    def thresh_fail() -> None:
        fan_out([sub(fails, 1), sub(fails, 2), sub(slowpoke), sub(slowpoke)], Threshold(0.75))

    result = thresh_fail.delay()
    run_worker(app, concurrency=4)
    error = settle(result)  # 2 of 4 failed: 3 can no longer complete, while 2 still block
    assert isinstance(error, FanOutFailed)
    assert "failed (threshold)" in str(error)
    row = fan_out_row(app, result.id)
    assert (row["status"], row["failed"], row["needed"]) == ("failed", 2, 3)


def test_timeout_is_enforced(app: DBQueue, run_worker, gates) -> None:
    @app.task(name="forever")
    def forever() -> None:
        assert gates("forever").wait(JOB_TIMEOUT)

    @app.task(name="timed")
    def timed() -> Any:
        try:
            fan_out([sub(forever), sub(forever)], CollectAll(), timeout=0.5)
        except FanOutFailed as error:
            return str(error)
        return "no timeout"

    began = time.monotonic()
    result = timed.delay()
    run_worker(app, concurrency=3)
    message = result.get(timeout=JOB_TIMEOUT)
    assert "timed out" in message
    assert time.monotonic() - began < JOB_TIMEOUT
    row = fan_out_row(app, result.id)
    assert row["status"] == "timed_out"
    wait_until(
        lambda: children_statuses(app, row["id"]) == ["cancelled", "cancelled"],
        timeout=JOB_TIMEOUT,
        message="children of the timed-out fan-out cancelled",
    )
    assert_counts_match(app, result.id)


def test_retries_apply_to_the_children(app: DBQueue, run_worker, runs: Runs) -> None:
    @app.task(name="flaky", bind=True, max_retries=0)
    def flaky(self, i: int) -> int:
        runs.add((i, self.request.attempt))
        if self.request.attempt < 3:
            raise self.retry(countdown=0)
        return i

    @app.task(name="retrying_parent")
    def retrying_parent(retries: int) -> Any:
        try:
            return fan_out([sub(flaky, 1), sub(flaky, 2)], retries=retries).values()
        except FanOutFailed as error:
            return str(error)

    run_worker(app)
    assert retrying_parent.delay(2).get(timeout=JOB_TIMEOUT) == [1, 2]
    assert sorted(runs.items) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    limits = sql(app, "SELECT DISTINCT max_retries FROM dbqueue_jobs WHERE task = 'flaky'")
    assert limits == [(2,)]
    assert "failed (fail_fast)" in retrying_parent.delay(1).get(timeout=JOB_TIMEOUT)


def test_cancelling_a_waiting_parent_cancels_its_children(app: DBQueue, run_worker, gates) -> None:
    started = threading.Event()

    @app.task(name="long_child")
    def long_child(gate: str) -> str:
        started.set()
        assert gates(gate).wait(JOB_TIMEOUT)
        return gate

    @app.task(name="cancellable")
    def cancellable(cascade: bool, gate: str) -> None:
        fan_out([sub(long_child, gate) for _ in range(3)], cancel_on_parent_failure=cascade)

    worker = run_worker(app, concurrency=2)
    cascading = cancellable.delay(True, "first")
    wait_status(app, cascading.id, "waiting")
    assert started.wait(JOB_TIMEOUT)
    cascading.revoke()
    row = fan_out_row(app, cascading.id)
    wait_until(
        lambda: children_statuses(app, row["id"]) == ["cancelled"] * 3,
        timeout=JOB_TIMEOUT,
        message="children cancelled with their parent",
    )
    row = assert_counts_match(app, cascading.id)
    assert row["status"] == "cancelled"
    gates("first").set()  # the two that were running stop; their outcomes are discarded

    kept = cancellable.delay(False, "second")
    wait_status(app, kept.id, "waiting")
    kept.revoke()
    gates("second").set()
    kept_row = fan_out_row(app, kept.id)
    wait_until(
        lambda: children_statuses(app, kept_row["id"]) == ["completed"] * 3,
        timeout=JOB_TIMEOUT,
        message="children left to finish",
    )
    assert assert_counts_match(app, kept.id)["status"] == "completed"
    assert job(app, kept.id)["status"] == "cancelled"  # the decision did not wake it
    worker.stop()


def test_nested_fan_out(app: DBQueue, run_worker, runs: Runs) -> None:
    @app.task(name="leaf")
    def leaf(i: int) -> int:
        return i + 1

    @app.task(name="branch")
    def branch(base: int) -> int:
        runs.add(base)
        return sum(fan_out([sub(leaf, base + i) for i in range(3)]).values())

    @app.task(name="root")
    def root() -> list[int]:
        first = call(leaf, 0)
        return [first, *fan_out([sub(branch, 10), sub(branch, 20)]).values()]

    result = root.delay()
    run_worker(app, concurrency=2)
    assert result.get(timeout=JOB_TIMEOUT) == [1, 36, 66]
    assert sorted(runs.items) == [10, 10, 20, 20]  # each branch ran, waited, replayed once
    statuses = sql(app, "SELECT status, COUNT(*) FROM dbqueue_jobs GROUP BY status")
    assert statuses == [("completed", 9)]
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_fan_outs WHERE status = 'completed'") == [(3,)]


def test_unregistered_child_fails_and_bad_input_is_named(app: DBQueue, run_worker) -> None:
    @app.task(name="known")
    def known(x: int) -> int:
        return x

    @app.task(name="by_name")
    def by_name() -> Any:
        results = fan_out([sub("known", 5), sub("nowhere.task")], CollectAll())
        return [results[0].value, type(results[1].error).__name__, str(results[1].error)]

    result = by_name.delay()
    run_worker(app)
    value = result.get(timeout=JOB_TIMEOUT)
    assert value[:2] == [5, "NotRegistered"] and "nowhere.task" in value[2]

    with pytest.raises(TypeError, match=r"unknown option.*'colour'"):
        sub(known, 1, colour="red")
    with pytest.raises(TypeError, match="bad arguments"):
        sub(known, 1, 2)
    with pytest.raises(TypeError, match="child 1 is a int"):
        fan_out([sub(known, 1), 2])
    with pytest.raises(ValueError, match="0 < ratio <= 1"):
        Threshold(80)
    with pytest.raises(ValueError, match="timeout"):
        fan_out([], timeout=-1)
    with pytest.raises(TypeError, match="strategy instance"):
        fan_out([], FailFast)  # type: ignore[arg-type]


def test_signals_waiting_and_woken(app: DBQueue, run_worker, record_signals) -> None:
    seen = record_signals(signals.job_waiting, signals.job_woken)

    @app.task(name="tiny")
    def tiny() -> int:
        return 1

    @app.task(name="announcer")
    def announcer() -> int:
        return len(fan_out([sub(tiny), sub(tiny)]))

    result = announcer.delay()
    run_worker(app)
    assert result.get(timeout=JOB_TIMEOUT) == 2
    fan_out_id = fan_out_row(app, result.id)["id"]
    assert [(r.signal, r.kwargs) for r in seen] == [
        ("job_waiting", {"job_id": result.id, "fan_out_id": fan_out_id, "children": 2}),
        ("job_woken", {"job_id": result.id, "fan_out_id": fan_out_id, "status": "completed"}),
    ]
    assert seen[0].sender is announcer


def test_recovery_wakes_a_parent_left_waiting(app: DBQueue, run_worker) -> None:
    """A crash between deciding and waking (simulated by SQL) does not wedge the workflow."""

    @app.task(name="leaf2")
    def leaf2() -> int:
        return 2

    @app.task(name="wedged")
    def wedged() -> int:
        return sum(fan_out([sub(leaf2)]).values())

    result = wedged.delay()
    worker = run_worker(app)
    assert result.get(timeout=JOB_TIMEOUT) == 2
    worker.stop()

    # Rewind: the parent waits again while its fan-out is decided and nothing will wake it.
    sql(
        app,
        "UPDATE dbqueue_jobs SET status = 'waiting', worker = NULL WHERE id = :id",
        id=result.id,
    )
    run_worker(app)
    wait_status(app, result.id, "completed")
    assert job(app, result.id)["status"] == "completed"


def _stuck_fan_out(
    app: DBQueue,
    fan_out_id: str,
    statuses: list[str | None],
    keyed: bool = True,
    parent_status: str = "waiting",
    status: str = "pending",
    **counts: int,
) -> str:
    """A parent (waiting) and its FailFast fan-out (undecided) as a crash or race may leave
    them: children with these statuses (None: no row), stored counts ``counts``.
    ``keyed=False``: a fan-out from before children's ids were derived. Returns the parent."""

    @app.task(name="stuck_job")
    def stuck_job() -> None:
        pass

    parent = stuck_job.delay()
    sql(app, "UPDATE dbqueue_jobs SET status = :s WHERE id = :id", s=parent_status, id=parent.id)
    sql(
        app,
        "INSERT INTO dbqueue_fan_outs (id, parent_id, call_index, strategy, needed, total, "
        "completed, failed, cancelled, keyed_children, status) "
        "VALUES (:f, :p, 0, 'fail_fast', :n, :n, :c, :x, :y, :k, :status)",
        k=keyed,
        status=status,
        f=fan_out_id,
        p=parent.id,
        n=len(statuses),
        c=counts.get("completed", 0),
        x=counts.get("failed", 0),
        y=counts.get("cancelled", 0),
    )
    for index, status in enumerate(statuses):
        if status is None:
            continue
        child_id = fanouts.child_id(fan_out_id, index) if keyed else str(uuid.uuid4())
        child = stuck_job.apply_async(task_id=child_id)
        sql(
            app,
            "UPDATE dbqueue_jobs SET status = :s, fan_out_id = :f, fan_out_index = :i, "
            "parent_id = :p WHERE id = :id",
            s=status,
            f=fan_out_id,
            i=index,
            p=parent.id,
            id=child.id,
        )
    return parent.id


def test_recovery_cancels_children_a_decided_fan_out_left_behind(app: DBQueue) -> None:
    """Children still pending under a decided fan-out (a crash after the decision) are
    cancelled by the maintenance pass, and counted."""
    _stuck_fan_out(
        app, "f1", [None, "pending"], parent_status="completed", status="failed", failed=1
    )
    leftover = fanouts.child_id("f1", 1)
    assert fanouts.recover(app.storage) == {"woken": 0, "cancelled": 1}
    assert job(app, leftover)["status"] == "cancelled"
    assert sql(app, "SELECT cancelled FROM dbqueue_fan_outs WHERE id = 'f1'") == [(1,)]
    assert fanouts.recover(app.storage) == {"woken": 0, "cancelled": 0}


def test_recount_decides_a_fan_out_whose_finished_children_went_uncounted(app: DBQueue) -> None:
    """The backstop for a miscount: every child finished but one was never counted; the
    recount decides the fan-out from the rows and wakes the parent, once."""
    parent = _stuck_fan_out(app, "f3", ["completed", "completed"], completed=1)
    assert recount.recount(app.storage) == (0, "")  # younger than RECOUNT_AGE: left alone
    assert recount.recount(app.storage, age=0.0) == (1, "")
    assert sql(app, "SELECT status, completed, failed FROM dbqueue_fan_outs") == [
        ("completed", 2, 0)
    ]
    assert job(app, parent)["status"] == "pending"
    assert recount.recount(app.storage, age=0.0) == (0, "")


def test_recount_leaves_a_fan_out_with_a_live_child_and_counts_a_gone_one(app: DBQueue) -> None:
    parent = _stuck_fan_out(app, "f4", ["completed", "pending"], completed=1)
    other = _stuck_fan_out(app, "f5", ["failed", None])
    assert recount.recount(app.storage, age=0.0, limit=1) == (0, "f4")  # live child: waits
    assert recount.recount(app.storage, "f4", age=0.0, limit=1) == (1, "f5")
    assert sql(app, "SELECT status, failed, cancelled FROM dbqueue_fan_outs WHERE id = 'f5'") == [
        ("failed", 1, 1)  # the child with no row counts as cancelled
    ]
    assert job(app, other)["status"] == "pending"
    sql(app, "DELETE FROM dbqueue_jobs WHERE id = :id", id=fanouts.child_id("f4", 1))
    assert recount.recount(app.storage, "f5", age=0.0, limit=1) == (1, "f4")  # went round
    assert sql(app, "SELECT status FROM dbqueue_fan_outs WHERE id = 'f4'") == [("failed",)]
    assert job(app, parent)["status"] == "pending"
    assert recount.recount(app.storage, age=0.0) == (0, "")


def test_a_fan_out_from_before_derived_ids_is_still_read_cancelled_and_recounted(
    app: DBQueue,
) -> None:
    """Children with random ids (``keyed_children`` false) are found across all UUIDs."""
    _stuck_fan_out(app, "f7", ["completed", "pending", "running"], keyed=False, completed=1)

    def statuses() -> list[tuple[int, str]]:
        rows = fanouts.children(app.storage, "f7", 3, keyed=False)
        return sorted((row[0], row[3]) for row in rows)

    assert statuses() == [(0, "completed"), (1, "pending"), (2, "running")]
    assert recount.recount(app.storage, age=0.0) == (0, "")  # live children: left alone
    sql(app, "UPDATE dbqueue_fan_outs SET status = 'failed' WHERE id = 'f7'")
    assert fanouts.cancel_rest(app.storage, ["f7"]) == 2
    assert statuses() == [(0, "completed"), (1, "cancelled"), (2, "cancelled")]


def test_a_worker_recounts_an_old_stuck_fan_out_and_the_parent_runs(
    app: DBQueue, run_worker
) -> None:
    parent = _stuck_fan_out(app, "f6", ["completed"])
    sql(app, "UPDATE dbqueue_fan_outs SET created_at = created_at - 120")
    run_worker(app)
    wait_until(
        lambda: sql(app, "SELECT status FROM dbqueue_fan_outs") == [("completed",)],
        timeout=JOB_TIMEOUT,
        message="the worker's maintenance recounted the fan-out",
    )
    wait_status(app, parent, "completed")


def test_purge_and_prune_leave_a_live_parents_children(app: DBQueue, run_worker, gates) -> None:
    @app.task(name="member")
    def member(i: int) -> int:
        if i == 0:
            assert gates("member").wait(JOB_TIMEOUT)
        return i

    @app.task(name="holder", queue="holders")
    def holder() -> list[int]:
        return fan_out([sub(member, 0), sub(member, 1)], queue="members").values()

    result = holder.delay()
    parents = run_worker(app, queues="holders")
    wait_status(app, result.id, "waiting")
    row = fan_out_row(app, result.id)
    assert app.control.purge(["members"]) == 0  # nobody serves "members" yet: both pending
    assert app.control.purge() == 0
    assert children_statuses(app, row["id"]) == ["pending", "pending"]

    members = run_worker(app, queues="members")
    wait_until(
        lambda: children_statuses(app, row["id"])[1] == "completed",
        timeout=JOB_TIMEOUT,
        message="second child done",
    )
    assert app.storage.prune(-1.0) == 0  # the finished child stays while its parent waits
    gates("member").set()
    assert result.get(timeout=JOB_TIMEOUT) == [0, 1]
    members.stop()
    parents.stop()
    assert app.storage.prune(-1.0) == 3  # now parent and children go, with the fan-out
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_fan_outs") == [(0,)]
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_checkpoints") == [(0,)]


def test_the_reaper_failing_a_child_counts_it(app: DBQueue) -> None:
    """A child whose worker died with its retries spent ends failed, and its fan-out knows."""

    @app.task(name="lost_parent")
    def lost_parent() -> None:
        pass

    @app.task(name="lost_child", max_retries=0)
    def lost_child() -> None:
        pass

    parent = lost_parent.delay()
    sql(app, "UPDATE dbqueue_jobs SET status = 'waiting' WHERE id = :id", id=parent.id)
    sql(
        app,
        "INSERT INTO dbqueue_fan_outs (id, parent_id, call_index, strategy, needed, total) "
        "VALUES ('f2', :p, 0, 'collect_all', 0, 1)",
        p=parent.id,
    )
    child = lost_child.delay()
    sql(
        app,
        "UPDATE dbqueue_jobs SET fan_out_id = 'f2', fan_out_index = 0, status = 'running', "
        "attempt = 1, worker = 'gone', parent_id = :p WHERE id = :id",
        id=child.id,
        p=parent.id,
    )
    reaped = app.storage.reap(0.0)
    assert [(r.id, r.status, r.fan_out_id) for r in reaped] == [(child.id, "failed", "f2")]
    assert sql(app, "SELECT status, failed FROM dbqueue_fan_outs WHERE id = 'f2'") == [
        ("completed", 1)
    ]
    assert job(app, parent.id)["status"] == "pending"  # woken in the reaper's transaction
