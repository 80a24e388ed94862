"""Celery's per-job log lines at INFO, written only once the outcome is committed."""

from __future__ import annotations

import logging
import threading

import pytest

from dbqueue import DBQueue
from tests.integration.helpers import JOB_TIMEOUT, job
from tests.support.polling import wait_until


class _StatusAtLog(logging.Handler):
    """Records, for each "succeeded in" line, the job's stored status when it was written."""

    def __init__(self, app: DBQueue) -> None:
        super().__init__(logging.INFO)
        self.app = app
        self.seen: list[tuple[str, str, str]] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "succeeded in" not in message:
            return
        job_id = message.split("[", 1)[1].split("]", 1)[0]
        row = job(self.app, job_id)
        with self.guard:
            self.seen.append((job_id, row["status"] if row else "missing", message))


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_success_line_is_logged_after_the_commit(app: DBQueue, run_worker, pool: str) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    trace = logging.getLogger("dbqueue.app.trace")
    handler = _StatusAtLog(app)
    trace.addHandler(handler)
    level = trace.level
    trace.setLevel(logging.INFO)
    try:
        run_worker(app, pool=pool)
        results = [double.delay(i) for i in range(5)]
        assert [r.get(timeout=JOB_TIMEOUT) for r in results] == [0, 2, 4, 6, 8]
        wait_until(lambda: len(handler.seen) == 5, timeout=JOB_TIMEOUT, message="5 log lines")
    finally:
        trace.removeHandler(handler)
        trace.setLevel(level)
    assert {job_id for job_id, _, _ in handler.seen} == {r.id for r in results}
    assert {status for _, status, _ in handler.seen} == {"completed"}
    assert all(message.startswith("Task ") and "double" in message for *_, message in handler.seen)
    assert any(message.endswith(": 8") for *_, message in handler.seen)
