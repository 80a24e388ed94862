"""Connection pool presets on real engines, and what ``dbqueue status`` reads."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import exc as sa_exc

import dbqueue.app
from dbqueue import DBQueue
from dbqueue.cli import main
from tests.integration.helpers import JOB_TIMEOUT, settle, wait_status


@pytest.mark.parametrize(
    ("preset", "size", "overflow"),
    [
        ("resource_constrained", 5, 5),
        ("default", 10, 15),
        ("low_latency", 40, 10),
        ("high_concurrency", 25, 75),
    ],
)
def test_pool_preset_sizes_the_engine_pool(
    make_app, db_url: str, preset: str, size: int, overflow: int
) -> None:
    app = make_app(db_url, broker_pool_preset=preset)
    pool = app.storage.engine.pool
    assert pool.size() == size
    assert pool._max_overflow == overflow


def test_resource_constrained_pool_opens_at_most_ten_connections(make_app, db_url: str) -> None:
    app = make_app(db_url, database_engine_options={"pool_timeout": 0.2})
    engine = app.storage.engine
    with contextlib.ExitStack() as stack:
        connections = [stack.enter_context(engine.connect()) for _ in range(10)]
        for conn in connections:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        assert engine.pool.checkedout() == 10
        with pytest.raises(sa_exc.TimeoutError):
            engine.connect()


def test_pool_options_override_the_preset(make_app, db_url: str) -> None:
    app = make_app(
        db_url,
        broker_pool_preset="resource_constrained",
        broker_pool_options={"max_open_conns": 3, "max_idle_conns": 2},
    )
    pool = app.storage.engine.pool
    assert (pool.size(), pool._max_overflow) == (2, 1)


def test_queue_counts_and_live_workers(app: DBQueue, run_worker) -> None:
    release = threading.Event()

    @app.task(name="hold")
    def hold() -> None:
        release.wait(JOB_TIMEOUT)

    @app.task(name="quick")
    def quick() -> int:
        return 1

    assert app.storage.queue_counts() == {}
    assert app.storage.live_workers(60) == []
    held = hold.apply_async(queue="busy")
    done = [quick.apply_async(queue="busy") for _ in range(2)]
    waiting = [quick.apply_async(queue="idle") for _ in range(3)]
    worker = run_worker(app, queues="busy:2", concurrency=3, hostname="counter@test")
    try:
        wait_status(app, held.id, "running")
        for result in done:
            settle(result)
        assert app.storage.queue_counts() == {
            "busy": {"running": 1, "completed": 2},
            "idle": {"pending": 3},
        }
        (live,) = app.storage.live_workers(60)
        assert live["id"] == worker.id
        assert live["name"] == "counter@test"
        assert live["pool"] == "threads"
        assert live["queues"] == {"busy": 2}
        assert live["concurrency"] == 2
        assert live["running"] == 1
        assert set(live["info"]["tasks"]) >= {"hold", "quick"}
    finally:
        release.set()
    settle(held)
    assert app.storage.queue_counts()["busy"] == {"completed": 3}
    assert [r.state for r in waiting] == ["PENDING"] * 3
    worker.stop()
    assert app.storage.live_workers(60) == []


def test_status_command_reports_counts_and_workers(app: DBQueue, run_worker, db_url: str) -> None:
    @app.task(name="quick")
    def quick() -> int:
        return 1

    for _ in range(2):
        quick.apply_async(queue="later")
    worker = run_worker(app, queues="elsewhere")
    previous = dbqueue.app._current
    try:
        outcome = CliRunner().invoke(main, ["-b", db_url, "status", "--json"])
    finally:
        cli_app = dbqueue.app._current
        if cli_app is not previous and cli_app is not None:
            cli_app.close()
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.output)
    assert report["queues"] == {"later": {"pending": 2}}
    assert [w["id"] for w in report["workers"]] == [worker.id]
    assert report["workers"][0]["queues"] == {"elsewhere": None}
