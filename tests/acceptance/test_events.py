"""Events from real worker processes (and a CLI process) arrive in this process's app.events(),
on every backend; and the CLI's pause, resume, paused, revoke and events commands."""

from __future__ import annotations

import json
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dbqueue import DBQueue
from dbqueue.events import Event, EventStream
from tests.acceptance import effects
from tests.acceptance.conftest import FAST, module_source, run_cli
from tests.support import wait_until
from tests.support.modules import ModuleWriter
from tests.support.processes import ManagedProcess, WorkerProcess

SETTINGS = {**FAST, "worker_control_interval": 0.2}
HOST = socket.gethostname()

TASKS = """
@app.task(bind=True)
def report(self, n):
    app.emit_custom_event(None, "progress", {"n": n, "pid": os.getpid()})
    return n


@app.task(max_retries=0)
def broken():
    raise ValueError("broken on purpose")


@app.task(bind=True)
def hold(self, flag):
    effects.record("run", self.request.id)
    effects.wait_released(flag)
    return "held"
"""


def collect(stream: EventStream, until: Callable[[list[Event]], bool]) -> list[Event]:
    seen: list[Event] = []

    def done() -> bool:
        event = stream.get(timeout=0.1)
        if event is not None:
            seen.append(event)
        return until(seen)

    wait_until(done, timeout=30, interval=0, message=f"events so far: {seen}")
    return seen


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_events_of_worker_processes_reach_this_process(
    db_url: str,
    tmp_path: Path,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    pool: str,
) -> None:
    tasks = load_tasks("ev_tasks", TASKS, db_url, **SETTINGS)
    with tasks.app.events() as stream:
        start_worker("ev_tasks", db_url, "-P", pool, "-c", "2", "-n", "ev@%h")
        reported = tasks.report.delay(7)
        broken = tasks.broken.delay()
        assert reported.get(timeout=30) == 7
        broken.get(timeout=30, propagate=False)
        cli = run_cli("pause", "queue", "nightly", url=db_url, cwd=tmp_path)
        assert cli.returncode == 0, cli.stderr
        events = collect(
            stream,
            lambda seen: (
                {("job.completed", reported.id), ("job.failed", broken.id)}
                <= {(e.type, e.job_id) for e in seen}
                and any(e.type == "queue.paused" for e in seen)
            ),
        )
    mine = [e.type for e in events if e.job_id == reported.id]
    # The custom event is published before the job ends, so before its completion; with
    # prefork it comes from the child, the start from the parent: those two are unordered.
    assert sorted(mine) == ["custom", "job.completed", "job.started"]
    assert mine[-1] == "job.completed"
    custom = next(e for e in events if e.type == "custom")
    assert (custom.kind, custom.data["n"], custom.worker) == ("progress", 7, f"ev@{HOST}")
    done = next(e for e in events if e.type == "job.completed")
    assert (done.task, done.queue, done.worker) == ("ev_tasks.report", "celery", f"ev@{HOST}")
    failed = next(e for e in events if e.type == "job.failed")
    assert failed.data["error"] == "broken on purpose"
    paused = next(e for e in events if e.type == "queue.paused")
    assert paused.queue == "nightly"
    assert tasks.app.storage.count_subscribers(15.0) == 0, "closing the stream unsubscribed"


