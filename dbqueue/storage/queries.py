"""Named SQL statements loaded from ``sql/common.sql`` and ``sql/<dialect>.sql``.

Each statement sits under a ``-- name: <name>`` header followed by comment lines saying what it
does. A dialect file overrides a common statement of the same name. Durable workflows
(checkpoints, fan-outs) keep theirs apart, in ``durable.sql`` and ``durable_<dialect>.sql``.
``{now}`` expands to the dialect's clock expression (epoch seconds); ``IN :param`` marks an
expanding list parameter.

Most statements run through SQLAlchemy (``Query.clause``). The few on the hot path (claim,
complete, enqueue) also run straight on the driver's cursor, inside the same SQLAlchemy
transaction: :meth:`Query.render` turns them into the driver's parameter style once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from sqlalchemy import TextClause, bindparam, text

#: The database clock as epoch seconds, per dialect family. It must be stable within a statement
#: (PostgreSQL's now(), not clock_timestamp()) so that ``run_at <= {now}`` can use an index.
NOW = {
    "postgresql": "extract(epoch from now())::float8",
    "mysql": "(UNIX_TIMESTAMP(NOW(6)) + 0e0)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_EXPANDING = re.compile(r"\bIN\s+:(\w+)", re.IGNORECASE)
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class Query:
    """One named statement: its SQL text, its docstring, and the compiled SQLAlchemy clause."""

    name: str
    doc: str
    sql: str
    clause: TextClause
    expanding: tuple[str, ...] = ()
    _rendered: dict[tuple[str, tuple[int, ...]], str] = field(
        default_factory=dict, compare=False, repr=False
    )

    def render(self, style: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """SQL in the driver's ``paramstyle`` ('pyformat' or 'named') and matching params.

        Expanding list parameters become one placeholder per element.
        """
        sizes = tuple(len(params[name]) for name in self.expanding)
        key = (style, sizes)
        sql = self._rendered.get(key)
        if sql is None:
            sql = self.sql
            for name, size in zip(self.expanding, sizes, strict=True):
                items = ", ".join(f":{name}__{i}" for i in range(size)) or "NULL"
                sql = re.sub(rf"\bIN\s+:{name}\b", f"IN ({items})", sql, flags=re.IGNORECASE)
            if style == "pyformat":
                sql = _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))
            self._rendered[key] = sql
        if self.expanding:
            params = dict(params)
            for name in self.expanding:
                for i, value in enumerate(params.pop(name)):
                    params[f"{name}__{i}"] = value
        return sql, params


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
        found[name] = Query(name, doc, sql, clause, tuple(expanding))
    return found


def load(family: str) -> dict[str, Query]:
    """Every shared file (``common.sql`` first, then the others: ``control.sql``,
    ``durable.sql``), then the dialect family's own files (``<family>.sql``,
    ``durable_<family>.sql``), which override statements of the same name."""
    package = resources.files("dbqueue.storage") / "sql"
    names = sorted(entry.name[:-4] for entry in package.iterdir() if entry.name.endswith(".sql"))
    dialectal = [n for n in names if n in NOW or n.rpartition("_")[2] in NOW]
    shared = ["common", *(n for n in names if n not in dialectal and n != "common")]
    own = [family, *(n for n in dialectal if n.endswith(f"_{family}"))]
    queries: dict[str, Query] = {}
    for name in (*shared, *own):
        queries.update(parse((package / f"{name}.sql").read_text("utf-8"), NOW[family]))
    return queries
