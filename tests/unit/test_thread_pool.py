"""The threads pool: bites of a long queue stay stealable until each job starts, so no job waits
behind a long one while a thread is idle, and warm shutdown gets every unstarted job back; a
thread's batched successes are handed over before a job that may be long."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from dbqueue import DBQueue
from dbqueue.worker.completer import Receipt
from dbqueue.worker.pools import ThreadPool
from dbqueue.worker.runner import JobRunner

DEADLINE = 10.0


class GatedRunner:
    """Runs jobs by name: ``long*`` jobs block until the gate opens; every start is recorded."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started: list[str] = []
        self.lock = threading.Lock()

    def run_many(self, jobs: Iterable[Any], release: Any) -> None:
        for job in jobs:
            with self.lock:
                self.started.append(job.id)
            if job.id.startswith("long"):
                assert self.gate.wait(DEADLINE)
            release((job.id,))

    def wait_started(self, *ids: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not set(ids) <= set(self.started):
            assert time.monotonic() < deadline, f"{ids} not started; started: {self.started}"
            time.sleep(0.005)


def jobs(*ids: str) -> list[Any]:
    return [SimpleNamespace(id=job_id, task=f"task.{job_id}") for job_id in ids]


def pool_of(size: int) -> tuple[ThreadPool, GatedRunner, list[str]]:
    runner = GatedRunner()
    released: list[str] = []

    def release(ids: Sequence[str]) -> None:
        released.extend(ids)

    pool = ThreadPool(size, runner, release)  # type: ignore[arg-type]
    pool.start()
    return pool, runner, released


def test_a_job_bitten_behind_a_long_one_is_stolen_by_an_idle_thread() -> None:
    pool, runner, _ = pool_of(2)
    try:
        # Four queued jobs on two threads: the first bite is two jobs, the long one first.
        pool.submit_many(jobs("long", "quick1", "quick2", "quick3"))
        runner.wait_started("long", "quick1", "quick2", "quick3")
        assert not runner.gate.is_set()  # quick1 ran while the long job still held its thread
    finally:
        runner.gate.set()
        pool.stop(DEADLINE)


def test_drain_unstarted_takes_back_jobs_waiting_in_bites() -> None:
    pool, runner, released = pool_of(2)
    try:
        pool.submit_many(jobs("long1", "a", "long2", "b"))
        runner.wait_started("long1", "long2")
        unstarted = {job.id for job in pool.drain_unstarted()}
        assert unstarted == {"a", "b"}
        runner.gate.set()
        deadline = time.monotonic() + DEADLINE
        while not {"long1", "long2"} <= set(released):
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        runner.gate.set()
        pool.stop(DEADLINE)
    assert sorted(runner.started) == ["long1", "long2"]  # drained jobs never ran


def test_batched_successes_are_handed_over_before_a_job_not_known_to_be_short(
    app: DBQueue,
) -> None:
    """A thread batches successes nobody observes, but never makes them wait for a long job."""
    gate = threading.Event()

    @app.task(name="quick")
    def quick(i: int) -> int:
        return i

    @app.task(name="slow")
    def slow() -> int:
        assert gate.wait(DEADLINE)
        return -1

    for i in range(3):
        quick.delay(i)
    app.finalize()
    warm = app.storage.claim("w", ["celery"], 3)
    slow.delay()
    batches: list[list[str]] = []
    runner = JobRunner(
        app,
        "host",
        "w",
        lambda outcome, wait=True: Receipt.resolved(True),
        commit_many=lambda outcomes: batches.append([o.job_id for o in outcomes]),
    )
    runner.run_many(warm[:1], lambda ids: None)  # quick is now known to be short
    assert batches == [[warm[0].id]]
    jobs = [*warm[1:], *app.storage.claim("w", ["celery"], 1)]
    thread = threading.Thread(target=runner.run_many, args=(jobs, lambda ids: None))
    thread.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while len(batches) < 2:
            assert time.monotonic() < deadline, "the quick successes waited for the slow job"
            time.sleep(0.005)
        assert batches[1] == [warm[1].id, warm[2].id]  # the two quick ones, in one hand-over
    finally:
        gate.set()
        thread.join(DEADLINE)
    assert batches[2] == [jobs[2].id]
