"""Checkpointed ``call``, named phases and ``current_job``, through a real worker on SQLite,
PostgreSQL and MariaDB: recorded steps never run again, replay mismatches are refused, plain
jobs read no checkpoints, a job taken away stops at its next checkpoint."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import event

from dbqueue import (
    CheckpointMismatch,
    DBQueue,
    NoRetry,
    call,
    current_job,
    has_checkpoint,
    load_checkpoint,
    phase,
    save_checkpoint,
    signals,
)
from dbqueue.exceptions import JobNotOwned
from tests.integration.helpers import JOB_TIMEOUT, Runs, job, settle, sql, wait_status
from tests.support.polling import wait_until


def checkpoint_rows(app: DBQueue, job_id: str) -> list[tuple[int, str]]:
    rows = sql(
        app,
        "SELECT call_index, call_type FROM dbqueue_checkpoints WHERE job_id = :j "
        "ORDER BY call_index, call_type",
        j=job_id,
    )
    return [(int(i), str(t)) for i, t in rows]


def test_recorded_steps_do_not_run_again_on_retry(app: DBQueue, run_worker, runs: Runs) -> None:
    """Attempt 1 records two steps and fails; attempt 2 replays them and runs the third."""

    @app.task(name="add_one")
    def add_one(x: int) -> int:
        runs.add(("add_one", x))
        return x + 1

    @app.task(name="triple")
    def triple(x: int) -> tuple[int, int]:
        runs.add(("triple", x))
        return (x, 3 * x)

    @app.task(name="flow", bind=True, max_retries=2)
    def flow(self, start: int) -> Any:
        a = call(add_one, start)
        b = call(triple, a)
        if self.request.attempt == 1:
            raise self.retry(countdown=0)
        c = call(add_one, b[1])
        return [a, b, c, current_job().attempt]

    result = flow.delay(1)
    run_worker(app)
    assert result.get(timeout=JOB_TIMEOUT) == [2, [2, 6], 7, 2]
    assert runs.items == [("add_one", 1), ("triple", 2), ("add_one", 6)]
    row = job(app, result.id)
    assert (row["status"], row["attempt"], bool(row["checkpointed"])) == ("completed", 2, True)
    assert checkpoint_rows(app, result.id) == [(0, "add_one"), (1, "triple"), (2, "add_one")]


def test_first_run_result_has_the_replay_types(app: DBQueue, run_worker) -> None:
    """A tuple comes back as a list on replay (JSON), so it does on the first run too."""

    @app.task(name="pair")
    def pair() -> tuple[int, int]:
        return (1, 2)

    @app.task(name="types_flow")
    def types_flow() -> str:
        return type(call(pair)).__name__

    result = types_flow.delay()
    run_worker(app)
    assert result.get(timeout=JOB_TIMEOUT) == "list"


def test_a_different_call_at_a_recorded_position_is_refused(app: DBQueue, run_worker) -> None:
    @app.task(name="step_a")
    def step_a() -> str:
        return "a"

    @app.task(name="step_b")
    def step_b() -> str:
        return "b"

    @app.task(name="changing", bind=True, max_retries=1)
    def changing(self) -> str:
        if self.request.attempt == 1:
            call(step_a)
            raise self.retry(countdown=0)
        return str(call(step_b))  # the "deployed code" changed between the runs

    result = changing.delay()
    run_worker(app)
    error = settle(result)
    assert isinstance(error, CheckpointMismatch)
    assert "'step_a'" in str(error) and "'step_b'" in str(error)
    assert "position 0" in str(error)
    assert job(app, result.id)["status"] == "failed"


def test_noretry_from_a_step_is_recorded_and_raised_again(
    app: DBQueue, run_worker, runs: Runs
) -> None:
    """The job catches the step's NoRetry and goes on; on replay the step does not run."""

    @app.task(name="refuses")
    def refuses() -> None:
        runs.add("refuses")
        raise NoRetry(PermissionError("nope"))

    @app.task(name="after")
    def after() -> str:
        runs.add("after")
        return "after"

    @app.task(name="catcher", bind=True, max_retries=1)
    def catcher(self) -> list[str]:
        try:
            call(refuses)
        except NoRetry as error:
            seen = f"{type(error.exc).__name__}: {error.exc}"
        if self.request.attempt == 1:
            raise self.retry(countdown=0)
        return [seen, call(after)]

    result = catcher.delay()
    run_worker(app)
    assert result.get(timeout=JOB_TIMEOUT) == ["PermissionError: nope", "after"]
    assert runs.items == ["refuses", "after"]


