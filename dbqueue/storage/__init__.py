"""The SQL broker: engines, named queries, migrations and one Storage class per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from dbqueue.config import Settings
from dbqueue.storage.base import ClaimedJob, DuplicateJobId, NewJob, Outcome, ReapedJob, Storage
from dbqueue.storage.engine import (
    PoolConfig,
    build_engine,
    dialect_family,
    normalize_url,
    pool_config,
)


def open_storage(url_text: str, settings: Settings) -> Storage:
    """Create the Storage for a broker URL with the pool and retry policy from ``settings``."""
    url = normalize_url(url_text)
    family = dialect_family(url)
    pool = pool_config(settings.broker_pool_preset, settings.broker_pool_options)
    options = dict(settings.database_engine_options or {})
    engine = build_engine(url, pool, options)
    producer = claimer = None
    if family != "sqlite":
        autocommit = {**options, "isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
        producer = build_engine(url, pool, autocommit)
    if family == "postgresql":
        lazy = {**autocommit, "connect_args": _lazy_commit(url, options)}
        claimer = build_engine(url, CLAIMER_POOL, lazy)
    cls: type[Storage]
    if family == "postgresql":
        from dbqueue.storage.postgresql import PostgresStorage

        cls = PostgresStorage
    elif family == "mysql":
        from dbqueue.storage.mysql import MySQLStorage

        cls = MySQLStorage
    else:
        from dbqueue.storage.sqlite import SQLiteStorage

        cls = SQLiteStorage
    return cls(engine, url, settings.storage_retry, bool(settings.broker_notify), producer, claimer)


#: Claims come from one thread per worker process (two connections cover a reconnect).
CLAIMER_POOL = PoolConfig(max_open_conns=2, max_idle_conns=1)


def _lazy_commit(url: URL, options: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL connect arguments for sessions whose commits do not wait for the WAL flush.

    Keeps the URL's and the engine options' own ``options`` (a search_path, say).
    """
    connect_args = dict(options.get("connect_args") or {})
    extra = "-c synchronous_commit=off"
    from_url = url.query.get("options")
    current = connect_args.get("options") or (
        from_url[-1] if isinstance(from_url, tuple) else from_url
    )
    connect_args["options"] = f"{current} {extra}" if current else extra
    return connect_args


__all__ = [
    "ClaimedJob",
    "DuplicateJobId",
    "NewJob",
    "Outcome",
    "ReapedJob",
    "Storage",
    "open_storage",
]
