"""Broker URLs, the SQLAlchemy engine for each dialect, and the seed's connection pool presets."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, Engine, make_url

from dbqueue.exceptions import BrokerURLError, ImproperlyConfigured

#: Schemes of other brokers, so a migrating Celery project gets a clear error, not a crash.
_NON_SQL_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp", "sqs", "memory", "filesystem"}
#: Prefixes Celery and kombu put before a SQLAlchemy URL; dbqueue takes the URL behind them.
_WRAPPER_PREFIXES = ("dbqueue+", "sqla+", "sqlalchemy+", "db+")
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_SUPPORTED = ("postgresql", "mysql", "mariadb", "sqlite")


@dataclass(frozen=True)
class PoolConfig:
    """Connection pool sizing (the seed's PoolConfig), mapped onto SQLAlchemy's QueuePool."""

    max_open_conns: int = 25
    max_idle_conns: int = 10
    conn_max_lifetime: float = 300.0
    conn_max_idle_time: float = 60.0

    def __post_init__(self) -> None:
        if self.max_open_conns < 1 or not 0 <= self.max_idle_conns <= self.max_open_conns:
            raise ImproperlyConfigured(
                "pool needs max_open_conns >= 1 and 0 <= max_idle_conns <= max_open_conns, got "
                f"{self.max_open_conns} and {self.max_idle_conns}"
            )


POOL_PRESETS: dict[str, PoolConfig] = {
    "default": PoolConfig(25, 10, 300.0, 60.0),
    "high_concurrency": PoolConfig(100, 25, 600.0, 120.0),
    "low_latency": PoolConfig(50, 40, 900.0, 300.0),
    "resource_constrained": PoolConfig(10, 5, 180.0, 30.0),
}


def pool_config(preset: str, overrides: dict[str, Any] | None = None) -> PoolConfig:
    """The preset named ``preset`` with individual options from ``overrides`` applied."""
    try:
        base = POOL_PRESETS[preset]
    except KeyError:
        raise ImproperlyConfigured(
            f"unknown broker_pool_preset {preset!r} (choose from {', '.join(POOL_PRESETS)})"
        ) from None
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(PoolConfig.__dataclass_fields__)
    if unknown:
        raise ImproperlyConfigured(f"unknown broker_pool_options: {', '.join(sorted(unknown))}")
    return replace(base, **overrides)


def normalize_url(raw: str) -> URL:
    """Turn a broker URL into the SQLAlchemy URL dbqueue connects with, or say what is wrong."""
    text = raw.strip()
    for prefix in _WRAPPER_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
    scheme = text.partition("://")[0].lower()
    if scheme in _NON_SQL_SCHEMES or scheme.split("+")[0] in _NON_SQL_SCHEMES:
        raise BrokerURLError(
            f"dbqueue's broker is a SQL database, not {scheme!r}: use postgresql+psycopg://..., "
            "mysql+pymysql://... or sqlite:///path/to/file.db"
        )
    try:
        url = make_url(text)
        url.port  # noqa: B018 - a malformed port only shows when read
    except (exc.ArgumentError, ValueError) as error:
        raise BrokerURLError(f"cannot parse broker URL {mask_password(raw)!r}: {error}") from None
    if url.drivername.split("+")[0] == "postgres":
        url = url.set(drivername=url.drivername.replace("postgres", "postgresql", 1))
    backend = url.get_backend_name()
    if backend not in _SUPPORTED:
        raise BrokerURLError(
            f"unsupported database {backend!r} in broker URL {mask_password(raw)!r} "
            f"(supported: {', '.join(_SUPPORTED)})"
        )
    if url.drivername in _DEFAULT_DRIVERS:
        url = url.set(drivername=_DEFAULT_DRIVERS[url.drivername])
    in_memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    if backend == "sqlite" and in_memory:
        raise BrokerURLError(
            "an in-memory SQLite database cannot be shared by workers and producers: "
            "use a file, e.g. sqlite:///dbqueue.db"
        )
    return url


def mask_password(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (for banners, logs and errors)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True).replace(":***@", ":**@")
    try:
        return mask_password(make_url(url))
    except Exception:
        head, sep, tail = url.partition("@")
        if sep and ":" in head.rpartition("//")[2]:
            return head.rpartition(":")[0] + ":**@" + tail
        return url


def dialect_family(url: URL) -> str:
    """``postgresql``, ``mysql`` (MySQL and MariaDB) or ``sqlite``."""
    backend = url.get_backend_name()
    return "mysql" if backend in ("mysql", "mariadb") else backend


def build_engine(url: URL, pool: PoolConfig, engine_options: dict[str, Any]) -> Engine:
    """Create the engine with dialect-specific session setup and the pool mapped from ``pool``."""
    family = dialect_family(url)
    options: dict[str, Any] = {
        "pool_size": max(pool.max_idle_conns, 1),
        "max_overflow": max(pool.max_open_conns - max(pool.max_idle_conns, 1), 0),
        "pool_recycle": pool.conn_max_lifetime,
    }
    if family == "mysql":
        options["isolation_level"] = "READ COMMITTED"
    if family == "sqlite":
        options["connect_args"] = {"timeout": 30.0, "check_same_thread": False}
    options.update(engine_options)
    engine = create_engine(url, **options)
    _limit_idle_time(engine, pool.conn_max_idle_time)
    if family == "sqlite":
        _setup_sqlite(engine)
    elif family == "mysql":
        _setup_mysql(engine)
    return engine


def _limit_idle_time(engine: Engine, max_idle: float) -> None:
    """Discard pooled connections idle longer than ``max_idle`` (SQLAlchemy has no such knob)."""
    if max_idle <= 0:
        return

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        record.info["dbqueue_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("dbqueue_idle_since")
        if since is not None and time.monotonic() - since > max_idle:
            record.info.pop("dbqueue_idle_since", None)
            raise exc.DisconnectionError("connection idle longer than conn_max_idle_time")


def _setup_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, foreign keys (checkpoints and fan-outs go with their job), and
    transactions we begin ourselves (BEGIN IMMEDIATE for writes)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("dbqueue_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _setup_mysql(engine: Engine) -> None:
    """UTC sessions, so epoch arithmetic never meets a daylight-saving gap."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("SET time_zone = '+00:00'")
        cursor.close()
