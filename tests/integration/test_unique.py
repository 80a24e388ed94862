"""Unique keys: at most one live job per key, enforced by the database under concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dbqueue import DBQueue
from tests.integration.helpers import settle, sql, wait_status


def key_rows(app: DBQueue, key: str) -> list[tuple[str, str]]:
    return sql(app, "SELECT id, status FROM dbqueue_jobs WHERE unique_key = :k", k=key)


def test_concurrent_enqueues_with_one_key_make_one_job(app: DBQueue) -> None:
    @app.task(name="dedup")
    def dedup(n: int) -> None:
        pass

    callers = 50
    barrier = threading.Barrier(callers)

    def enqueue(n: int) -> str:
        barrier.wait(timeout=30)
        return dedup.apply_async((n,), unique_key="k").id

    with ThreadPoolExecutor(callers) as pool:
        ids = list(pool.map(enqueue, range(callers)))

    rows = key_rows(app, "k")
    assert len(rows) == 1
    assert set(ids) == {rows[0][0]}
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_jobs") == [(1,)]


def test_key_is_free_again_once_the_job_finished(app: DBQueue, run_worker) -> None:
    @app.task(name="keyed")
    def keyed(n: int) -> int:
        return n

    first = keyed.apply_async((1,), unique_key="report")
    assert keyed.apply_async((2,), unique_key="report").id == first.id
    run_worker(app)
    assert settle(first) == 1

    second = keyed.apply_async((3,), unique_key="report")
    assert second.id != first.id
    assert settle(second) == 3
    assert sorted(status for _, status in key_rows(app, "report")) == ["completed", "completed"]


def test_revoked_job_frees_its_key(app: DBQueue) -> None:
    @app.task(name="keyed")
    def keyed() -> None:
        pass

    first = keyed.apply_async(unique_key="r")
    first.revoke()
    assert first.state == "REVOKED"
    second = keyed.apply_async(unique_key="r")
    assert second.id != first.id
    assert second.state == "PENDING"


@pytest.mark.parametrize("status", ["pending", "running", "retrying", "waiting", "paused"])
def test_live_statuses_hold_the_key(app: DBQueue, status: str) -> None:
    @app.task(name="keyed")
    def keyed() -> None:
        pass

    first = keyed.apply_async(unique_key="held")
    sql(app, "UPDATE dbqueue_jobs SET status = :s WHERE id = :id", s=status, id=first.id)
    again = keyed.apply_async(unique_key="held")
    assert again.id == first.id
    assert key_rows(app, "held") == [(first.id, status)]


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_finished_statuses_release_the_key(app: DBQueue, status: str) -> None:
    @app.task(name="keyed")
    def keyed() -> None:
        pass

    first = keyed.apply_async(unique_key="done")
    sql(app, "UPDATE dbqueue_jobs SET status = :s WHERE id = :id", s=status, id=first.id)
    again = keyed.apply_async(unique_key="done")
    assert again.id != first.id
    assert sorted(key_rows(app, "done")) == sorted([(first.id, status), (again.id, "pending")])


def test_task_level_unique_key_template(app: DBQueue) -> None:
    @app.task(name="report", unique_key="report:{user}:{day}")
    def report(user: int, day: str = "mon") -> None:
        pass

    first = report.delay(1)
    assert report.delay(1).id == first.id
    assert report.delay(user=1, day="mon").id == first.id
    other_day = report.delay(1, "tue")
    other_user = report.delay(2)
    assert len({first.id, other_day.id, other_user.id}) == 3
    keys = sorted(k for (k,) in sql(app, "SELECT unique_key FROM dbqueue_jobs"))
    assert keys == ["report:1:mon", "report:1:tue", "report:2:mon"]
    # An explicit key overrides the template.
    explicit = report.apply_async((1,), unique_key="custom")
    assert explicit.id not in (first.id, other_day.id)
    assert report.apply_async((9,), unique_key="custom").id == explicit.id


def test_task_level_unique_key_function(app: DBQueue) -> None:
    @app.task(name="sync_account", unique_key=lambda account, **_: f"sync-{account.lower()}")
    def sync_account(account: str, full: bool = False) -> None:
        pass

    first = sync_account.delay("ACME")
    assert sync_account.delay("acme", full=True).id == first.id
    assert key_rows(app, "sync-acme") == [(first.id, "pending")]


def test_delay_many_with_a_taken_key_returns_the_live_job(app: DBQueue) -> None:
    @app.task(name="item", unique_key="item-{0}")
    def item(n: int) -> None:
        pass

    live = item.delay(2)
    results = item.delay_many([(1,), (2,), (3,), (3,)])
    ids = [r.id for r in results]
    assert ids[1] == live.id
    assert ids[2] == ids[3]
    assert len({ids[0], ids[1], ids[2]}) == 3
    rows = sql(app, "SELECT unique_key, id FROM dbqueue_jobs ORDER BY unique_key")
    assert rows == [("item-1", ids[0]), ("item-2", live.id), ("item-3", ids[2])]


def test_delay_many_mixes_keyed_and_plain_jobs(app: DBQueue) -> None:
    @app.task(name="plain")
    def plain(n: int) -> None:
        pass

    @app.task(name="keyed", unique_key="k-{0}")
    def keyed(n: int) -> None:
        pass

    taken = keyed.delay(1)
    plain_ids = [r.id for r in plain.delay_many([(i,) for i in range(20)])]
    keyed_ids = [r.id for r in keyed.delay_many([(1,), (2,)])]
    assert len(set(plain_ids)) == 20
    assert keyed_ids[0] == taken.id
    assert keyed_ids[1] != taken.id
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_jobs") == [(22,)]


def test_duplicate_key_returns_the_live_job_even_while_it_runs(app: DBQueue, run_worker) -> None:
    release = threading.Event()

    @app.task(name="slow")
    def slow() -> str:
        release.wait(20)
        return "ok"

    first = slow.apply_async(unique_key="slow")
    run_worker(app)
    wait_status(app, first.id, "running")
    try:
        assert slow.apply_async(unique_key="slow").id == first.id
    finally:
        release.set()
    assert settle(first) == "ok"
