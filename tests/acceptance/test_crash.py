"""Crashes: a worker killed with SIGKILL mid-job, and a job that keeps killing its process.

The reaper returns a dead worker's jobs once its heartbeat is ``stale_lock_age`` old; each lost
run uses one attempt, so a job that crashes every worker ends ``failed`` with WorkerLostError
instead of looping forever. Under ``-P prefork`` the parent sees its child die and settles the
job at once, without waiting for the reaper.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from tests.acceptance import effects
from tests.acceptance.conftest import FAST
from tests.support import wait_until
from tests.support.processes import WorkerProcess

BLOCKING = """
@app.task(bind=True)
def hold(self, flag):
    effects.record("started", self.request.id, info=str(self.request.attempt))
    effects.wait_released(flag)
    effects.record("finished", self.request.id)
    return "done"


@app.task(bind=True)
def ping(self):
    effects.record("ping", self.request.id)
    return "pong"
"""


def test_kill9_mid_job_runs_again_elsewhere(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """kill -9 the worker running a job: the other worker reruns it; 2 runs, SUCCESS, attempt 2."""
    tasks = load_tasks("kill9_tasks", BLOCKING, db_url, **FAST)
    first = start_worker("kill9_tasks", db_url, "-P", "threads", "-c", "2", ready=False)
    second = start_worker("kill9_tasks", db_url, "-P", "threads", "-c", "2", ready=False)
    first.wait_ready()
    second.wait_ready()
    by_pid = {first.pid: first, second.pid: second}

    result = tasks.hold.delay("go")
    started = wait_until(lambda: effects.rows(db_url, "started"), message="job started")
    victim = by_pid[started[0]["pid"]]
    survivor = second if victim is first else first

    killed_at = time.monotonic()
    victim.kill9()
    victim.wait(10)
    effects.release(db_url, "go")

    assert result.get(timeout=45) == "done"
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < 30, f"recovery took {recovered_in:.1f}s with stale_lock_age=2s"

    runs = effects.rows(db_url, "started")
    assert len(runs) == 2
    assert [r["pid"] for r in runs] == [victim.pid, survivor.pid]
    assert [r["info"] for r in runs] == ["1", "2"]  # request.attempt as the task saw it
    assert effects.count(db_url, "finished") == 1
    row = effects.job(db_url, result.id)
    assert row["status"] == "completed"
    assert row["attempt"] == 2
    assert result.state == "SUCCESS"
    assert result.retries == 1
    assert survivor.is_running()


SUICIDE = """
@app.task(bind=True, max_retries=1)
def crash(self):
    effects.record("run", self.request.id, info=str(self.request.attempt))
    os.kill(os.getpid(), 9)


@app.task(bind=True)
def ping(self):
    effects.record("ping", self.request.id)
    return "pong"
"""


def _final(url: str, job_id: str) -> dict[str, Any] | None:
    row = effects.job(url, job_id)
    return row if row["status"] in ("completed", "failed", "cancelled") else None


def test_crash_loop_under_threads_stops_after_retry_budget(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A task that kills its worker runs max_retries + 1 times, then fails with WorkerLostError.

    The test plays supervisor: whenever the worker dies it starts a new one.
    """
    tasks = load_tasks("crashloop_tasks", SUICIDE, db_url, **FAST)
    result = tasks.crash.delay()
    started: list[WorkerProcess] = []
    deadline = time.monotonic() + 60

    def supervise() -> dict[str, Any] | None:
        if not started or not started[-1].is_running():
            assert len(started) < 6, "too many worker restarts"
            started.append(start_worker("crashloop_tasks", db_url, "-P", "threads", ready=False))
        return _final(db_url, result.id)

    row = wait_until(supervise, timeout=deadline - time.monotonic(), interval=0.1)
    assert row["status"] == "failed"
    assert row["error_type"] == "dbqueue.exceptions.WorkerLostError"
    assert row["attempt"] == 2
    runs = effects.rows(db_url, "run")
    assert [r["info"] for r in runs] == ["1", "2"]
    assert len({r["pid"] for r in runs}) == 2
    assert result.state == "FAILURE"
    assert type(result.result).__name__ == "WorkerLostError"

    # The last worker survives (the job is not given to it again) and still works: once a job
    # enqueued after the failure has run, the failed job has had every chance to run again.
    survivor = started[-1]
    survivor.wait_ready()
    assert tasks.ping.delay().get(timeout=30) == "pong"
    assert survivor.is_running()
    assert effects.count(db_url, "run") == 2
    assert len(started) == 3, [w.returncode for w in started]


def test_crash_loop_under_prefork_is_settled_by_the_parent(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Under prefork the child dies, not the worker: the parent retries, then fails the job.

    The reaper is slowed down (stale_lock_age=60s) so only the parent can settle it in time.
    """
    settings = {**FAST, "stale_lock_age": 60.0}
    tasks = load_tasks("crashfork_tasks", SUICIDE, db_url, **settings)
    worker = start_worker("crashfork_tasks", db_url, "-P", "prefork", "-c", "1")

    began = time.monotonic()
    result = tasks.crash.delay()
    row = wait_until(lambda: _final(db_url, result.id), timeout=30, message="job settled")
    assert time.monotonic() - began < 20
    assert row["status"] == "failed"
    assert row["error_type"] == "dbqueue.exceptions.WorkerLostError"
    assert row["attempt"] == 2
    assert "signal 9" in row["error"]
    runs = effects.rows(db_url, "run")
    assert [r["info"] for r in runs] == ["1", "2"]
    assert len({r["pid"] for r in runs}) == 2  # a fresh child for the retry
    assert worker.pid not in {r["pid"] for r in runs}

    # The worker is still up, with a replacement child that runs the next job.
    assert tasks.ping.delay().get(timeout=30) == "pong"
    ping_pid = effects.rows(db_url, "ping")[0]["pid"]
    assert ping_pid not in {r["pid"] for r in runs}
    assert worker.is_running()
    assert effects.count(db_url, "run") == 2
    assert os.getpid() != ping_pid
