"""Database servers the tests use: availability checks and isolated databases per test.

Every test gets its own database: a file for SQLite, a fresh schema (or database) on the shared
PostgreSQL server, a fresh database on the shared MariaDB server. A server that cannot be
reached makes the test skip, or fail when ``CI=true``; the reason names host, port and error.
The database drivers are imported lazily, so this module loads without them.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

#: Backend names, in the order tests are parametrized over them (also the test ids).
BACKENDS = ("sqlite", "postgresql", "mariadb")
#: Other spellings accepted by :func:`isolated_url`.
ALIASES = {"postgres": "postgresql", "pg": "postgresql", "mysql": "mariadb"}
#: Seconds to wait for a server to accept a connection.
CONNECT_TIMEOUT = 3
#: Seconds a teardown may spend dropping a database before it gives up.
DROP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Server:
    """A database server the tests connect to as an administrator."""

    backend: str
    label: str
    host: str
    port: int
    user: str
    database: str

    @property
    def driver(self) -> str:
        """The SQLAlchemy driver name tests hand to dbqueue."""
        return "postgresql+psycopg" if self.backend == "postgresql" else "mysql+pymysql"

    def url(self, database: str | None = None, query: str = "") -> str:
        """A SQLAlchemy URL for ``database`` (default: the admin database) on this server."""
        name = self.database if database is None else database
        return f"{self.driver}://{self.user}@{self.host}:{self.port}/{name}{query}"


POSTGRESQL = Server("postgresql", "PostgreSQL", "127.0.0.1", 5432, "postgres", "test")
MARIADB = Server("mariadb", "MariaDB", "127.0.0.1", 3306, "root", "test")
SERVERS = {server.backend: server for server in (POSTGRESQL, MARIADB)}

_availability: dict[Server, str | None] = {}


def in_ci() -> bool:
    """Whether the tests run in CI, where a missing server is a failure rather than a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test with ``reason``, or fail it when running in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so a missing service is a failure)", pytrace=False)
    pytest.skip(reason)


def new_name() -> str:
    """A fresh schema or database name, ``t_`` followed by 12 hex digits."""
    return f"t_{secrets.token_hex(6)}"


def normalize_backend(backend: str) -> str:
    """The canonical backend name for ``backend`` (``mysql`` -> ``mariadb`` and so on)."""
    name = ALIASES.get(backend, backend)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    return name


def backend_of(url: str) -> str:
    """The backend name (``sqlite``, ``postgresql``, ``mariadb``) of a SQLAlchemy URL."""
    scheme = url.partition("://")[0].split("+")[0]
    return normalize_backend(scheme)


@contextlib.contextmanager
def admin_connection(server: Server, database: str | None = None) -> Iterator[Any]:
    """An autocommit DB-API connection to ``server`` as its administrator."""
    name = server.database if database is None else database
    conn: Any
    if server.backend == "postgresql":
        import psycopg

        conn = psycopg.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            dbname=name,
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
        )
    else:
        import pymysql

        conn = pymysql.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password="",
            database=name,
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
        )
    try:
        yield conn
    finally:
        conn.close()


