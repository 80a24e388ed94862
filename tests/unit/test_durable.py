"""Durable workflows without a worker: the strategies' decisions, the result helpers, and
``call`` / ``fan_out`` / phases in eager mode (``apply()``), which run everything inline."""

from __future__ import annotations

from typing import Any

import pytest

from dbqueue import (
    CollectAll,
    DBQueue,
    FailFast,
    FanOutFailed,
    Result,
    Results,
    Threshold,
    all_succeeded,
    call,
    current_job,
    fan_out,
    load_checkpoint,
    partition,
    phase,
    save_checkpoint,
    sub,
    success_count,
    values,
)
from dbqueue.storage.fanouts import decide, needed_for


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((0, 0, 0), None),
        ((3, 0, 0), None),
        ((4, 0, 0), "completed"),
        ((1, 1, 0), "failed"),  # the first failure decides
        ((1, 0, 1), "failed"),  # so does a cancellation
    ],
)
def test_fail_fast(counts: tuple[int, int, int], expected: str | None) -> None:
    assert decide("fail_fast", needed_for("fail_fast", 4, None), 4, *counts) == expected


@pytest.mark.parametrize(
    ("counts", "expected"),
    [((3, 0, 0), None), ((2, 1, 0), None), ((2, 1, 1), "completed"), ((0, 4, 0), "completed")],
)
def test_collect_all(counts: tuple[int, int, int], expected: str | None) -> None:
    assert decide("collect_all", 0, 4, *counts) == expected


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((7, 0, 0), None),
        ((8, 0, 0), "completed"),  # early: 2 still running
        ((7, 2, 0), None),  # 1 left, 8 still reachable
        ((7, 2, 1), "failed"),
        ((5, 3, 0), "failed"),  # early: 2 left cannot make 8
        ((0, 0, 3), "failed"),
    ],
)
def test_threshold(counts: tuple[int, int, int], expected: str | None) -> None:
    needed = needed_for("threshold", 10, 0.8)
    assert needed == 8
    assert decide("threshold", needed, 10, *counts) == expected


def test_threshold_needed_rounds_up_without_float_noise() -> None:
    assert needed_for("threshold", 30, 0.1) == 3  # 30 * 0.1 == 3.0000000000000004
    assert needed_for("threshold", 3, 0.7) == 3
    assert needed_for("threshold", 10, 1.0) == 10
    assert Threshold(0.5).needed(5) == 3


def test_strategies_compare_and_validate() -> None:
    assert Threshold(0.5) == Threshold(0.5) != Threshold(0.6)
    assert FailFast() == FailFast() != CollectAll()
    assert repr(Threshold(0.8)) == "Threshold(0.8)"
    for bad in (0, 1.5, -0.1, True, "0.8"):
        with pytest.raises(ValueError, match="ratio"):
            Threshold(bad)  # type: ignore[arg-type]


def test_result_helpers() -> None:
    error = ValueError("x")
    results = Results([Result(0, 1), Result(1, error=error, status="failed"), Result(2, 3)])
    assert values(results) == results.values() == [1, 3]
    assert partition(results) == results.partition() == ([1, 3], [error])
    assert results.errors() == [error]
    assert not all_succeeded(results) and not results.all_succeeded()
    assert success_count(results) == results.success_count() == 2
    assert results[0].get() == 1
    with pytest.raises(ValueError):
        results[1].get()
    assert all_succeeded([]) is True


@pytest.fixture
def eager_app(tmp_path: Any) -> Any:
    app = DBQueue("eager", broker=f"sqlite:///{tmp_path}/eager.db", task_always_eager=True)
    yield app
    app.close()


def test_eager_workflow_runs_inline(eager_app: DBQueue) -> None:
    seen: list[Any] = []

    @eager_app.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    @eager_app.task(name="refuse")
    def refuse(x: int) -> int:
        raise KeyError(x)

    @phase("prepare")
    def prepare() -> str:
        seen.append("prepare")
        return "ready"

    @eager_app.task(name="workflow", bind=True)
    def workflow(self: Any, n: int) -> Any:
        job = current_job()
        seen.append((job.id == self.request.id, job.durable))
        state = prepare()
        save_checkpoint("n", n)
        doubled = call(double, n)
        collected = fan_out([sub(double, i) for i in range(3)] + [sub(refuse, 9)], CollectAll())
        try:
            fan_out([sub(double, 1), sub(refuse, 2)], FailFast())
        except FanOutFailed as error:
            failed = [r.status for r in error.results]
        return [state, load_checkpoint("n"), doubled, collected.values(), failed]

    result = workflow.delay(5)
    assert result.get() == ["ready", 5, 10, [0, 2, 4], ["completed", "failed"]]
    assert seen == [(True, False), "prepare"]


