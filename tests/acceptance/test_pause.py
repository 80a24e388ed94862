"""The pause matrix across processes: jobs, queues and workers, graceful and aggressive, paused
from the test process while real worker processes run the jobs; a job claimed while a graceful
pause lands never runs; cancel and revoke(terminate=True) stop running jobs (threads, prefork,
async), and a prefork child whose job will not stop is replaced.

Jobs that must be stopped spin on a flag *file* (time.sleep in short steps): the JobStopped a
stop raises then lands in the task's own code, never inside a database driver.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance import effects
from tests.acceptance.conftest import FAST
from tests.support import wait_until
from tests.support.processes import WorkerProcess

SETTINGS = {**FAST, "worker_control_interval": 0.2, "worker_stop_timeout": 1.0}
HOST = socket.gethostname()

TASKS = """
from dbqueue import signals
from dbqueue.exceptions import JobStopped


def released(flag):
    return os.path.exists(flag)


@app.task(bind=True, max_retries=3)
def hold(self, flag, retry_first=False):
    effects.record("run", self.request.id, info=f"{self.request.attempt} {self.request.hostname}")
    effects.wait_released(flag)
    if retry_first and self.request.retries == 0:
        raise self.retry(countdown=0)
    return self.request.attempt


@app.task(bind=True, max_retries=0)
def spin(self, flag):
    effects.record("run", self.request.id, info=f"{self.request.attempt} {self.request.hostname}")
    try:
        while not released(flag):
            time.sleep(0.02)
    except JobStopped:
        effects.record("stopped", self.request.id)
        raise
    return self.request.attempt


@app.task(bind=True, max_retries=0)
async def spin_async(self, flag):
    effects.record("run", self.request.id, info=f"{self.request.attempt} {self.request.hostname}")
    try:
        while not released(flag):
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        effects.record("stopped", self.request.id)
        raise
    return self.request.attempt


@app.task(bind=True, max_retries=0)
def stubborn(self, flag):
    effects.record("run", self.request.id, info=f"{self.request.attempt} {self.request.hostname}")
    while not released(flag):
        try:
            time.sleep(0.02)
        except BaseException:
            effects.record("ignored", self.request.id)
    return "never stopped"


@app.task(bind=True)
def quick(self):
    effects.record("quick", self.request.id)
    return self.request.hostname


@signals.task_received.connect
def pause_on_receipt(sender, request, **kwargs):
    # Pause between the claim and the start, through the public API (the database); once per
    # job (its first claim), so that it runs once resumed.
    level = (request.options.get("headers") or {}).get("pause_on_receipt")
    marker = f"paused-on-receipt-{request.id}"
    if level is None or os.path.exists(marker):
        return
    open(marker, "w").close()
    if level == "job":
        app.pause_job(request.id)
    elif level == "queue":
        app.pause_queue(request.queue)
    elif level == "worker":
        app.pause_worker(sender.name)