def test_plain_jobs_read_no_checkpoints_and_replays_read_them_once(
    app: DBQueue, run_worker
) -> None:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = app.storage.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:

        @app.task(name="plain")
        def plain(x: int) -> int:
            return x

        @app.task(name="inc")
        def inc(x: int) -> int:
            return x + 1

        @app.task(name="replayer", bind=True, max_retries=1)
        def replayer(self) -> int:
            value = call(inc, 1) + call(inc, 10)
            if self.request.attempt == 1:
                raise self.retry(countdown=0)
            return value

        worker = run_worker(app)
        assert [plain.delay(i).get(timeout=JOB_TIMEOUT) for i in range(5)] == list(range(5))
        assert not [s for s in statements if "dbqueue_checkpoints" in s]
        assert replayer.delay().get(timeout=JOB_TIMEOUT) == 13
        worker.stop()
        loads = [s for s in statements if "FROM dbqueue_checkpoints" in s]
        assert len(loads) == 1, loads
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_phases_save_load_and_skip(app: DBQueue, run_worker, runs: Runs) -> None:
    @phase("download")
    def download(url: str) -> dict[str, str]:
        runs.add("download")
        return {"body": f"<{url}>"}

    notify = phase("notify")

    @app.task(name="phased", bind=True, max_retries=1)
    def phased(self) -> list[Any]:
        before = [load_checkpoint("cursor", "none"), has_checkpoint("cursor")]
        page = download("http://x")
        with notify as step:
            if not step.done:
                runs.add("notify")
                step.value = "sent"
        save_checkpoint("cursor", {"at": self.request.attempt})
        if self.request.attempt == 1:
            raise self.retry(countdown=0)
        return [
            before,
            page,
            step.value,
            load_checkpoint("cursor"),
            sorted(map(str, current_job().checkpoints)),
        ]

    result = phased.delay()
    run_worker(app)
    value = result.get(timeout=JOB_TIMEOUT)
    assert value == [
        [{"at": 1}, True],
        {"body": "<http://x>"},
        "sent",
        {"at": 2},
        ["cursor", "download", "notify"],
    ]
    assert runs.items == ["download", "notify"]
    assert checkpoint_rows(app, result.id) == [(-1, "cursor"), (-1, "download"), (-1, "notify")]


def test_current_job_fields(app: DBQueue, run_worker) -> None:
    @app.task(name="inner")
    def inner() -> dict[str, Any]:
        job_ = current_job()
        return {"id": job_.id, "task": job_.task_name}

    @app.task(name="introspect", bind=True, queue="special")
    def introspect(self) -> dict[str, Any]:
        job_ = current_job()
        first = call(inner)
        return {
            "id": job_.id,
            "same": job_ is current_job(),
            "task": job_.task_name,
            "attempt": job_.attempt,
            "retries": job_.retries,
            "queue": job_.queue,
            "root": job_.root_id,
            "durable": job_.durable,
            "inner": first,
            "checkpoints": job_.checkpoints,
            "worker": job_.worker_id,
        }

    assert current_job() is None
    result = introspect.delay()
    worker = run_worker(app, queues="special")
    info = result.get(timeout=JOB_TIMEOUT)
    assert info["id"] == result.id and info["same"] is True
    assert info["task"] == "introspect"
    assert (info["attempt"], info["retries"], info["queue"]) == (1, 0, "special")
    assert info["root"] == result.id and info["durable"] is True
    # A step runs as part of its job: the same job, the same context.
    assert info["inner"] == {"id": result.id, "task": "introspect"}
    assert info["checkpoints"] == {"0": {"id": result.id, "task": "introspect"}}
    assert info["worker"] == worker.id


