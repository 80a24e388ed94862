"""The SQL broker: engines, named queries, migrations and one Storage class per dialect."""

from __future__ import annotations

from dbqueue.config import Settings
from dbqueue.storage.base import ClaimedJob, DuplicateJobId, NewJob, Outcome, ReapedJob, Storage
from dbqueue.storage.engine import build_engine, dialect_family, normalize_url, pool_config


def open_storage(url_text: str, settings: Settings) -> Storage:
    """Create the Storage for a broker URL with the pool and retry policy from ``settings``."""
    url = normalize_url(url_text)
    family = dialect_family(url)
    pool = pool_config(settings.broker_pool_preset, settings.broker_pool_options)
    options = dict(settings.database_engine_options or {})
    engine = build_engine(url, pool, options)
    producer = None
    if family != "sqlite":
        producer = build_engine(
            url, pool, {**options, "isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
        )
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
    return cls(engine, url, settings.storage_retry, bool(settings.broker_notify), producer)


__all__ = [
    "ClaimedJob",
    "DuplicateJobId",
    "NewJob",
    "Outcome",
    "ReapedJob",
    "Storage",
    "open_storage",
]
