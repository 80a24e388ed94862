"""Versioned schema migrations: ``migrations/<dialect>/NNNN_name.sql``, applied in order.

Each applied version is recorded in ``dbqueue_schema``. Upgrades run under a database-wide
lock, so any number of processes may start at once; migrations never drop data (an index, at most).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from dbqueue.exceptions import SchemaError

SCHEMA_TABLE = "dbqueue_schema"
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_CREATE_SCHEMA_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} ("
    "version integer NOT NULL PRIMARY KEY, name varchar(255) NOT NULL, "
    "applied_at double precision NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    """One schema change: its version number, name and statements."""

    version: int
    name: str
    statements: tuple[str, ...]


def available(family: str) -> list[Migration]:
    """Every migration shipped for a dialect family, in version order."""
    folder = resources.files("dbqueue.storage") / "migrations" / family
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            statements = split_statements(entry.read_text("utf-8"))
            found.append(Migration(int(match[1]), match[2], tuple(statements)))
    return sorted(found, key=lambda m: m.version)


def split_statements(source: str) -> list[str]:
    """Split a migration file into statements (no semicolons inside our DDL strings)."""
    body = "\n".join(ln for ln in source.splitlines() if not ln.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def latest_version(family: str) -> int:
    """The schema version this release of dbqueue needs."""
    migrations = available(family)
    return migrations[-1].version if migrations else 0


def current_version(conn: Connection) -> int:
    """The highest applied version, 0 when dbqueue's tables are not there yet."""
    try:
        with conn.begin_nested():
            value = conn.execute(text(f"SELECT MAX(version) FROM {SCHEMA_TABLE}")).scalar()
    except DBAPIError:
        return 0
    return int(value or 0)


def read_version_on(conn: Connection) -> int:
    """The current schema version, read in a transaction of its own on ``conn``."""
    with conn.begin():
        return current_version(conn)


def read_version(engine: Engine) -> int:
    """Open a connection and read the current schema version."""
    with engine.connect() as conn, conn.begin():
        return current_version(conn)


def upgrade(engine: Engine, family: str, target: int | None = None) -> list[Migration]:
    """Apply every pending migration up to ``target`` (default: latest); returns those applied."""
    migrations = available(family)
    latest = migrations[-1].version if migrations else 0
    goal = target if target is not None else latest
    with engine.connect() as conn:
        if family == "sqlite":
            conn = conn.execution_options(dbqueue_write=True)
        with conn.begin():
            _lock(conn, family)
            conn.execute(text(_CREATE_SCHEMA_TABLE))
        applied = []
        try:
            have = read_version_on(conn)
            if have > latest:
                raise SchemaError(
                    f"dbqueue's tables are at schema version {have}, newer than this release "
                    f"understands ({latest}): upgrade dbqueue"
                )
            for migration in migrations:
                with conn.begin():
                    if current_version(conn) >= migration.version or migration.version > goal:
                        continue
                    for statement in migration.statements:
                        conn.exec_driver_sql(statement)
                    conn.execute(
                        text(
                            f"INSERT INTO {SCHEMA_TABLE} (version, name, applied_at) "
                            "VALUES (:v, :n, :t)"
                        ),
                        {"v": migration.version, "n": migration.name, "t": time.time()},
                    )
                    applied.append(migration)
        finally:
            _unlock(conn, family)
    return applied


def check(engine: Engine, family: str, url_text: str) -> None:
    """Raise :class:`SchemaError` unless the schema is exactly at this release's version."""
    have = read_version(engine)
    need = latest_version(family)
    if have == 0:
        raise SchemaError(
            f"dbqueue's tables do not exist in {url_text}: run `dbqueue db upgrade` "
            "(or leave database_auto_upgrade on)"
        )
    if have < need:
        raise SchemaError(
            f"dbqueue's tables in {url_text} are at schema version {have}, this release needs "
            f"{need}: run `dbqueue db upgrade`"
        )
    if have > need:
        raise SchemaError(
            f"dbqueue's tables in {url_text} are at schema version {have}, newer than this "
            f"release understands ({need}): upgrade dbqueue"
        )


def _lock(conn: Connection, family: str) -> None:
    """Serialise concurrent upgrades. SQLite's BEGIN IMMEDIATE already holds the write lock."""
    if family == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(hashtext('dbqueue_schema'))"))
    elif family == "mysql":
        got = conn.execute(text("SELECT GET_LOCK('dbqueue_schema', 120)")).scalar()
        if got != 1:
            raise SchemaError("timed out waiting for another process's schema upgrade")


def _unlock(conn: Connection, family: str) -> None:
    if family == "postgresql":
        conn.execute(text("SELECT pg_advisory_unlock(hashtext('dbqueue_schema'))"))
        conn.commit()
    elif family == "mysql":
        conn.execute(text("SELECT RELEASE_LOCK('dbqueue_schema')"))
        conn.commit()
