"""``async def`` tasks in a worker process: they share one event loop and run concurrently."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.acceptance import effects
from tests.acceptance.test_queues import max_overlap
from tests.support import wait_until
from tests.support.processes import WorkerProcess

TASKS = """
@app.task(bind=True)
async def snooze(self, seconds):
    t0 = time.time()
    await asyncio.sleep(seconds)
    await asyncio.to_thread(effects.record, "run", self.request.id, t0=t0, t1=time.time())
    return seconds


@app.task
async def sour():
    await asyncio.sleep(0)
    raise ValueError("async failure")
"""

N = 20
NAP = 0.5


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_async_tasks_run_concurrently(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    pool: str,
) -> None:
    """20 tasks awaiting asyncio.sleep(0.5) on one ``-c 20`` worker take about 0.5 s, not 10."""
    tasks = load_tasks("async_tasks", TASKS, db_url)
    concurrency, n = (N, N) if pool == "threads" else (2, 6)
    worker = start_worker("async_tasks", db_url, "-P", pool, "-c", str(concurrency))
    began = time.monotonic()
    results = tasks.snooze.delay_many([(NAP,)] * n)
    assert [r.get(timeout=30) for r in results] == [NAP] * n
    elapsed = time.monotonic() - began
    runs = [(r["t0"], r["t1"]) for r in effects.rows(db_url, "run")]
    assert len(runs) == n
    assert {r["pid"] for r in effects.rows(db_url, "run")} == {worker.pid}
    if pool == "threads":
        assert elapsed < 7, f"{N} x {NAP}s async jobs took {elapsed:.1f}s"
        assert max_overlap(runs) >= N // 2, runs
    else:  # async jobs run on the parent's loop, within the worker's 2 slots
        assert max_overlap(runs) == 2, runs

    failing = tasks.sour.delay()
    with pytest.raises(ValueError, match="async failure"):
        failing.get(timeout=15)
    wait_until(lambda: effects.status_counts(db_url) == {"completed": n, "failed": 1})
    assert worker.is_running()
