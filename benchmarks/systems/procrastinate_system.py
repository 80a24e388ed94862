"""Procrastinate 3 on a dedicated PostgreSQL database, schema applied with its CLI.

A Procrastinate worker is one asyncio process that fetches one job per query and runs up to
``--concurrency`` jobs at once. The sweep tries a few concurrencies and one or two processes
(one per core); the pool gets one connection per concurrent job plus headroom.
"""

from __future__ import annotations

from typing import ClassVar

from benchmarks.common import drop_database, recreate_database, run_checked, subprocess_env
from benchmarks.systems.base import System, WorkerConfig, python_module

TASKS_MODULE = "benchmarks.systems.procrastinate_tasks"
CLI = ("procrastinate", f"--app={TASKS_MODULE}.app", "--log-level=warning")


def worker_config(processes: int, concurrency: int) -> WorkerConfig:
    """``processes`` workers, each ``procrastinate worker --concurrency=<concurrency>``."""
    command = python_module(*CLI, "worker", f"--concurrency={concurrency}")
    label = f"-c {concurrency}" if processes == 1 else f"{processes} x -c {concurrency}"
    return WorkerConfig(
        label, (command,) * processes, env={"BENCH_POOL_SIZE": str(concurrency + 2)}
    )


class ProcrastinateSystem(System):
    """Procrastinate with its psycopg 3 connector."""

    key = "procrastinate"
    title = "Procrastinate"
    tasks_module = TASKS_MODULE
    requires = ("procrastinate", "psycopg_pool")
    bulk_api = "`noop.batch_defer_async(*[{'i': i} for i in range(n)])` (one statement)"
    database: ClassVar[str] = "bench_procrastinate"

    def env(self) -> dict[str, str]:
        return {"BENCH_PG_DSN": self.settings.dsn(self.database)}

    def reset(self) -> None:
        recreate_database(self.settings.admin_dsn, self.database)
        run_checked(python_module(*CLI, "schema", "--apply"), subprocess_env(self.env()))

    def teardown(self) -> None:
        drop_database(self.settings.admin_dsn, self.database)

    def worker_configs(self) -> list[WorkerConfig]:
        return [
            worker_config(4, 10),
            worker_config(1, 10),
            worker_config(2, 10),
            worker_config(2, 20),
            worker_config(4, 20),
        ]
