"""Schema migrations: idempotent, explicit when auto-upgrade is off, safe under concurrency,
and never losing rows."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from dbqueue import DBQueue
from dbqueue.exceptions import SchemaError
from dbqueue.storage import migrate
from dbqueue.storage.engine import dialect_family, normalize_url
from dbqueue.storage.migrate import Migration
from tests.integration.helpers import job, settle, sql
from tests.support.polling import wait_until


def shipped(url: str) -> list[str]:
    """Names of the migrations this release ships for the URL's dialect, in order."""
    family = dialect_family(normalize_url(url))
    return [f"{m.version:04d}_{m.name}" for m in ORIGINAL_AVAILABLE(family)]


def shipped_rows(url: str) -> list[tuple[int, str]]:
    family = dialect_family(normalize_url(url))
    return [(m.version, m.name) for m in ORIGINAL_AVAILABLE(family)]


def latest(url: str) -> int:
    return shipped_rows(url)[-1][0]


def schema_rows(url: str) -> list[tuple[int, str]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version, name FROM dbqueue_schema ORDER BY version"))
            return [(int(v), str(n)) for v, n in rows]
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(make_app, db_url: str) -> None:
    app = make_app(db_url)
    assert app.upgrade_db() == shipped(db_url)
    assert shipped(db_url)[0] == "0001_initial"
    assert app.upgrade_db() == []
    storage = app.storage  # auto-upgrade on first use: nothing left to do
    assert storage.upgrade() == []
    assert storage.schema_version() == latest(db_url)
    storage.check_schema()

    @app.task(name="kept")
    def kept(n: int) -> None:
        pass

    result = kept.delay(5)
    assert storage.upgrade() == []
    assert job(app, result.id)["status"] == "pending"
    assert schema_rows(db_url) == shipped_rows(db_url)


def test_auto_upgrade_off_on_an_empty_database_says_what_to_run(make_app, db_url: str) -> None:
    app = make_app(db_url, database_auto_upgrade=False)

    @app.task(name="early")
    def early() -> None:
        pass

    with pytest.raises(SchemaError, match="dbqueue db upgrade"):
        _ = app.storage
    with pytest.raises(SchemaError, match="dbqueue db upgrade"):
        early.delay()
    assert app.upgrade_db() == shipped(db_url)
    result = early.delay()
    assert result.state == "PENDING"


def with_next_migration(family: str) -> list[Migration]:
    """What a newer release would ship: a new column with a default, and a new table."""
    current = ORIGINAL_AVAILABLE(family)
    return [
        *current,
        Migration(
            current[-1].version + 1,
            "add_note",
            (
                "ALTER TABLE dbqueue_jobs ADD COLUMN note varchar(100) DEFAULT 'migrated'",
                "CREATE TABLE dbqueue_notes (id integer PRIMARY KEY, body varchar(100))",
            ),
        ),
    ]


ORIGINAL_AVAILABLE = migrate.available


def test_upgrade_never_loses_rows(
    make_app, db_url: str, run_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(db_url)

    @app.task(name="data")
    def data(n: int) -> dict:
        return {"n": n, "text": "é ✓"}

    done = data.delay(1)
    worker = run_worker(app)
    settle(done)
    worker.stop()
    waiting = [data.apply_async((n,), priority=n, countdown=3600) for n in range(5)]
    keyed = data.apply_async((9,), unique_key="keep-me")
    before = {r.id: job(app, r.id) for r in (done, *waiting, keyed)}
    app.close()

    monkeypatch.setattr(migrate, "available", with_next_migration)
    upgraded = make_app(db_url)
    applied = upgraded.storage.upgrade()  # the first use already applied it
    assert applied == []
    assert upgraded.storage.schema_version() == latest(db_url) + 1
    assert schema_rows(db_url) == [*shipped_rows(db_url), (latest(db_url) + 1, "add_note")]
    upgraded.storage.check_schema()

    for job_id, row in before.items():
        assert job(upgraded, job_id) == row
    notes = sql(upgraded, "SELECT note FROM dbqueue_jobs")
    assert [n for (n,) in notes] == ["migrated"] * len(before)
    assert sql(upgraded, "SELECT COUNT(*) FROM dbqueue_notes") == [(0,)]
    assert upgraded.AsyncResult(done.id).get(timeout=5) == {"n": 1, "text": "é ✓"}

    # The upgraded schema keeps working: the key is still held, new jobs run.
    @upgraded.task(name="data")
    def data2(n: int) -> dict:
        return {"n": n, "text": "after"}

    assert data2.apply_async((10,), unique_key="keep-me").id == keyed.id
    run_worker(upgraded, queues="fresh")
    assert settle(data2.apply_async((2,), queue="fresh")) == {"n": 2, "text": "after"}


def test_upgrade_applies_only_the_missing_migration(
    make_app, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(db_url)
    assert app.upgrade_db() == shipped(db_url)
    monkeypatch.setattr(migrate, "available", with_next_migration)
    assert app.upgrade_db() == [f"{latest(db_url) + 1:04d}_add_note"]
    assert app.upgrade_db() == []
    assert schema_rows(db_url) == [*shipped_rows(db_url), (latest(db_url) + 1, "add_note")]


def mark_schema_newer(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dbqueue_schema (version, name, applied_at) "
                    "VALUES (:v, 'from_the_future', 0)"
                ),
                {"v": latest(url) + 1},
            )
    finally:
        engine.dispose()


def test_newer_schema_than_the_code_asks_to_upgrade_dbqueue(make_app, db_url: str) -> None:
    make_app(db_url).upgrade_db()
    mark_schema_newer(db_url)
    app = make_app(db_url, database_auto_upgrade=False)
    with pytest.raises(SchemaError, match="upgrade dbqueue") as raised:
        _ = app.storage
    assert f"version {latest(db_url) + 1}" in str(raised.value)


def test_newer_schema_is_refused_with_auto_upgrade_on(make_app, db_url: str) -> None:
    make_app(db_url).upgrade_db()
    mark_schema_newer(db_url)
    app = make_app(db_url)
    with pytest.raises(SchemaError, match="upgrade dbqueue"):
        _ = app.storage


def test_older_schema_with_auto_upgrade_off_asks_for_db_upgrade(
    make_app, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_app(db_url).upgrade_db()
    monkeypatch.setattr(migrate, "available", with_next_migration)
    app = make_app(db_url, database_auto_upgrade=False)
    have, need = latest(db_url), latest(db_url) + 1
    with pytest.raises(
        SchemaError, match=rf"version {have}, this release needs {need}.*dbqueue db upgrade"
    ):
        _ = app.storage


def test_concurrent_upgrades_from_threads_apply_each_migration_once(
    make_app, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "available", with_next_migration)
    apps = [make_app(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(apps))

    def upgrade(app: DBQueue) -> list[str]:
        barrier.wait(timeout=30)
        return app.upgrade_db()

    with ThreadPoolExecutor(len(apps)) as pool:
        outcomes = list(pool.map(upgrade, apps))
    applied = sorted(name for names in outcomes for name in names)
    assert applied == [*shipped(db_url), f"{latest(db_url) + 1:04d}_add_note"]
    assert schema_rows(db_url) == [*shipped_rows(db_url), (latest(db_url) + 1, "add_note")]


UPGRADE_SCRIPT = """
import sys, time
from dbqueue import DBQueue
app = DBQueue("concurrent", broker=sys.argv[1], broker_pool_preset="resource_constrained")
open(sys.argv[2], "w").close()
while not __import__("os").path.exists(sys.argv[3]):
    time.sleep(0.005)
print(",".join(app.upgrade_db()))
"""


def test_concurrent_upgrades_from_processes_apply_each_migration_once(tmp_path, db_url: str):
    go = tmp_path / "go"
    procs = []
    for n in range(3):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    UPGRADE_SCRIPT,
                    db_url,
                    str(tmp_path / f"ready{n}"),
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        wait_until(
            lambda: all((tmp_path / f"ready{n}").exists() for n in range(3)),
            timeout=30,
            message="upgrade processes never started",
        )
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    # Each migration exactly once, whichever process applied it (on SQLite two processes may
    # share the work: the write lock is held per migration, not across the whole upgrade).
    applied = sorted(name for out, _ in outputs for name in out.strip().split(",") if name)
    assert applied == shipped(db_url)
    assert schema_rows(db_url) == shipped_rows(db_url)
