"""SQLite, the embedded default: one writer at a time (BEGIN IMMEDIATE), many processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Connection

from dbqueue.storage.base import Storage


class SQLiteStorage(Storage):
    """Storage on a SQLite file in WAL mode.

    Every write transaction starts with BEGIN IMMEDIATE, which takes the database's write lock
    up front, so a claim's read and update cannot interleave with another process's claim:
    several worker processes on one file never run a job twice.
    """

    family = "sqlite"
    paramstyle = "named"

    @contextlib.contextmanager
    def _commit_mode(self, conn: Connection, lazy: bool) -> Iterator[None]:
        """A lazy transaction commits with ``synchronous=NORMAL``: in WAL mode it is not fsynced
        (the next FULL commit, such as a job's outcome, syncs it along)."""
        if not lazy:
            yield
            return
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            raw.execute("PRAGMA synchronous=FULL")
