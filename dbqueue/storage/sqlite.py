"""SQLite, the embedded default: one writer at a time (BEGIN IMMEDIATE), many processes."""

from __future__ import annotations

from dbqueue.storage.base import Storage


class SQLiteStorage(Storage):
    """Storage on a SQLite file in WAL mode.

    Every write transaction starts with BEGIN IMMEDIATE, which takes the database's write lock
    up front, so a claim's read and update cannot interleave with another process's claim:
    several worker processes on one file never run a job twice.
    """

    family = "sqlite"
    paramstyle = "named"
