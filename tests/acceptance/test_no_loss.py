"""No job lost, none run twice: several worker processes drain one queue on every backend.

On SQLite this is several processes sharing one database file, which the library dbqueue
descends from cannot do (it is single-process on SQLite).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.acceptance import effects
from tests.support import wait_until
from tests.support.processes import WorkerProcess

JOBS = 2000
WORKERS = 4

TASKS = """
@app.task(bind=True)
def work(self, n):
    effects.record("run", self.request.id, info=str(n))
    return n
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "pool_args",
    [("-P", "threads", "-c", "8"), ("-P", "prefork", "-c", "2")],
    ids=["threads8", "prefork2"],
)
def test_every_job_runs_exactly_once(
    db_url: str,
    load_tasks: Callable[..., object],
    start_worker: Callable[..., WorkerProcess],
    pool_args: tuple[str, ...],
) -> None:
    """4 workers x 2,000 jobs: all complete, each job's side effect happens exactly once."""
    tasks = load_tasks("noloss_tasks", TASKS, db_url)
    workers = [
        start_worker("noloss_tasks", db_url, *pool_args, ready=False) for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.wait_ready(60)

    results = tasks.work.delay_many([(n,) for n in range(JOBS)])  # type: ignore[attr-defined]
    ids = {r.id for r in results}
    assert len(ids) == JOBS

    wait_until(
        lambda: effects.status_counts(db_url).get("completed", 0) == JOBS,
        timeout=180,
        interval=0.25,
        message=f"all {JOBS} jobs completed",
    )
    assert effects.status_counts(db_url) == {"completed": JOBS}
    assert effects.duplicates(db_url) == {}
    assert effects.count(db_url, "run") == JOBS
    assert effects.distinct_jobs(db_url) == ids
    rows = effects.jobs(db_url)
    assert {r["attempt"] for r in rows} == {1}
    # Every worker process took part: claims from several processes really interleave.
    assert len({r["worker"] for r in rows}) == WORKERS
    for worker in workers:
        assert worker.is_running(), worker.log_tail()
        assert "Traceback" not in worker.log(), worker.log_tail()
