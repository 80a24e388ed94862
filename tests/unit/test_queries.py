"""``dbqueue/storage/queries.py`` and ``migrate.py`` without a server: every SQL file parses,
every statement the storage code runs exists for each dialect family and compiles with that
dialect, ``{now}`` and ``IN :x`` are expanded, and migration files split into statements."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite

from dbqueue.storage import migrate, queries
from dbqueue.storage.base import _STATUS_AFTER
from dbqueue.storage.control import POSTGRESQL_ONLY

FAMILIES = ("postgresql", "mysql", "sqlite")
DIALECTS = {
    "postgresql": postgresql.dialect(),
    "mysql": mysql.dialect(),
    "sqlite": sqlite.dialect(),
}
STORAGE_DIR = Path(str(resources.files("dbqueue.storage")))
SQL_FILES = sorted(p.name for p in (STORAGE_DIR / "sql").glob("*.sql"))


def statements_run_by(module: str) -> set[str]:
    """Names passed to ``self.run/raw/raw_many(conn, "<name>", ...)`` in a storage module."""
    source = (STORAGE_DIR / f"{module}.py").read_text()
    return set(re.findall(r'\.(?:run|raw|raw_many)\(\s*\w+\s*,\s*"(\w+)"', source))


#: Statements of the durable workflows' storage modules (and those they run by autocommit).
DURABLE = (
    statements_run_by("fanouts")
    | statements_run_by("checkpoints")
    | {"save_checkpoint", "flag_checkpointed"}
) - {"wake_notify", "complete_children"}
#: Statements each family needs: the shared code's (base.py, control.py, schedules.py,
#: the durable modules), the transitions ``finish`` runs by kind, and the family's own module's.
NEEDED = {
    family: statements_run_by("base")
    | (statements_run_by("control") - set(POSTGRESQL_ONLY))
    | set(_STATUS_AFTER)
    | statements_run_by(family)
    | statements_run_by("schedules")
    | DURABLE
    for family in FAMILIES
}
NEEDED["postgresql"] |= {"insert_job_notify", "wake_notify", "complete_children", *POSTGRESQL_ONLY}


def test_the_source_scan_finds_the_core_statements() -> None:
    """Guards the scan above: if it found nothing, the next test would prove nothing."""
    assert {"insert_job", "claim", "reap", "get_job", "prune"} <= statements_run_by("base")
    assert {"claim_lock", "reap_lock", "insert_jobs"} <= statements_run_by("mysql")
    assert {"pause_job", "control_requests", *POSTGRESQL_ONLY} <= statements_run_by("control")
    assert {"schedule_fire", "schedule_states", "schedule_insert"} <= statements_run_by("schedules")
    assert {"suspend", "wake", "lock_fan_outs", "count_fan_out", "cancel_jobs"} <= DURABLE
    assert "load_checkpoints" in DURABLE


@pytest.mark.parametrize("family", FAMILIES)
def test_locking_reads_are_plain_reads_on_sqlite(family: str) -> None:
    """SQLite has no row locks (its writers hold the whole database): no FOR UPDATE there."""
    for query in queries.load(family).values():
        if family == "sqlite":
            assert "FOR UPDATE" not in query.sql, query.name
    if family != "sqlite":
        assert "SKIP LOCKED" in queries.load(family)["lock_live_children"].sql


@pytest.mark.parametrize("name", SQL_FILES)
def test_every_sql_file_parses_into_documented_statements(name: str) -> None:
    source = (STORAGE_DIR / "sql" / name).read_text()
    parsed = queries.parse(source, queries.NOW["sqlite"])
    headers = re.findall(r"^--\s*name:\s*(\w+)", source, re.MULTILINE)
    assert headers, f"{name} has no statements"
    assert sorted(parsed) == sorted(set(headers))
    assert len(headers) == len(set(headers)), f"{name} defines a statement twice"
    for query in parsed.values():
        assert query.sql, f"{name}:{query.name} is empty"
        assert query.doc, f"{name}:{query.name} has no comment saying what it does"
        assert not query.sql.rstrip().endswith(";")
        assert "-- name" not in query.sql


@pytest.mark.parametrize("family", FAMILIES)
def test_every_statement_the_code_runs_exists_for_each_family(family: str) -> None:
    loaded = queries.load(family)
    missing = NEEDED[family] - set(loaded)
    assert not missing, f"{family} lacks {sorted(missing)}"
    assert {"claim", "reap", "insert_job"} <= set(loaded)


@pytest.mark.parametrize("family", FAMILIES)
def test_now_is_expanded_to_the_dialect_clock(family: str) -> None:
    loaded = queries.load(family)
    for query in loaded.values():
        assert "{now}" not in query.sql, query.name
        assert not re.search(r"\{\w+\}", query.sql), f"unexpanded placeholder in {query.name}"
    assert queries.NOW[family] in loaded["now"].sql
    assert queries.NOW[family] in loaded["claim"].sql


@pytest.mark.parametrize("family", FAMILIES)
def test_every_statement_compiles_for_its_dialect(family: str) -> None:
    for query in queries.load(family).values():
        compiled = query.clause.compile(dialect=DIALECTS[family])
        assert str(compiled), query.name


def test_dialect_files_override_common_statements() -> None:
    common = queries.parse((STORAGE_DIR / "sql" / "common.sql").read_text(), queries.NOW["sqlite"])
    assert queries.load("mysql")["insert_job"].sql != common["insert_job"].sql
    assert queries.load("sqlite")["insert_job"].sql == common["insert_job"].sql


def test_in_params_become_expanding() -> None:
    parsed = queries.parse(
        "-- name: pick\n-- Pick rows.\nSELECT * FROM t WHERE id IN :ids AND q in :queues "
        "AND x = :x",
        "now()",
    )
    params = parsed["pick"].clause._bindparams
    assert params["ids"].expanding and params["queues"].expanding
    assert not params["x"].expanding


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_in_lists_are_expanding(family: str) -> None:
    found = 0
    for query in queries.load(family).values():
        for param in re.findall(r"\bIN\s+:(\w+)", query.sql, re.IGNORECASE):
            assert query.clause._bindparams[param].expanding, f"{query.name}: {param}"
            found += 1
    assert found, f"no IN :list parameter in the {family} statements"
    compiled = queries.load(family)["revoke"].clause.compile(dialect=DIALECTS[family])
    assert "POSTCOMPILE_ids" in str(compiled)


def test_parse_separates_doc_from_sql() -> None:
    parsed = queries.parse(
        "-- file header\n\n-- name: first\n-- What it does,\n-- on two lines.\n"
        "SELECT {now};\n\n-- name: second\n-- Second.\nSELECT 2\n",
        "CLOCK()",
    )
    assert list(parsed) == ["first", "second"]
    assert parsed["first"].doc == "What it does, on two lines."
    assert parsed["first"].sql == "SELECT CLOCK()"
    assert parsed["second"].sql == "SELECT 2"


# --- migrations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_available_lists_the_initial_migration(family: str) -> None:
    migrations = migrate.available(family)
    assert migrations, family
    first = migrations[0]
    assert (first.version, first.name) == (1, "initial")
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert migrate.latest_version(family) == migrations[-1].version
    assert any("CREATE TABLE dbqueue_jobs" in s for s in first.statements)
    for statement in first.statements:
        assert statement and not statement.lstrip().startswith("--")
        assert ";" not in statement


def test_split_statements_ignores_comments_and_blank_statements() -> None:
    source = """
    -- A comment; with a semicolon.
    CREATE TABLE a (id int);
        -- indented comment
    CREATE INDEX a_id ON a (id);

    ;
    INSERT INTO a VALUES (1)
    """
    assert migrate.split_statements(source) == [
        "CREATE TABLE a (id int)",
        "CREATE INDEX a_id ON a (id)",
        "INSERT INTO a VALUES (1)",
    ]


def test_split_statements_keeps_multiline_statements_whole() -> None:
    source = "CREATE TABLE b (\n  id int,\n  -- the name\n  name text\n);\n"
    assert migrate.split_statements(source) == ["CREATE TABLE b (\n  id int,\n  name text\n)"]


def test_split_statements_of_only_comments_is_empty() -> None:
    assert migrate.split_statements("-- nothing here;\n-- at all\n") == []


def test_every_family_ships_the_same_migrations() -> None:
    """A schema change lands for all three dialects at once, under one number and name."""
    shipped = {f: [(m.version, m.name) for m in migrate.available(f)] for f in FAMILIES}
    assert shipped["postgresql"] == shipped["mysql"] == shipped["sqlite"]
    assert (2, "schedules") in shipped["sqlite"]