def test_threshold_inline(eager_app: DBQueue) -> None:
    @eager_app.task(name="maybe")
    def maybe(i: int) -> int:
        if i % 4 == 3:
            raise ValueError(i)
        return i

    @eager_app.task(name="thresh")
    def thresh(ratio: float) -> Any:
        try:
            return fan_out([sub(maybe, i) for i in range(8)], Threshold(ratio)).success_count()
        except FanOutFailed as error:
            return str(error)

    assert thresh.delay(0.75).get() == 6
    assert "failed (threshold)" in thresh.delay(0.8).get()


def test_outside_a_job() -> None:
    assert current_job() is None
    assert load_checkpoint("anything", "default") == "default"
    save_checkpoint("ignored", 1)  # a no-op outside a job


def test_a_child_claimed_again_while_its_retry_is_written_stays_known(tmp_path) -> None:
    """The completer writes a child's retry while the worker loop claims the child again; the
    entry of the new claim must survive, or the child's completion would go uncounted and
    its parent wait forever."""
    from dbqueue import DBQueue
    from dbqueue.storage import ClaimedJob, Outcome, fanouts

    app = DBQueue("registry", broker=f"sqlite:///{tmp_path / 'q.db'}")
    storage = app.storage

    def claim_of(job_id: str) -> ClaimedJob:
        return ClaimedJob(
            job_id,
            "t",
            "q",
            0,
            b"[[], {}]",
            "application/json",
            1,
            3,
            0.0,
            None,
            0.0,
            None,
            None,
            fan_out_id="fan-1",
        )

    first, second = claim_of("child"), claim_of("child")
    storage.fan_out_children["child"] = first
    original_write = storage.write

    def write_then_claim_again(fn: Any, what: str, *args: Any, **kwargs: Any) -> Any:
        result = original_write(fn, what, *args, **kwargs)
        storage.fan_out_children["child"] = second  # the loop thread's new claim
        return result

    storage.write = write_then_claim_again  # type: ignore[method-assign]
    outcome = Outcome("retry", "child", error_type="E", error="again", delay=0.0)
    fanouts.finish(storage, "worker", [outcome], {"retry": [outcome.params("worker")]})
    assert storage.fan_out_children["child"] is second
    storage.write = original_write  # type: ignore[method-assign]
    fanouts.finish(storage, "worker", [outcome], {"retry": [outcome.params("worker")]})
    assert "child" not in storage.fan_out_children
    app.close()


def test_a_parent_woken_and_claimed_again_before_its_suspend_is_written_stays_known(
    tmp_path,
) -> None:
    """A parent that is also a fan-out child commits ``waiting`` in its own run; its children
    may finish, wake it and have it claimed again before the completer writes the first run's
    ``suspend`` outcome. That outcome must drop only its own claim's entry, or the replay's
    completion would go uncounted and the grandparent wait forever."""
    from dbqueue import DBQueue
    from dbqueue.storage import ClaimedJob, Outcome, fanouts

    app = DBQueue("registry", broker=f"sqlite:///{tmp_path / 'q.db'}")
    storage = app.storage

    def claim_of(job_id: str) -> ClaimedJob:
        return ClaimedJob(
            job_id, "t", "q", 0, b"[[], {}]", "application/json", 1, 3, 0.0, None, 0.0,
            None, None, fan_out_id="fan-1",
        )  # fmt: skip

    first, again = claim_of("branch"), claim_of("branch")
    storage.fan_out_children["branch"] = again  # woken and claimed again already
    suspended = Outcome("suspend", "branch", claim=first)
    fanouts.finish(storage, "worker", [suspended], {"suspend": [suspended.params("worker")]})
    assert storage.fan_out_children["branch"] is again

    storage.fan_out_children["branch"] = first  # the usual order: written before the wake
    fanouts.finish(storage, "worker", [suspended], {"suspend": [suspended.params("worker")]})
    assert "branch" not in storage.fan_out_children
    app.close()
