"""``dbqueue/storage/engine.py``: broker URL normalisation, password masking, the seed's pool
presets, and how a pool config becomes a SQLAlchemy engine (checked on a SQLite file)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from dbqueue.exceptions import BrokerURLError, ImproperlyConfigured
from dbqueue.storage.engine import (
    POOL_PRESETS,
    PoolConfig,
    build_engine,
    dialect_family,
    mask_password,
    normalize_url,
    pool_config,
)
from tests.support.polling import wait_until

# --- normalize_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "drivername"),
    [
        ("postgresql://u:p@db.example/app", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@db.example/app", "postgresql+psycopg"),
        ("mysql://u:p@db.example/app", "mysql+pymysql"),
        ("mysql+pymysql://u:p@db.example/app", "mysql+pymysql"),
        ("mariadb://u:p@db.example/app", "mariadb+pymysql"),
        ("sqlite:///jobs.db", "sqlite"),
    ],
)
def test_default_drivers(raw: str, drivername: str) -> None:
    url = normalize_url(raw)
    assert url.drivername == drivername
    assert url.database in ("app", "jobs.db")


@pytest.mark.parametrize("raw", ["postgres://u:p@db.example/app", "postgres+psycopg://u@h/app"])
def test_postgres_scheme_alias_maps_to_psycopg(raw: str) -> None:
    assert normalize_url(raw).drivername == "postgresql+psycopg"


@pytest.mark.parametrize("prefix", ["sqla+", "db+", "dbqueue+", "sqlalchemy+"])
@pytest.mark.parametrize(
    ("rest", "drivername"),
    [("postgresql://u@h/app", "postgresql+psycopg"), ("sqlite:///j.db", "sqlite")],
)
def test_wrapper_prefixes_are_stripped(prefix: str, rest: str, drivername: str) -> None:
    url = normalize_url(prefix + rest)
    assert url.drivername == drivername
    assert url == normalize_url(rest)


def test_surrounding_whitespace_is_ignored() -> None:
    assert normalize_url("  sqlite:///j.db\n").database == "j.db"


@pytest.mark.parametrize(
    "raw",
    ["redis://localhost:6379/0", "rediss://h/0", "amqp://guest@localhost//", "pyamqp://h//",
     "sqs://", "memory://", "sqla+redis://h/0"],
)  # fmt: skip
def test_non_sql_brokers_are_refused_with_sql_alternatives(raw: str) -> None:
    with pytest.raises(BrokerURLError) as info:
        normalize_url(raw)
    message = str(info.value)
    assert "SQL" in message
    assert "postgresql" in message and "mysql" in message and "sqlite" in message
    assert isinstance(info.value, ImproperlyConfigured)


@pytest.mark.parametrize("raw", ["sqlite://", "sqlite:///:memory:", "db+sqlite://"])
def test_in_memory_sqlite_is_refused(raw: str) -> None:
    with pytest.raises(BrokerURLError, match="in-memory"):
        normalize_url(raw)


def test_unknown_dialect_is_refused_naming_it_and_the_supported_ones() -> None:
    with pytest.raises(BrokerURLError) as info:
        normalize_url("oracle://scott:tiger@h/db")
    message = str(info.value)
    assert "'oracle'" in message
    assert "postgresql" in message and "sqlite" in message
    assert "tiger" not in message, "the error must not leak the password"


def test_unparseable_url_is_refused_without_the_password() -> None:
    with pytest.raises(BrokerURLError, match="cannot parse"):
        normalize_url("not a url")


@pytest.mark.parametrize(
    ("raw", "family"),
    [
        ("postgresql://h/db", "postgresql"),
        ("mysql://h/db", "mysql"),
        ("mariadb://h/db", "mysql"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_dialect_family(raw: str, family: str) -> None:
    assert dialect_family(normalize_url(raw)) == family


# --- mask_password -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://alice:s3cr3t-pw@db.example:5432/app",
        "mysql+pymysql://alice:s3cr3t-pw@db.example/app",
        "weird-scheme://alice:s3cr3t-pw@db.example/app",
    ],
)
def test_mask_password_hides_the_password_and_keeps_the_rest(raw: str) -> None:
    masked = mask_password(raw)
    assert "s3cr3t-pw" not in masked
    assert "alice" in masked and "db.example" in masked and masked.endswith("/app")


def test_mask_password_accepts_url_objects() -> None:
    masked = mask_password(normalize_url("postgresql://alice:s3cr3t-pw@db.example/app"))
    assert "s3cr3t-pw" not in masked
    assert masked.startswith("postgresql+psycopg://alice:")


def test_mask_password_leaves_urls_without_password_alone() -> None:
    assert mask_password("sqlite:///jobs.db") == "sqlite:///jobs.db"


# --- pool presets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("default", (25, 10, 300.0, 60.0)),
        ("high_concurrency", (100, 25, 600.0, 120.0)),
        ("low_latency", (50, 40, 900.0, 300.0)),
        ("resource_constrained", (10, 5, 180.0, 30.0)),
    ],
)
def test_pool_presets_match_the_seed(preset: str, expected: tuple) -> None:
    config = pool_config(preset)
    assert (
        config.max_open_conns,
        config.max_idle_conns,
        config.conn_max_lifetime,
        config.conn_max_idle_time,
    ) == expected


def test_pool_config_default_values_are_the_default_preset() -> None:
    assert PoolConfig() == POOL_PRESETS["default"]


def test_pool_overrides_replace_single_options() -> None:
    config = pool_config("high_concurrency", {"max_idle_conns": 50, "conn_max_idle_time": 5})
    assert config == PoolConfig(100, 50, 600.0, 5)
    assert pool_config("high_concurrency").max_idle_conns == 25, "presets must not be mutated"


def test_unknown_preset_names_it_and_the_choices() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        pool_config("turbo")
    message = str(info.value)
    assert "'turbo'" in message
    assert all(name in message for name in POOL_PRESETS)


def test_unknown_pool_option_is_named() -> None:
    with pytest.raises(ImproperlyConfigured, match="max_conns"):
        pool_config("default", {"max_conns": 3, "max_idle_conns": 1})


@pytest.mark.parametrize(
    "overrides",
    [{"max_open_conns": 0}, {"max_idle_conns": -1}, {"max_open_conns": 5, "max_idle_conns": 6}],
)
def test_inconsistent_pool_sizes_are_refused(overrides: dict) -> None:
    with pytest.raises(ImproperlyConfigured, match="max_open_conns"):
        pool_config("default", overrides)


# --- build_engine ------------------------------------------------------------------------------


@contextlib.contextmanager
def engine_for(url: str, pool: PoolConfig, **options) -> Iterator[sa.Engine]:
    engine = build_engine(normalize_url(url), pool, options)
    try:
        yield engine
    finally:
        engine.dispose()


def test_max_idle_is_pool_size_and_max_open_caps_overflow(sqlite_url: str) -> None:
    pool = PoolConfig(max_open_conns=3, max_idle_conns=2, conn_max_lifetime=120.0)
    with engine_for(sqlite_url, pool, pool_timeout=0.05) as engine:
        assert isinstance(engine.pool, sa.pool.QueuePool)
        assert engine.pool.size() == 2
        assert engine.pool._recycle == 120.0
        with contextlib.ExitStack() as stack:
            held = [stack.enter_context(engine.connect()) for _ in range(3)]
            assert len({id(c.connection.dbapi_connection) for c in held}) == 3
            with pytest.raises(sa.exc.TimeoutError):
                engine.connect()


def test_engine_options_override_the_pool_mapping(sqlite_url: str) -> None:
    with engine_for(sqlite_url, PoolConfig(), pool_size=4) as engine:
        assert engine.pool.size() == 4


def test_sqlite_engine_uses_wal(sqlite_url: str) -> None:
    with engine_for(sqlite_url, PoolConfig()) as engine, engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_connection_idle_longer_than_conn_max_idle_time_is_discarded(sqlite_url: str) -> None:
    pool = PoolConfig(max_open_conns=2, max_idle_conns=1, conn_max_idle_time=0.05)
    invalidated: list[object] = []
    with engine_for(sqlite_url, pool) as engine:
        event.listen(engine, "invalidate", lambda dbapi, record, exc: invalidated.append(dbapi))
        with engine.connect() as conn:
            first = conn.connection.dbapi_connection

        def reconnected() -> bool:
            with engine.connect() as conn:
                return conn.connection.dbapi_connection is not first

        wait_until(reconnected, timeout=10, interval=0.06, message="idle connection reused")
        assert invalidated and invalidated[0] is first


def test_connection_within_conn_max_idle_time_is_reused(sqlite_url: str) -> None:
    pool = PoolConfig(max_open_conns=2, max_idle_conns=1, conn_max_idle_time=3600)
    with engine_for(sqlite_url, pool) as engine:
        with engine.connect() as conn:
            first = conn.connection.dbapi_connection
        for _ in range(3):
            with engine.connect() as conn:
                assert conn.connection.dbapi_connection is first