def execute(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a DB-API connection; return its rows (empty if it has none)."""
    with conn.cursor() as cursor:
        cursor.execute(sql, params or None)
        return list(cursor.fetchall()) if cursor.description else []


def probe(server: Server) -> str | None:
    """Connect to ``server`` now: None if it works, else why not (host, port and error)."""
    try:
        with admin_connection(server) as conn:
            execute(conn, "SELECT 1")
    except Exception as exc:
        error = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
        return f"{server.label} not reachable at {server.host}:{server.port}: {error}"
    return None


def unavailable_reason(server: Server) -> str | None:
    """:func:`probe` once per process (each xdist worker checks once), then the cached answer."""
    if server not in _availability:
        _availability[server] = probe(server)
    return _availability[server]


def require(server: Server) -> None:
    """Skip (or in CI fail) the current test unless ``server`` is reachable."""
    reason = unavailable_reason(server)
    if reason is not None:
        skip_or_fail(reason)


def sqlite_url(directory: Path) -> str:
    """The URL of a SQLite database file ``dbq.db`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'dbq.db'}"


@contextlib.contextmanager
def isolated_url(backend: str, directory: Path) -> Iterator[str]:
    """A URL to a fresh, empty database for ``backend``, removed on exit.

    ``directory`` holds the SQLite file; server backends skip or fail per :func:`require`.
    """
    name = normalize_backend(backend)
    if name == "sqlite":
        yield sqlite_url(directory)
    elif name == "postgresql":
        with pg_schema() as url:
            yield url
    else:
        with mariadb_database() as url:
            yield url


@contextlib.contextmanager
def pg_schema(server: Server = POSTGRESQL) -> Iterator[str]:
    """A fresh schema ``t_<random>`` made the connection's search_path via the URL."""
    require(server)
    name = new_name()
    with admin_connection(server) as conn:
        execute(conn, f'CREATE SCHEMA "{name}"')
    try:
        yield server.url(query=f"?options=-csearch_path%3D{name}")
    finally:
        drop_pg_schema(server, name)


def drop_pg_schema(server: Server, name: str) -> None:
    """``DROP SCHEMA ... CASCADE``, terminating sessions that hold locks in it if need be."""
    import psycopg

    deadline = time.monotonic() + DROP_TIMEOUT
    with admin_connection(server) as conn:
        execute(conn, "SET lock_timeout = '1s'")
        while True:
            try:
                execute(conn, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                return
            except psycopg.errors.LockNotAvailable:
                if time.monotonic() > deadline:
                    raise
                terminate_pg_lock_holders(conn, name)


def terminate_pg_lock_holders(conn: Any, schema: str) -> list[int]:
    """Terminate other sessions holding locks on ``schema`` or objects in it; their pids."""
    rows = execute(
        conn,
        """
        SELECT DISTINCT l.pid, pg_terminate_backend(l.pid)
        FROM pg_locks l
        JOIN pg_namespace n ON n.nspname = %s
        LEFT JOIN pg_class c ON c.oid = l.relation
        WHERE l.pid <> pg_backend_pid()
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND (c.relnamespace = n.oid
               OR (l.classid = 'pg_namespace'::regclass AND l.objid = n.oid))
        """,
        (schema,),
    )
    return [row[0] for row in rows]


@contextlib.contextmanager
def pg_database(server: Server = POSTGRESQL) -> Iterator[str]:
    """A fresh database ``t_<random>`` on a PostgreSQL server, dropped WITH (FORCE) on exit.

    For tests that need more isolation than a schema gives (LISTEN/NOTIFY channels and advisory
    locks are per database).
    """
    require(server)
    name = new_name()
    with admin_connection(server) as conn:
        execute(conn, f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        with admin_connection(server) as conn:
            execute(conn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def mariadb_database(server: Server = MARIADB) -> Iterator[str]:
    """A fresh database ``t_<random>`` on the MariaDB server, dropped on exit."""
    require(server)
    name = new_name()
    with admin_connection(server) as conn:
        execute(conn, f"CREATE DATABASE `{name}`")
    try:
        yield server.url(name)
    finally:
        drop_mariadb_database(server, name)


def drop_mariadb_database(server: Server, name: str) -> None:
    """``DROP DATABASE``, first killing the sessions still using it (the test is over)."""
    import pymysql

    deadline = time.monotonic() + DROP_TIMEOUT
    with admin_connection(server) as conn:
        execute(conn, "SET SESSION lock_wait_timeout = 1")
        while True:
            kill_mariadb_sessions(conn, name)
            try:
                execute(conn, f"DROP DATABASE IF EXISTS `{name}`")
                return
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != 1205 or time.monotonic() > deadline:
                    raise


def kill_mariadb_sessions(conn: Any, database: str) -> list[int]:
    """Kill other sessions whose current database is ``database``; their ids."""
    rows = execute(
        conn,
        "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
        (database,),
    )
    killed = []
    for (session_id,) in rows:
        with contextlib.suppress(Exception):
            execute(conn, f"KILL {int(session_id)}")
            killed.append(int(session_id))
    return killed
