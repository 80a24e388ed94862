"""``-P prefork``: children replaced when killed or worn out, and time limits enforced on them.

The reaper is slowed down here (``stale_lock_age=60``): everything these tests see must be the
prefork parent's own doing, not the reaper's.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.acceptance import effects
from tests.acceptance.conftest import FAST
from tests.acceptance.procs import alive, group_members
from tests.support import wait_until
from tests.support.processes import WorkerProcess

SETTINGS = {**FAST, "stale_lock_age": 60.0}

TASKS = """
from dbqueue.exceptions import SoftTimeLimitExceeded


@app.task(bind=True)
def hold(self, flag):
    effects.record("started", self.request.id, info=str(self.request.attempt))
    effects.wait_released(flag)
    return "done"


@app.task(bind=True)
def work(self, n):
    effects.record("run", self.request.id, info=str(n))
    return n


@app.task(bind=True, max_retries=0)
def once(self, n):
    effects.record("run", self.request.id, info=str(n))
    return n


@app.task
def frozen():
    import gc
    return gc.get_freeze_count()


@app.task(bind=True, soft_time_limit=0.5)
def soft(self):
    try:
        for _ in range(400):
            time.sleep(0.05)
    except SoftTimeLimitExceeded:
        effects.record("soft", self.request.id)
        return "cleaned up"
    return "never interrupted"


@app.task(bind=True, time_limit=2)
def hard(self):
    effects.record("started", self.request.id)
    time.sleep(60)
    effects.record("finished", self.request.id)
    return "not killed"
"""


def _final(url: str, job_id: str) -> dict[str, Any] | None:
    row = effects.job(url, job_id)
    return row if row["status"] in ("completed", "failed", "cancelled") else None


def test_child_killed_from_outside_is_replaced_and_its_job_retried(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """SIGKILL a child mid-job: a new child reruns the job; the worker keeps going."""
    tasks = load_tasks("pfkill_tasks", TASKS, db_url, **SETTINGS)
    worker = start_worker("pfkill_tasks", db_url, "-P", "prefork", "-c", "2")
    result = tasks.hold.delay("go")
    first = wait_until(lambda: effects.rows(db_url, "started"), message="job started")[0]
    victim = first["pid"]
    assert victim != worker.pid

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), timeout=5, message="child died")
    runs = wait_until(
        lambda: (rows := effects.rows(db_url, "started"))[1:] and rows,
        timeout=20,
        message="job started again in another child",
    )
    assert runs[1]["pid"] not in (victim, worker.pid)
    assert [r["info"] for r in runs] == ["1", "2"]
    assert effects.job(db_url, result.id)["status"] == "running"

    effects.release(db_url, "go")
    assert result.get(timeout=20) == "done"
    assert effects.job(db_url, result.id)["attempt"] == 2

    more = tasks.work.delay_many([(n,) for n in range(6)])
    assert [r.get(timeout=30) for r in more] == list(range(6))
    assert victim not in {r["pid"] for r in effects.rows(db_url, "run")}
    assert worker.is_running()


def test_max_tasks_per_child_replaces_children(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """``--max-tasks-per-child 5``: 30 jobs run in at least 6 children, at most 5 jobs each."""
    tasks = load_tasks("pfmax_tasks", TASKS, db_url, **SETTINGS)
    worker = start_worker(
        "pfmax_tasks", db_url, "-P", "prefork", "-c", "2", "--max-tasks-per-child", "5"
    )
    results = tasks.work.delay_many([(n,) for n in range(30)])
    assert [r.get(timeout=60) for r in results] == list(range(30))
    assert effects.status_counts(db_url) == {"completed": 30}
    assert effects.duplicates(db_url) == {}
    per_child = Counter(r["pid"] for r in effects.rows(db_url, "run"))
    assert sum(per_child.values()) == 30
    assert max(per_child.values()) <= 5, per_child
    assert len(per_child) >= 6, per_child
    assert worker.pid not in per_child
    assert worker.is_running()


def test_retiring_child_costs_no_job_an_attempt(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A child leaving after ``--max-tasks-per-child`` loses no job: with no retry allowed,
    every job still completes on its first attempt."""
    tasks = load_tasks("pfretire_tasks", TASKS, db_url, **SETTINGS)
    start_worker("pfretire_tasks", db_url, "-P", "prefork", "-c", "1", "--max-tasks-per-child", "1")
    tasks.once.delay_many([(n,) for n in range(20)])
    wait_until(
        lambda: (
            sum(effects.status_counts(db_url).values()) == 20
            and set(effects.status_counts(db_url)) <= {"completed", "failed"}
        ),
        timeout=60,
        message="20 jobs finished",
    )
    failed = [
        (r["error_type"], r["error"]) for r in effects.jobs(db_url) if r["status"] != "completed"
    ]
    assert failed == [], f"jobs lost to retiring children: {failed}"