def test_async_task_awaits_calls_of_async_and_sync_steps(
    app: DBQueue, run_worker, runs: Runs
) -> None:
    @app.task(name="async_step")
    async def async_step(x: int) -> int:
        await asyncio.sleep(0)
        runs.add(("async_step", x))
        return x * 10

    @app.task(name="sync_step")
    def sync_step(x: int) -> int:
        runs.add(("sync_step", x, threading.current_thread().name))
        return x + 1

    @app.task(name="async_flow", bind=True, max_retries=1)
    async def async_flow(self) -> list[int]:
        a = await call(async_step, 1)
        b = await call(sync_step, a)
        both = await asyncio.gather(call(async_step, 2), call(sync_step, 3))
        if self.request.attempt == 1:
            raise self.retry(countdown=0)
        return [a, b, *both, await call(sync_step, 100)]

    @app.task(name="sync_flow")
    def sync_flow() -> int:
        return call(async_step, 7)  # an async step from a sync job runs to completion

    result = async_flow.delay()
    run_worker(app)
    assert result.get(timeout=JOB_TIMEOUT) == [10, 11, 20, 4, 101]
    names = [item[:2] for item in runs.items]
    gathered = {("async_step", 2), ("sync_step", 3)}  # started in this order, may end in any
    assert names[:2] == [("async_step", 1), ("sync_step", 10)]
    assert set(names[2:4]) == gathered
    assert names[4:] == [("sync_step", 100)]
    assert all(item[2] != "dbqueue-asyncio" for item in runs.items if item[0] == "sync_step")
    assert [c for c, _ in checkpoint_rows(app, result.id)] == [0, 1, 2, 3, 4]
    assert sync_flow.delay().get(timeout=JOB_TIMEOUT) == 70


def test_checkpoint_saved_signal(app: DBQueue, run_worker, record_signals) -> None:
    seen = record_signals(signals.checkpoint_saved)

    @app.task(name="noted")
    def noted() -> int:
        return 1

    @app.task(name="signalled")
    def signalled() -> None:
        call(noted)
        save_checkpoint("done", True)

    result = signalled.delay()
    run_worker(app)
    settle(result)
    assert [(r.sender, r.kwargs) for r in seen] == [
        (signalled, {"job_id": result.id, "call_index": 0, "call_type": "noted"}),
        (signalled, {"job_id": result.id, "call_index": -1, "call_type": "done"}),
    ]


def test_a_revoked_job_stops_at_its_next_checkpoint(app: DBQueue, run_worker, runs: Runs) -> None:
    """The step that ran while the job was revoked is not recorded, and nothing runs after."""
    inside = threading.Event()
    go_on = threading.Event()

    @app.task(name="slow_step")
    def slow_step() -> str:
        inside.set()
        assert go_on.wait(JOB_TIMEOUT)
        return "slow"

    @app.task(name="next_step")
    def next_step() -> None:
        runs.add("next")

    @app.task(name="stoppable")
    def stoppable() -> None:
        try:
            call(slow_step)
        except JobNotOwned:
            runs.add("stopped")
            raise
        call(next_step)

    result = stoppable.delay()
    run_worker(app)
    assert inside.wait(JOB_TIMEOUT)
    result.revoke()
    go_on.set()
    wait_until(lambda: runs.items == ["stopped"], timeout=JOB_TIMEOUT, message="run stopped")
    assert wait_status(app, result.id, "cancelled")["error"] == "revoked"
    assert checkpoint_rows(app, result.id) == []


def test_outside_a_worker_calls_run_inline(app: DBQueue, runs: Runs) -> None:
    @app.task(name="plain_step")
    def plain_step(x: int) -> int:
        runs.add(x)
        return x * 2

    @app.task(name="eager_flow")
    def eager_flow() -> list[Any]:
        save_checkpoint("p", 1)
        return [call(plain_step, 2), call(plain_step, 3), load_checkpoint("p")]

    assert call(plain_step, 1) == 2  # no job at all: a plain call
    assert eager_flow.apply().get() == [4, 6, 1]
    assert eager_flow() == [4, 6, None]  # a direct call is no job: phases are not kept
    assert runs.items == [1, 2, 3, 2, 3]
    with pytest.raises(TypeError, match="bad arguments"):
        call(plain_step, 1, 2)
