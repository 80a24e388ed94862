"""dbqueue on PostgreSQL (a dedicated database) and on SQLite (a scratch file).

The throughput sweep tries a thread pool, a prefork pool and two worker processes; the report
names the configuration that won.
"""

from __future__ import annotations

import sys
from abc import abstractmethod
from typing import ClassVar

from benchmarks.common import (
    console_script,
    drop_database,
    recreate_database,
    run_checked,
    subprocess_env,
)
from benchmarks.systems.base import System, WorkerConfig

TASKS_MODULE = "benchmarks.systems.dbqueue_tasks"
APP = f"{TASKS_MODULE}:app"


def dbqueue_command(*args: str) -> tuple[str, ...]:
    """Command line for the ``dbqueue`` CLI, falling back to its entry point if no script."""
    script = console_script("dbqueue")
    if script != ["dbqueue"]:
        return (*script, *args)
    entry = "import sys; from dbqueue.cli import main; sys.exit(main())"
    return (sys.executable, "-c", entry, *args)


def worker(pool: str, concurrency: int, prefetch: int | None = None) -> tuple[str, ...]:
    """One ``dbqueue worker`` process with the given pool, concurrency and prefetch."""
    extra = ("--prefetch-multiplier", str(prefetch)) if prefetch is not None else ()
    return dbqueue_command(
        "worker", "-A", APP, "-P", pool, "-c", str(concurrency), "-l", "warning", *extra
    )


class _Dbqueue(System):
    """What both dbqueue brokers share: tasks, worker configurations, schema creation."""

    tasks_module = TASKS_MODULE
    requires = ("dbqueue",)

    @abstractmethod
    def broker_url(self) -> str:
        """The ``broker=`` URL handed to ``DBQueue``."""

    def unavailable(self) -> str | None:
        try:
            from dbqueue import DBQueue  # noqa: F401
        except Exception as exc:
            return f"dbqueue is not importable yet ({type(exc).__name__}: {exc})"
        return None

    def env(self) -> dict[str, str]:
        return {"BENCH_DBQUEUE_BROKER": self.broker_url()}

    def worker_configs(self) -> list[WorkerConfig]:
        deep = worker("threads", 8, 64)
        return [
            WorkerConfig("threads -c 32", (worker("threads", 32),)),
            WorkerConfig("prefork -c 2", (worker("prefork", 2),)),
            WorkerConfig("threads -c 8 --prefetch-multiplier 64", (deep,)),
            WorkerConfig("2 x threads -c 8 --prefetch-multiplier 64", (deep, deep)),
        ]

    def create_tables(self) -> None:
        """Create dbqueue's tables up front so no workload times the DDL."""
        run_checked(dbqueue_command("db", "upgrade", "-A", APP), subprocess_env(self.env()))


class DbqueuePostgres(_Dbqueue):
    """dbqueue with PostgreSQL as broker and result store: the baseline of every ratio."""

    key = "dbqueue-pg"
    title = "dbqueue (PostgreSQL)"
    bulk_api = "`noop.delay_many([(i,) for i in range(n)])` (one `COPY`)"
    database: ClassVar[str] = "bench_dbqueue"

    def broker_url(self) -> str:
        _, _, rest = self.settings.dsn(self.database).partition("://")
        return f"postgresql+psycopg://{rest}"

    def reset(self) -> None:
        recreate_database(self.settings.admin_dsn, self.database)
        self.create_tables()

    def teardown(self) -> None:
        drop_database(self.settings.admin_dsn, self.database)


class DbqueueSqlite(_Dbqueue):
    """dbqueue with a SQLite file as broker: the zero-infrastructure setup."""

    key = "dbqueue-sqlite"
    title = "dbqueue (SQLite)"
    bulk_api = "`noop.delay_many([(i,) for i in range(n)])` (one transaction)"

    def broker_url(self) -> str:
        return f"sqlite:///{self.settings.scratch / 'dbqueue.sqlite3'}"

    def reset(self) -> None:
        self.teardown()
        self.create_tables()

    def teardown(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            (self.settings.scratch / f"dbqueue.sqlite3{suffix}").unlink(missing_ok=True)