def test_soft_time_limit_raises_inside_the_task(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """``soft_time_limit``: SoftTimeLimitExceeded is raised in the child; the task cleans up."""
    tasks = load_tasks("pfsoft_tasks", TASKS, db_url, **SETTINGS)
    worker = start_worker("pfsoft_tasks", db_url, "-P", "prefork", "-c", "1")
    began = time.monotonic()
    result = tasks.soft.delay()
    assert result.get(timeout=15) == "cleaned up"
    assert time.monotonic() - began < 10
    [cleanup] = effects.rows(db_url, "soft")
    assert cleanup["job_id"] == result.id
    assert cleanup["pid"] != worker.pid
    assert effects.job(db_url, result.id)["status"] == "completed"
    # The same child goes on to the next job: a soft limit does not cost a process.
    assert tasks.work.delay(1).get(timeout=15) == 1
    assert effects.rows(db_url, "run")[0]["pid"] == cleanup["pid"]


def test_hard_time_limit_kills_the_child(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """``time_limit``: the child is killed, the job fails with TimeLimitExceeded, the pool lives."""
    tasks = load_tasks("pfhard_tasks", TASKS, db_url, **SETTINGS)
    worker = start_worker("pfhard_tasks", db_url, "-P", "prefork", "-c", "1")
    began = time.monotonic()
    result = tasks.hard.delay()
    row = wait_until(lambda: _final(db_url, result.id), timeout=20, message="job settled")
    assert time.monotonic() - began < 15
    assert row["status"] == "failed"
    assert row["error_type"] == "dbqueue.exceptions.TimeLimitExceeded"
    assert row["attempt"] == 1  # a time limit is a failure, not a lost worker: no retry
    assert result.state == "FAILURE"
    assert type(result.result).__name__ == "TimeLimitExceeded"
    [started] = effects.rows(db_url, "started")
    wait_until(lambda: not alive(started["pid"]), timeout=5, message="child was killed")
    assert effects.count(db_url, "finished") == 0

    assert [r.get(timeout=20) for r in tasks.work.delay_many([(n,) for n in range(3)])] == [0, 1, 2]
    assert started["pid"] not in {r["pid"] for r in effects.rows(db_url, "run")}
    assert worker.is_running()


def test_children_do_not_outlive_a_killed_worker(
    sqlite_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """kill -9 of the main process alone (an OOM kill, ``kill -9 <pid>``): its children go too.

    Otherwise the reaper hands the job to another worker while the orphan still runs it, and
    the orphan's outcome has nowhere to go. (Backend-independent: SQLite only.)
    """
    tasks = load_tasks("pforphan_tasks", TASKS, sqlite_url, **SETTINGS)
    worker = start_worker("pforphan_tasks", sqlite_url, "-P", "prefork", "-c", "1")
    tasks.hold.delay("go")
    [started] = wait_until(lambda: effects.rows(sqlite_url, "started"), message="job started")
    worker.kill9(group=False)
    worker.wait(10)
    wait_until(
        lambda: not group_members(worker.pid),
        timeout=10,
        message=f"no process of the killed worker survives (child {started['pid']} ran a job)",
    )


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_boot_objects_are_frozen_where_jobs_run(
    db_url: str,
    pool: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A worker (and each prefork child) moves its boot-time heap out of the collector's
    reach once booted: full collections then scan only what jobs allocate."""
    tasks = load_tasks(f"frozen_{pool}_tasks", TASKS, db_url, **SETTINGS)
    start_worker(f"frozen_{pool}_tasks", db_url, "-P", pool, "-c", "1")
    assert tasks.frozen.delay().get(timeout=30) > 10_000
