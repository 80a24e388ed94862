"""Named SQL statements loaded from ``sql/common.sql`` and ``sql/<dialect>.sql``.

Each statement sits under a ``-- name: <name>`` header followed by comment lines saying what it
does. A dialect file overrides a common statement of the same name. ``{now}`` expands to the
dialect's clock expression (epoch seconds); ``IN :param`` marks an expanding list parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import TextClause, bindparam, text

#: The database clock as epoch seconds, per dialect family.
NOW = {
    "postgresql": "extract(epoch from clock_timestamp())::float8",
    "mysql": "(UNIX_TIMESTAMP(NOW(6)) + 0e0)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_EXPANDING = re.compile(r"\bIN\s+:(\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class Query:
    """One named statement: its SQL text, its docstring, and the compiled SQLAlchemy clause."""

    name: str
    doc: str
    sql: str
    clause: TextClause


def parse(source: str, now: str) -> dict[str, Query]:
    """Parse a SQL file into named queries."""
    found: dict[str, Query] = {}
    parts = _HEADER.split(source)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        doc = " ".join(ln.lstrip("-").strip() for ln in lines if ln.startswith("--"))
        sql = "\n".join(ln for ln in lines if not ln.startswith("--")).strip().rstrip(";")
        sql = sql.replace("{now}", now)
        clause = text(sql)
        expanding = _EXPANDING.findall(sql)
        if expanding:
            clause = clause.bindparams(*(bindparam(p, expanding=True) for p in expanding))
        found[name] = Query(name, doc, sql, clause)
    return found


def load(family: str) -> dict[str, Query]:
    """Common queries overridden by the dialect family's own file."""
    package = resources.files("dbqueue.storage") / "sql"
    queries = parse((package / "common.sql").read_text("utf-8"), NOW[family])
    queries.update(parse((package / f"{family}.sql").read_text("utf-8"), NOW[family]))
    return queries
