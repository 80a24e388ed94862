"""PgQueuer on a dedicated PostgreSQL database, schema installed with ``pgq install``.

A PgQueuer worker is one asyncio process that dequeues ``--batch-size`` jobs per query and
buffers their completion log. The sweep tries batch sizes and one or two processes.
Tables are PgQueuer's default ``durable`` (logged) kind, like every other PostgreSQL system.
"""

from __future__ import annotations

from typing import ClassVar

from benchmarks.common import drop_database, recreate_database, run_checked, subprocess_env
from benchmarks.systems.base import System, WorkerConfig, python_module

TASKS_MODULE = "benchmarks.systems.pgqueuer_tasks"


def worker_config(processes: int, batch_size: int) -> WorkerConfig:
    """``processes`` workers, each PgQueuer's supervisor with ``batch_size``."""
    command = python_module(TASKS_MODULE, "--batch-size", str(batch_size))
    label = f"batch {batch_size}" if processes == 1 else f"{processes} x batch {batch_size}"
    return WorkerConfig(label, (command,) * processes)


class PgQueuerSystem(System):
    """PgQueuer with its asyncpg driver."""

    key = "pgqueuer"
    title = "PgQueuer"
    tasks_module = TASKS_MODULE
    requires = ("pgqueuer", "asyncpg")
    bulk_api = "`Queries.enqueue(['noop'] * n, payloads, [0] * n)` (one statement)"
    database: ClassVar[str] = "bench_pgqueuer"

    def env(self) -> dict[str, str]:
        return {"BENCH_PG_DSN": self.settings.dsn(self.database)}

    def reset(self) -> None:
        recreate_database(self.settings.admin_dsn, self.database)
        install = python_module("pgqueuer", "--pg-dsn", self.settings.dsn(self.database), "install")
        run_checked(install, subprocess_env(self.env()))

    def teardown(self) -> None:
        drop_database(self.settings.admin_dsn, self.database)

    def worker_configs(self) -> list[WorkerConfig]:
        return [
            worker_config(2, 100),
            worker_config(1, 10),
            worker_config(1, 100),
            worker_config(2, 10),
            worker_config(2, 500),
        ]
