"""Helpers shared by the unit tests."""

from __future__ import annotations

import sqlalchemy as sa

from dbqueue import DBQueue


def count_jobs(app: DBQueue) -> int:
    """Rows in ``dbqueue_jobs``, read with plain SQL (not through the code under test)."""
    with app.storage.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM dbqueue_jobs")).scalar_one())


def stored_call(app: DBQueue, job_id: str) -> tuple[list, dict]:
    """The (args, kwargs) stored for a job, decoded from its JSON payload."""
    import json

    job = app.storage.get_job(job_id)
    assert job is not None, f"no row for job {job_id}"
    assert job["content_type"] == "application/json"
    args, kwargs = json.loads(bytes(job["payload"]))[:2]
    return args, kwargs
