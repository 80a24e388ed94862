"""Concurrent claimers never take the same job: SKIP LOCKED on PostgreSQL/MySQL, BEGIN IMMEDIATE
on SQLite."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from dbqueue import DBQueue
from tests.integration.helpers import JOB_TIMEOUT, register, settle, sql
from tests.support.polling import wait_until


def test_concurrent_claims_hand_out_each_job_once(make_app, db_url: str) -> None:
    """8 claimers, each with its own engine (like separate processes), drain 400 jobs."""
    producer = make_app(db_url)

    @producer.task(name="item")
    def item(n: int) -> None:
        pass

    ids = {r.id for r in item.delay_many([(n,) for n in range(400)])}
    claimers = [make_app(db_url) for _ in range(8)]
    barrier = threading.Barrier(len(claimers))

    def drain(app: DBQueue) -> list[str]:
        worker_id = register(app, ["celery"])
        barrier.wait(timeout=30)
        taken: list[str] = []
        while batch := app.storage.claim(worker_id, ["celery"], 7):
            taken.extend(j.id for j in batch)
        return taken

    with ThreadPoolExecutor(len(claimers)) as pool:
        claimed = [job_id for taken in pool.map(drain, claimers) for job_id in taken]
    duplicates = [job_id for job_id, n in Counter(claimed).items() if n > 1]
    assert duplicates == []
    assert set(claimed) == ids
    assert sql(producer, "SELECT status, attempt, COUNT(*) FROM dbqueue_jobs GROUP BY 1, 2") == [
        ("running", 1, 400)
    ]


def test_several_workers_run_each_job_exactly_once(make_app, db_url: str, run_worker) -> None:
    runs: Counter[int] = Counter()
    lock = threading.Lock()
    apps = [make_app(db_url) for _ in range(3)]
    for app in apps:

        @app.task(name="count")
        def count(n: int) -> int:
            with lock:
                runs[n] += 1
            return n

    results = apps[0].tasks["count"].delay_many([(n,) for n in range(300)])
    for app in apps:
        run_worker(app, concurrency=4)
    assert [settle(r) for r in results] == list(range(300))
    wait_until(lambda: sum(runs.values()) >= 300, timeout=JOB_TIMEOUT)
    assert runs == Counter(range(300))
    assert sql(apps[0], "SELECT status, attempt, COUNT(*) FROM dbqueue_jobs GROUP BY 1, 2") == [
        ("completed", 1, 300)
    ]
