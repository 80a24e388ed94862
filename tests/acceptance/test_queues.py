"""Per-queue concurrency: ``-Q default,slow:1`` runs one ``slow`` job at a time, alongside
``default`` jobs that share the pool."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.acceptance import effects
from tests.support import wait_until
from tests.support.processes import WorkerProcess

TASKS = """
@app.task(bind=True)
def nap(self, seconds):
    t0 = time.time()
    time.sleep(seconds)
    effects.record("run", self.request.id, t0=t0, t1=time.time(), info=self.request.queue)
"""

NAP = 0.3


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The largest number of intervals running at one instant."""
    events = sorted([(t0, 1) for t0, _ in intervals] + [(t1, -1) for _, t1 in intervals])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_queue_with_its_own_limit_runs_one_at_a_time(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    pool: str,
) -> None:
    """At most one ``slow`` job at any instant; ``default`` jobs overlap; both progress at once."""
    tasks = load_tasks("queue_tasks", TASKS, db_url, task_default_queue="default")
    start_worker("queue_tasks", db_url, "-P", pool, "-c", "4", "-Q", "default,slow:1")
    tasks.nap.delay_many([(NAP,)] * 4, queue="slow")
    tasks.nap.delay_many([(NAP,)] * 8, queue="default")
    wait_until(
        lambda: effects.status_counts(db_url) == {"completed": 12},
        timeout=60,
        message="12 jobs completed",
    )
    runs = effects.rows(db_url, "run")
    slow = sorted((r["t0"], r["t1"]) for r in runs if r["info"] == "slow")
    default = sorted((r["t0"], r["t1"]) for r in runs if r["info"] == "default")
    assert (len(slow), len(default)) == (4, 8)

    for (_, end), (start, _) in itertools.pairwise(slow):
        assert start >= end, f"two slow jobs overlapped: {slow}"
    assert max_overlap(slow) == 1
    assert max_overlap(default) >= 3, f"default jobs did not run in parallel: {default}"
    # The slow queue's slot is its own: it ran while default jobs were running.
    assert max_overlap(slow + default) >= 4
