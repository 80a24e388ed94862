"""Warm and cold shutdown of a worker process.

Warm (first SIGTERM/SIGINT): stop claiming, let running jobs finish, give back claimed jobs
that never started, leave the registry, exit 0. Cold (a second signal): exit at once with a
non-zero status; the reaper later returns the jobs it held.

A worker claims at most as many jobs as it has free slots, so under ``-c 1`` the jobs queued
behind a running one are never claimed: they must still be ``pending`` (attempt 0, no worker)
the moment the worker has exited, before any other worker starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.acceptance import effects
from tests.acceptance.conftest import FAST
from tests.acceptance.procs import group_members
from tests.support import wait_until
from tests.support.processes import WorkerProcess

TASKS = """
@app.task(bind=True)
def hold(self, flag):
    effects.record("started", self.request.id, info=str(self.request.attempt))
    effects.wait_released(flag)
    effects.record("finished", self.request.id)
    return "done"


@app.task(bind=True)
def quick(self):
    effects.record("quick", self.request.id)
    return "quick"
"""

#: (pool, how a signal is delivered): threads get ``kill <pid>``; prefork gets Ctrl-C, which a
#: terminal sends to the whole process group (children and fork server included).
POOLS = [("threads", False), ("prefork", True)]
POOL_IDS = ["threads-kill", "prefork-ctrl-c"]


def _signal(worker: WorkerProcess, group: bool) -> None:
    if group:
        worker.interrupt(group=True)
    else:
        worker.terminate()


def _no_processes_left(worker: WorkerProcess) -> None:
    wait_until(
        lambda: not group_members(worker.pid),
        timeout=10,
        message=f"every process of worker {worker.pid} (pool children, fork server) exited",
    )


@pytest.mark.parametrize(("pool", "group"), POOLS, ids=POOL_IDS)
def test_warm_shutdown_finishes_the_running_job(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    pool: str,
    group: bool,
) -> None:
    """The running job finishes; queued jobs stay pending; exit 0; the registry row is gone."""
    tasks = load_tasks("warm_tasks", TASKS, db_url, **FAST)
    worker = start_worker("warm_tasks", db_url, "-P", pool, "-c", "1")
    assert [w["pid"] for w in effects.workers(db_url)] == [worker.pid]

    long = tasks.hold.delay("go")
    wait_until(lambda: effects.rows(db_url, "started"), message="long job started")
    queued = [r.id for r in tasks.quick.delay_many([() for _ in range(5)])]

    mark = len(worker.log())
    _signal(worker, group)
    worker.wait_for_log(r"Warm shutdown", timeout=10, after=mark)
    assert worker.is_running(), "a warm shutdown waits for the running job"
    assert effects.job(db_url, long.id)["status"] == "running"

    effects.release(db_url, "go")
    assert worker.wait(30) == 0, worker.log_tail()
    _no_processes_left(worker)

    row = effects.job(db_url, long.id)
    assert row["status"] == "completed", row
    assert row["attempt"] == 1
    assert long.get(timeout=5) == "done"
    # Checked before any other worker exists: nothing queued was taken, nothing left running.
    for job_id in queued:
        row = effects.job(db_url, job_id)
        assert (row["status"], row["attempt"], row["worker"]) == ("pending", 0, None), row
    assert effects.count(db_url, "quick") == 0
    assert effects.status_counts(db_url) == {"completed": 1, "pending": 5}
    assert effects.workers(db_url) == [], "a cleanly stopped worker leaves the registry"
    assert "Traceback" not in worker.log()

    # The next worker gets them.
    start_worker("warm_tasks", db_url, "-P", "threads", "-c", "2")
    wait_until(lambda: effects.count(db_url, "quick") == 5, timeout=30, message="queued jobs ran")
    assert effects.duplicates(db_url, "quick") == {}
    assert effects.count(db_url, "started") == 1


@pytest.mark.parametrize(("pool", "group"), POOLS, ids=POOL_IDS)
def test_cold_shutdown_exits_at_once_and_the_reaper_recovers(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    pool: str,
    group: bool,
) -> None:
    """A second signal exits at once, non-zero; the job it held completes on another worker."""
    tasks = load_tasks("cold_tasks", TASKS, db_url, **FAST)
    worker = start_worker("cold_tasks", db_url, "-P", pool, "-c", "1")
    long = tasks.hold.delay("go")
    wait_until(lambda: effects.rows(db_url, "started"), message="long job started")

    mark = len(worker.log())
    _signal(worker, group)
    worker.wait_for_log(r"Warm shutdown", timeout=10, after=mark)
    assert worker.is_running()
    began = time.monotonic()
    _signal(worker, group)
    code = worker.wait(10)
    assert code != 0
    assert time.monotonic() - began < 5, "a cold shutdown does not wait for the job"
    assert "Cold shutdown" in worker.log()
    _no_processes_left(worker)  # under prefork, the child running the job is gone too
    row = effects.job(db_url, long.id)
    assert row["status"] == "running", "a cold shutdown leaves the job to the reaper"

    effects.release(db_url, "go")
    other = start_worker("cold_tasks", db_url, "-P", "threads", "-c", "1")
    assert long.get(timeout=45) == "done"
    row = effects.job(db_url, long.id)
    assert row["status"] == "completed"
    assert row["attempt"] == 2
    assert effects.count(db_url, "started") == 2
    assert effects.count(db_url, "finished") == 1
    assert effects.rows(db_url, "finished")[0]["pid"] == other.pid


def test_job_outliving_the_shutdown_timeout_is_released(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A warm shutdown waits ``worker_shutdown_timeout``, then puts the job back in the queue."""
    settings = {**FAST, "worker_shutdown_timeout": 1.0}
    tasks = load_tasks("timeout_tasks", TASKS, db_url, **settings)
    worker = start_worker("timeout_tasks", db_url, "-P", "threads", "-c", "1")
    long = tasks.hold.delay("go")
    wait_until(lambda: effects.rows(db_url, "started"), message="long job started")

    worker.terminate()
    assert worker.wait(20) == 0, worker.log_tail()
    assert "still running after" in worker.log()
    row = effects.job(db_url, long.id)
    assert (row["status"], row["worker"]) == ("pending", None), row
    assert effects.workers(db_url) == []

    effects.release(db_url, "go")
    start_worker("timeout_tasks", db_url, "-P", "threads", "-c", "1")
    assert long.get(timeout=30) == "done"
    assert effects.count(db_url, "started") == 2


@pytest.mark.slow
def test_shutdown_timeout_bounds_the_exit_whatever_the_concurrency(
    sqlite_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """With 3 stuck jobs and ``worker_shutdown_timeout=1`` the worker is gone within seconds."""
    settings = {**FAST, "worker_shutdown_timeout": 1.0}
    tasks = load_tasks("stuck_tasks", TASKS, sqlite_url, **settings)
    worker = start_worker("stuck_tasks", sqlite_url, "-P", "threads", "-c", "3")
    stuck = tasks.hold.delay_many([("never",)] * 3)
    wait_until(lambda: effects.count(sqlite_url, "started") == 3, message="3 jobs running")

    began = time.monotonic()
    worker.terminate()
    assert worker.wait(60) == 0, worker.log_tail()
    took = time.monotonic() - began
    assert all(effects.job(sqlite_url, r.id)["status"] == "pending" for r in stuck)
    assert took < 9.0, f"warm shutdown took {took:.1f}s with worker_shutdown_timeout=1s"