"""


@pytest.fixture
def flags(tmp_path: Path) -> Callable[[str], str]:
    """``flag(name)``: the path of a flag file tasks poll; ``Path(flag).touch()`` raises it."""

    def flag(name: str) -> str:
        return str(tmp_path / f"flag-{name}")

    return flag


def runs(url: str, job_id: str) -> list[str]:
    """The "attempt host" of each run of a job."""
    return [r["info"] for r in effects.rows(url, "run") if r["job_id"] == job_id]


def wait_status(url: str, job_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        row = effects.job(url, job_id)
        return row if row["status"] in statuses else None

    return wait_until(reached, timeout=timeout, message=f"job {job_id} reached {statuses}")


def wait_runs(url: str, job_id: str, count: int) -> None:
    wait_until(lambda: len(runs(url, job_id)) >= count, timeout=30, message=f"{count} run(s)")


def test_a_paused_pending_job_is_not_run_until_resumed(
    db_url: str, load_tasks: Callable[..., Any], start_worker: Callable[..., WorkerProcess]
) -> None:
    tasks = load_tasks("pj_tasks", TASKS, db_url, **SETTINGS)
    held = tasks.quick.delay()
    assert tasks.app.pause_job(held.id) is True
    start_worker("pj_tasks", db_url, "-P", "threads", "-c", "2", "-n", "pj@%h")
    assert tasks.quick.delay().get(timeout=30) == f"pj@{HOST}", "the worker runs other jobs"
    assert effects.job(db_url, held.id)["status"] == "paused"
    assert tasks.app.resume_job(held.id) is True
    assert held.get(timeout=30) == f"pj@{HOST}"
    assert effects.job(db_url, held.id)["attempt"] == 1


def test_graceful_pause_holds_the_retry_of_a_job_running_in_another_process(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    flags: Callable[[str], str],
) -> None:
    tasks = load_tasks("pg_tasks", TASKS, db_url, **SETTINGS)
    start_worker("pg_tasks", db_url, "-P", "threads", "-c", "2")
    result = tasks.hold.delay("go", retry_first=True)
    wait_runs(db_url, result.id, 1)
    assert tasks.app.pause_job(result.id, "graceful") is False
    effects.release(db_url, "go")
    row = wait_status(db_url, result.id, "paused")
    assert row["attempt"] == 1
    assert len(runs(db_url, result.id)) == 1, "the retry is held"
    assert tasks.app.paused_jobs()[0].resume_status == "retrying"
    assert tasks.app.resume_job(result.id) is True
    assert result.get(timeout=30) == 2


@pytest.mark.parametrize(
    ("pool", "task"),
    [("threads", "spin"), ("prefork", "spin"), ("threads", "spin_async")],
    ids=["threads", "prefork", "async"],
)
def test_aggressive_pause_stops_a_job_in_another_process_and_keeps_its_attempt(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    flags: Callable[[str], str],
    pool: str,
    task: str,
) -> None:
    """Stopped at once, paused with its attempt given back; resumed, it runs as attempt 1
    again. (With the durable layer's checkpoints it replays from the last one; this test
    counts runs with a side effect, which is what exists on this branch.)"""
    tasks = load_tasks("pa_tasks", TASKS, db_url, **SETTINGS)
    start_worker("pa_tasks", db_url, "-P", pool, "-c", "2")
    flag = flags("spin")
    result = getattr(tasks, task).delay(flag)
    wait_runs(db_url, result.id, 1)
    assert tasks.app.pause_job(result.id, "aggressive") is False
    row = wait_status(db_url, result.id, "paused")
    assert (row["attempt"], row["worker"]) == (0, None)
    assert [r["job_id"] for r in effects.rows(db_url, "stopped")] == [result.id]
    Path(flag).touch()
    assert tasks.app.resume_job(result.id) is True
    assert result.get(timeout=30) == 1, "the run after the pause is attempt 1 again"
    assert [info.split()[0] for info in runs(db_url, result.id)] == ["1", "1"]
    assert effects.job(db_url, result.id)["attempt"] == 1


def test_queue_pause_reaches_every_worker_process(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    tasks = load_tasks("pq_tasks", TASKS, db_url, **SETTINGS)
    for n in (1, 2):
        start_worker("pq_tasks", db_url, "-P", "threads", "-c", "2", "-Q", "q,s", "-n", f"w{n}@%h")
    running = tasks.hold.apply_async(("go",), queue="q")
    wait_runs(db_url, running.id, 1)
    tasks.app.pause_queue("q")
    parked = [tasks.quick.apply_async(queue="q") for _ in range(4)]
    for _ in range(4):  # each worker claims both queues in one statement
        tasks.quick.apply_async(queue="s").get(timeout=30)
    assert [effects.job(db_url, r.id)["status"] for r in parked] == ["pending"] * 4
    effects.release(db_url, "go")
    assert running.get(timeout=30) == 1, "a running job finishes when its queue pauses"
    tasks.app.resume_queue("q")
    for result in parked:
        result.get(timeout=30)
    assert effects.duplicates(db_url, "quick") == {}


@pytest.mark.parametrize("mode", ["graceful", "aggressive"])
def test_worker_pause_through_the_database(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    flags: Callable[[str], str],
    mode: str,
) -> None:
    """Graceful: the running job finishes on the paused worker, new jobs go elsewhere.
    Aggressive: the running job is stopped and another worker runs it, attempt unchanged."""
    tasks = load_tasks("pw_tasks", TASKS, db_url, **SETTINGS)
    first = start_worker("pw_tasks", db_url, "-P", "threads", "-c", "2", "-n", "first@%h")
    flag = flags("worker")
    result = tasks.spin.delay(flag)
    wait_runs(db_url, result.id, 1)
    start_worker("pw_tasks", db_url, "-P", "threads", "-c", "2", "-n", "second@%h")

    assert tasks.app.pause_worker(f"first@{HOST}", mode) == 1
    first.wait_for_log(rf"Worker first@\S+ paused \({mode}\)", timeout=30)
    assert {tasks.quick.delay().get(timeout=30) for _ in range(4)} == {f"second@{HOST}"}
    if mode == "graceful":
        assert effects.job(db_url, result.id)["status"] == "running"
        Path(flag).touch()
        assert result.get(timeout=30) == 1
        assert runs(db_url, result.id) == [f"1 first@{HOST}"]
    else:
        Path(flag).touch()
        assert result.get(timeout=30) == 1
        assert runs(db_url, result.id) == [f"1 first@{HOST}", f"1 second@{HOST}"]
        assert [r["job_id"] for r in effects.rows(db_url, "stopped")] == [result.id]
    assert tasks.app.resume_worker(f"first@{HOST}") == 1
    first.wait_for_log(r"Worker first@\S+ resumed", timeout=30)


def test_a_job_claimed_while_a_graceful_pause_lands_does_not_run(
    db_url: str, load_tasks: Callable[..., Any], start_worker: Callable[..., WorkerProcess]
) -> None:
    """task_received (after the claim, before the start) pauses the job, its queue or the
    worker through the app API: the job is released unstarted, its attempt given back."""
    tasks = load_tasks("pr_tasks", TASKS, db_url, **SETTINGS)
    app = tasks.app
    worker = start_worker("pr_tasks", db_url, "-P", "prefork", "-c", "2", "-n", "gate@%h")

    job = tasks.quick.apply_async(headers={"pause_on_receipt": "job"})
    row = wait_status(db_url, job.id, "paused")
    assert (row["attempt"], row["worker"]) == (0, None)
    assert effects.count(db_url, "quick") == 0

    queued = tasks.quick.apply_async(headers={"pause_on_receipt": "queue"})
    wait_until(lambda: app.is_queue_paused("celery"), timeout=30, message="queue paused")
    row = wait_status(db_url, queued.id, "pending")
    assert (row["attempt"], row["worker"]) == (0, None)
    assert effects.count(db_url, "quick") == 0
    app.resume_queue("celery")
    assert queued.get(timeout=30) == f"gate@{HOST}"

    paused_by = tasks.quick.apply_async(headers={"pause_on_receipt": "worker"})
    worker.wait_for_log(r"Worker gate@\S+ paused \(graceful\)", timeout=30)
    row = wait_status(db_url, paused_by.id, "pending")
    assert (row["attempt"], row["worker"]) == (0, None)
    assert [r["job_id"] for r in effects.rows(db_url, "quick")] == [queued.id]

    app.resume_worker(f"gate@{HOST}")
    app.resume_job(job.id)
    for result in (job, paused_by):
        assert result.get(timeout=30) == f"gate@{HOST}"
    assert effects.duplicates(db_url, "quick") == {}


@pytest.mark.parametrize(
    ("pool", "task"),
    [("threads", "spin"), ("prefork", "spin"), ("threads", "spin_async")],
    ids=["threads", "prefork", "async"],
)
def test_revoke_terminate_stops_a_running_job(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    flags: Callable[[str], str],
    pool: str,
    task: str,
) -> None:
    tasks = load_tasks("rt_tasks", TASKS, db_url, **SETTINGS)
    start_worker("rt_tasks", db_url, "-P", pool, "-c", "1")
    result = getattr(tasks, task).delay(flags("never"))
    wait_runs(db_url, result.id, 1)
    result.revoke(terminate=True)
    assert result.state == "REVOKED"
    wait_until(
        lambda: effects.rows(db_url, "stopped"), timeout=30, message="the job saw it was stopped"
    )
    assert tasks.quick.delay().get(timeout=30), "the worker's only slot is free again"
    row = effects.job(db_url, result.id)
    assert (row["status"], row["error_type"]) == (
        "cancelled",
        "dbqueue.exceptions.TaskRevokedError",
    )


def test_a_prefork_child_whose_job_will_not_stop_is_replaced(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    flags: Callable[[str], str],
) -> None:
    tasks = load_tasks("pk_tasks", TASKS, db_url, **SETTINGS)
    worker = start_worker("pk_tasks", db_url, "-P", "prefork", "-c", "1")
    result = tasks.stubborn.delay(flags("never"))
    wait_runs(db_url, result.id, 1)
    tasks.app.control.revoke(result.id, terminate=True)
    worker.wait_for_log(r"did not stop in time: its child process was replaced", timeout=30)
    assert effects.count(db_url, "ignored") >= 1, "the job swallowed JobStopped"
    assert tasks.quick.delay().get(timeout=30), "a new child runs the next job"
    assert effects.job(db_url, result.id)["status"] == "cancelled"
