"""Group commit: many outcomes written in one transaction, each job still checked for ownership."""

from __future__ import annotations

import threading

from dbqueue import DBQueue, signals
from tests.integration.helpers import JOB_TIMEOUT, job, settle, sql
from tests.support.polling import wait_until


def test_a_burst_of_outcomes_is_recorded_job_by_job(app: DBQueue, run_worker, record_signals):
    """30 jobs end together (success, failure, retry); 5 were revoked while running."""
    gate = threading.Event()
    seen = record_signals(signals.task_success, signals.task_failure)

    @app.task(name="burst", bind=True, max_retries=1)
    def burst(self, n: int) -> int:
        gate.wait(JOB_TIMEOUT)
        if n % 3 == 1:
            raise ValueError(f"failed {n}")
        if n % 3 == 2 and self.request.retries == 0:
            raise self.retry(countdown=3600)
        return n * 10

    results = burst.delay_many([(n,) for n in range(30)])
    run_worker(app, concurrency=30)
    wait_until(
        lambda: sql(app, "SELECT COUNT(*) FROM dbqueue_jobs WHERE status = 'running'") == [(30,)],
        timeout=JOB_TIMEOUT,
    )
    revoked = {results[n].id for n in (0, 1, 2, 3, 4)}
    assert app.control.revoke(list(revoked)) == 5
    gate.set()

    expected = {}
    for n, result in enumerate(results):
        if result.id in revoked:
            expected[result.id] = "cancelled"
        else:
            expected[result.id] = ("completed", "failed", "retrying")[n % 3]
    wait_until(
        lambda: {r.id: job(app, r.id)["status"] for r in results} == expected,
        timeout=JOB_TIMEOUT,
        message="outcomes not recorded as expected",
    )
    for n, result in enumerate(results):
        row = job(app, result.id)
        if result.id in revoked:
            assert (row["result"], row["error"]) == (None, "revoked"), n
        elif n % 3 == 0:
            assert settle(result) == n * 10
        elif n % 3 == 1:
            assert row["error_type"] == "builtins.ValueError"
            assert row["error"] == f"failed {n}"
    # Signals fire only for outcomes that were written: none for the revoked jobs.
    wait_until(lambda: len(seen) == 16, timeout=JOB_TIMEOUT, message=str(len(seen)))
    signalled = {s.kwargs.get("task_id") for s in seen if s.signal == "task_failure"}
    assert not signalled & revoked
    successes = sorted(s.kwargs["result"] for s in seen if s.signal == "task_success")
    assert successes == [n * 10 for n in range(6, 30, 3)]
