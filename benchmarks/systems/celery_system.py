"""Celery 5 with the Redis transport and with kombu's SQLAlchemy transport on PostgreSQL.

Both run the worker exactly as ``celery -A mod worker -P prefork -c 2 -l warning``, the usual
production setup on a 2-core machine, with Celery's default prefetching and early acks.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from benchmarks.common import drop_database, recreate_database
from benchmarks.systems.base import System, WorkerConfig, python_module

TASKS_MODULE = "benchmarks.systems.celery_tasks"
WORKER = python_module(
    "celery", "-A", TASKS_MODULE, "worker", "-P", "prefork", "-c", "2", "-l", "warning"
)


class _Celery(System):
    """What the two Celery variants share: tasks, worker command, bulk API."""

    tasks_module = TASKS_MODULE
    bulk_api = (
        "a loop of `noop.apply_async((i,), producer=p)` inside one "
        "`app.producer_or_acquire()` (one connection, one message per job)"
    )

    @abstractmethod
    def broker_url(self) -> str:
        """The ``broker=`` URL handed to Celery."""

    def env(self) -> dict[str, str]:
        return {"BENCH_CELERY_BROKER": self.broker_url()}

    def worker_configs(self) -> list[WorkerConfig]:
        return [WorkerConfig("prefork -c 2", (WORKER,))]


class CeleryRedis(_Celery):
    """Celery on Redis: the reference a Celery user would compare dbqueue with."""

    key = "celery-redis"
    title = "Celery + Redis"
    requires = ("celery", "redis")
    notes = (
        "Redis here keeps nothing on disk (no RDB, no AOF): an enqueue is acknowledged once "
        "it is in memory, while the PostgreSQL-backed systems wait for a durable commit."
    )

    def broker_url(self) -> str:
        return self.settings.redis_url

    def reset(self) -> None:
        import redis

        client = redis.Redis.from_url(self.settings.redis_url)
        try:
            client.flushdb()
        finally:
            client.close()

    teardown = reset


class CelerySqlalchemy(_Celery):
    """Celery on kombu's SQLAlchemy transport, using the same PostgreSQL as dbqueue."""

    key = "celery-sqla"
    title = "Celery + kombu SQLAlchemy (PostgreSQL)"
    requires = ("celery", "psycopg")
    database: ClassVar[str] = "bench_celery_sqla"
    notes = (
        "kombu's SQLAlchemy transport polls the table (default `polling_interval` 1 s) "
        "and fetches one message per `SELECT ... FOR UPDATE`; latency reflects that polling."
    )

    def broker_url(self) -> str:
        _, _, rest = self.settings.dsn(self.database).partition("://")
        return f"sqla+postgresql+psycopg://{rest}"

    def reset(self) -> None:
        recreate_database(self.settings.admin_dsn, self.database)

    def teardown(self) -> None:
        drop_database(self.settings.admin_dsn, self.database)
