"""Adapters for the benchmarked systems; :data:`SYSTEMS` lists them in report order."""

from __future__ import annotations

from benchmarks.systems.base import System
from benchmarks.systems.celery_system import CeleryRedis, CelerySqlalchemy
from benchmarks.systems.dbqueue_system import DbqueuePostgres, DbqueueSqlite
from benchmarks.systems.pgqueuer_system import PgQueuerSystem
from benchmarks.systems.procrastinate_system import ProcrastinateSystem

SYSTEMS: tuple[type[System], ...] = (
    DbqueuePostgres,
    DbqueueSqlite,
    CeleryRedis,
    CelerySqlalchemy,
    ProcrastinateSystem,
    PgQueuerSystem,
)