def test_the_cli_pauses_resumes_lists_and_revokes(
    db_url: str,
    tmp_path: Path,
    write_module: ModuleWriter,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    tasks = load_tasks("cli_pause_tasks", TASKS, db_url, **SETTINGS)
    worker = start_worker("cli_pause_tasks", db_url, "-P", "threads", "-c", "2", "-n", "cli@%h")

    def cli(*args: str) -> str:
        result = run_cli(*args, url=db_url, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def fails(*args: str) -> str:
        result = run_cli(*args, url=db_url, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        [line] = [ln for ln in result.stderr.splitlines() if ln.strip()]
        return line

    name = f"cli@{HOST}"
    assert cli("pause", "worker", name) == (
        f"Pausing 1 worker(s) named {name} (graceful): no new jobs, running jobs finish.\n"
    )
    worker.wait_for_log(r"Worker cli@\S+ paused \(graceful\)", timeout=30)
    waiting = tasks.report.delay(1)
    listing = json.loads(cli("paused", "--json"))
    assert listing["workers"] == [
        {"name": name, "id": listing["workers"][0]["id"], "mode": "graceful"}
    ]
    assert "paused (graceful)" in cli("status")
    assert cli("resume", "worker", name) == f"Resuming 1 worker(s) named {name}.\n"
    assert waiting.get(timeout=30) == 1

    assert cli("pause", "queue", "celery").startswith("Queue celery paused")
    queued = tasks.report.delay(2)
    assert json.loads(cli("paused", "--json"))["queues"] == ["celery"]
    assert "celery (paused)" in cli("status")
    assert cli("pause", "job", queued.id) == f"Job {queued.id} paused.\n"
    assert cli("resume", "queue", "celery") == "Queue celery resumed.\n"
    [row] = json.loads(cli("paused", "--json"))["jobs"]
    assert (row["id"], row["resume_status"], row["mode"]) == (queued.id, "pending", "graceful")
    assert cli("resume", "job", queued.id) == f"Job {queued.id} resumed.\n"
    assert queued.get(timeout=30) == 2
    assert fails("resume", "job", queued.id) == (
        f"Error: job {queued.id} is completed: a finished job cannot be resumed"
    )
    pending = tasks.report.apply_async((3,), queue="nobody-listens")
    assert cli("resume", "job", pending.id) == f"Job {pending.id} is not paused (pending).\n"

    running = tasks.hold.delay("never")
    wait_until(lambda: effects.count(db_url, "run") == 1, timeout=30, message="it started")
    assert "its worker stops it now" in cli("pause", "job", running.id, "--aggressive")
    wait_until(lambda: tasks.app.is_job_paused(running.id), timeout=30, message="stopped")
    assert cli("revoke", running.id, "--terminate") == (
        "Revoked 1 of 1 job(s); running ones are being stopped.\n"
    )
    assert running.state == "REVOKED"

    assert fails("pause", "worker", "ghost") == (
        "Error: no registered worker is named 'ghost' (`dbqueue status` lists the workers)"
    )
    unknown = str(uuid.uuid4())
    assert fails("pause", "job", unknown) == f"Error: no job with id {unknown!r}"
    assert fails("pause", "job", running.id) == (
        f"Error: job {running.id} is cancelled: only a pending, retrying, waiting or running job "
        "can be paused"
    )


def test_the_cli_follows_events(db_url: str, tmp_path: Path, write_module: ModuleWriter) -> None:
    write_module(tmp_path, "cli_ev_tasks", module_source("cli_ev_tasks", TASKS, **SETTINGS))
    assert run_cli("db", "upgrade", url=db_url, cwd=tmp_path).returncode == 0
    follower = ManagedProcess(
        [
            sys.executable,
            "-m",
            "dbqueue",
            "-A",
            "cli_ev_tasks",
            "events",
            "--json",
            "--count",
            "2",
            "--timeout",
            "60",
        ],
        cwd=tmp_path,
        log_path=tmp_path / "events.log",
        env={"DBQUEUE_BROKER_URL": db_url},
        pythonpath=[tmp_path],
    ).start()
    app = DBQueue("probe", broker=db_url, broker_pool_preset="resource_constrained")
    try:
        wait_until(
            lambda: app.storage.count_subscribers(15.0) == 1, timeout=30, message="subscribed"
        )
        app.pause_queue("one")
        app.resume_queue("one")
    finally:
        app.close()
    assert follower.wait(30) == 0, follower.log_tail()
    lines = [json.loads(line) for line in follower.log().splitlines() if line.startswith("{")]
    assert [(e["type"], e["queue"]) for e in lines] == [
        ("queue.paused", "one"),
        ("queue.resumed", "one"),
    ]
