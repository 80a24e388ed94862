"""Bad input and broken environments end in clear errors, never hangs or collateral damage."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import uuid

import pytest
from sqlalchemy import exc as sa_exc

from dbqueue import DBQueue, NotRegistered, RetryConfig
from dbqueue.exceptions import DBQueueError, DecodeError, StorageUnavailable
from dbqueue.storage import NewJob, open_storage
from tests.integration.helpers import JOB_TIMEOUT, job, settle, sql, wait_status
from tests.support.polling import wait_until

FAST_FAIL = RetryConfig(max_attempts=2, initial_backoff=0.01, jitter=0.0)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unregistered_task_name_fails_naming_it(app: DBQueue, run_worker) -> None:
    @app.task(name="known")
    def known() -> str:
        return "fine"

    result = app.send_task("proj.tasks.typo_in_name", args=[1, 2])
    after = known.delay()
    run_worker(app)
    with pytest.raises(NotRegistered, match=re.escape("proj.tasks.typo_in_name")):
        result.get(timeout=JOB_TIMEOUT)
    assert result.state == "FAILURE"
    row = job(app, result.id)
    assert row["error_type"] == "dbqueue.exceptions.NotRegistered"
    assert "proj.tasks.typo_in_name" in row["error"]
    assert row["attempt"] == 1
    assert settle(after) == "fine"


@pytest.mark.parametrize(
    ("payload", "content_type", "complaint"),
    [
        (b"\x00\xff\xfegarbage{[", "application/json", "cannot decode"),
        (b'{"not": "a call"}', "application/json", "not [args, kwargs]"),
        (b"\x80\x04K\x01.", "application/x-python-serialize", "pickle"),
    ],
    ids=["garbage-bytes", "not-a-call", "pickle-not-accepted"],
)
def test_undecodable_payload_fails_that_job_only(
    app: DBQueue, run_worker, runs, payload: bytes, content_type: str, complaint: str
) -> None:
    @app.task(name="victim")
    def victim(n: int) -> int:
        runs.add(n)
        return n

    bad = victim.delay(1)
    good_before = victim.delay(2)
    sql(
        app,
        "UPDATE dbqueue_jobs SET payload = :p, content_type = :c WHERE id = :id",
        p=payload,
        c=content_type,
        id=bad.id,
    )
    worker = run_worker(app, concurrency=2)
    with pytest.raises(DecodeError):
        bad.get(timeout=JOB_TIMEOUT)
    row = job(app, bad.id)
    assert row["status"] == "failed"
    assert row["error_type"] == "dbqueue.exceptions.DecodeError"
    assert complaint in row["error"]
    assert settle(good_before) == 2
    assert settle(victim.delay(3)) == 3
    assert sorted(runs.items) == [2, 3]
    assert worker.thread.is_alive()


def drop_jobs_table(app: DBQueue) -> None:
    app.storage.dispose()
    for table in ("dbqueue_checkpoints", "dbqueue_fan_outs", "dbqueue_jobs"):  # references first
        sql(app, f"DROP TABLE {table}")


def test_missing_jobs_table_is_a_clear_error_not_a_hang(app: DBQueue) -> None:
    @app.task(name="lost")
    def lost() -> None:
        pass

    pending = lost.delay()
    drop_jobs_table(app)
    for attempt in (lost.delay, lambda: app.AsyncResult(pending.id).state):
        started = time.monotonic()
        with pytest.raises(sa_exc.DBAPIError, match="dbqueue_jobs"):
            attempt()
        assert time.monotonic() - started < 5.0


def test_worker_on_a_missing_jobs_table_logs_a_clear_error_and_stops_on_request(
    app: DBQueue, run_worker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="dbqueue.worker")
    drop_jobs_table(app)
    worker = run_worker(app)
    wait_until(
        lambda: any(
            "Cannot claim jobs" in r.getMessage() and "dbqueue_jobs" in r.getMessage()
            for r in caplog.records
        ),
        timeout=JOB_TIMEOUT,
        message="the worker never said why it cannot claim",
    )
    assert worker.thread.is_alive()
    started = time.monotonic()
    worker.stop(timeout=JOB_TIMEOUT)
    assert time.monotonic() - started < 5.0
    assert worker.error is None


@pytest.mark.parametrize("backend", ["postgresql", "mariadb", "sqlite"])
def test_unreachable_database_raises_storage_unavailable_naming_the_operation(
    make_app, backend: str, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/no/such/directory/dbq.db"
    elif backend == "postgresql":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    else:
        url = f"mysql+pymysql://root@127.0.0.1:{closed_port()}/test"
    app = make_app(url, storage_retry=FAST_FAIL)

    @app.task(name="unsent")
    def unsent() -> None:
        pass

    caplog.set_level(logging.WARNING, logger="dbqueue.storage")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"schema upgrade failed after 2 attempt\(s\)"):
        unsent.delay()
    assert time.monotonic() - started < 10
    assert "schema upgrade failed (attempt 1/2)" in caplog.text

    storage = open_storage(url, app.conf)
    try:
        job_ = NewJob(str(uuid.uuid4()), "unsent", "celery", b"[[], {}]", "application/json")
        with pytest.raises(StorageUnavailable, match=r"enqueue of unsent failed after 2 attempt"):
            storage.insert_job(job_)
        with pytest.raises(StorageUnavailable, match=r"claim failed after 2 attempt"):
            storage.claim("w", ["celery"], 1)
        with pytest.raises(StorageUnavailable, match=r"job lookup failed after 2 attempt"):
            storage.get_job("x")
    finally:
        storage.engine.dispose()


def test_unserializable_arguments_are_refused_naming_the_argument(app: DBQueue) -> None:
    @app.task(name="picky")
    def picky(name: str, when: object) -> None:
        pass

    with pytest.raises(DBQueueError, match=r"'when'.*object"):
        picky.delay("x", object())
    with pytest.raises(TypeError, match="picky"):
        picky.delay("too", "many", "arguments")
    assert sql(app, "SELECT COUNT(*) FROM dbqueue_jobs") == [(0,)]


def test_unserializable_result_fails_the_job(app: DBQueue, run_worker) -> None:
    @app.task(name="weird_result")
    def weird_result() -> object:
        return threading.Lock()

    result = weird_result.delay()
    run_worker(app)
    settle(result)
    row = wait_status(app, result.id, "failed")
    assert row["error_type"] == "dbqueue.exceptions.EncodeError"
    assert "weird_result" in row["error"]
