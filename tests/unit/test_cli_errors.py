"""``dbqueue/cli.py`` in-process with click's CliRunner, on SQLite brokers given with ``-b``:
one-line errors with a non-zero status for bad input, and the small round trips (db upgrade,
call, result, purge) that need no worker."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dbqueue import DBQueue
from dbqueue.cli import main
from dbqueue.storage import migrate


@pytest.fixture(autouse=True)
def _no_traceback_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBQUEUE_TRACEBACK", raising=False)
    monkeypatch.delenv("DBQUEUE_BROKER_URL", raising=False)


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error")]


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """A non-zero exit, exactly one ``Error`` line naming ``fragments``, and no traceback."""
    assert result.exit_code not in (0, None), result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), f"unhandled exception: {result.exception!r}"
    assert "Traceback" not in result.output
    [line] = error_lines(result)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args_json", ["[1,", "not json", "{'a': 1}"])
def test_call_with_invalid_args_json(sqlite_url: str, args_json: str) -> None:
    result = run("-b", sqlite_url, "call", "proj.add", "--args", args_json)
    line = assert_one_line_error(result, "--args", "JSON")
    assert "list" in line
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists(), "nothing was opened"


@pytest.mark.parametrize(
    ("args_json", "kind"), [('{"a": 1}', "dict"), ("5", "int"), ('"x"', "str")]
)
def test_call_with_args_that_are_not_a_list(sqlite_url: str, args_json: str, kind: str) -> None:
    result = run("-b", sqlite_url, "call", "proj.add", "--args", args_json)
    assert_one_line_error(result, "--args", kind)


def test_call_with_kwargs_that_are_not_an_object(sqlite_url: str) -> None:
    result = run("-b", sqlite_url, "call", "proj.add", "--kwargs", "[1, 2]")
    assert_one_line_error(result, "--kwargs", "list")


def test_call_with_bad_eta(sqlite_url: str) -> None:
    result = run("-b", sqlite_url, "call", "proj.add", "--eta", "tomorrow-ish")
    assert_one_line_error(result, "--eta", "tomorrow-ish")


def test_result_of_an_unknown_id(sqlite_url: str) -> None:
    missing = str(uuid.uuid4())
    assert run("-b", sqlite_url, "db", "upgrade").exit_code == 0
    result = run("-b", sqlite_url, "result", missing)
    assert_one_line_error(result, missing)
    assert result.stdout == ""


@pytest.mark.parametrize("broker", ["redis://localhost:6379/0", "amqp://guest@localhost//"])
@pytest.mark.parametrize("command", [["status"], ["purge", "-f"], ["call", "proj.add"]])
def test_non_sql_broker(broker: str, command: list[str]) -> None:
    result = run("-b", broker, *command)
    line = assert_one_line_error(result, "SQL")
    assert "postgresql" in line and "sqlite" in line


def test_broker_option_after_the_subcommand(sqlite_url: str) -> None:
    result = run("status", "-b", "redis://h/0")
    assert_one_line_error(result, "SQL")


def test_worker_without_app_is_a_usage_error() -> None:
    result = run("worker")
    assert result.exit_code == 2
    assert_one_line_error(result, "-A")
    assert "Usage:" in result.stderr


def test_unimportable_app(sqlite_url: str) -> None:
    result = run("-A", "dbq_no_such_project_xyz", "-b", sqlite_url, "status")
    assert_one_line_error(result, "dbq_no_such_project_xyz")


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.exit_code == 2
    assert "frobnicate" in result.stderr


# --- round trips ---------------------------------------------------------------------------------


def test_db_upgrade_twice(sqlite_url: str) -> None:
    first = run("-b", sqlite_url, "db", "upgrade")
    assert first.exit_code == 0, first.output
    shipped = ", ".join(f"{m.version:04d}_{m.name}" for m in migrate.available("sqlite"))
    assert first.stdout.strip() == f"Applied {shipped} to {sqlite_url}"
    second = run("db", "upgrade", "-b", sqlite_url)
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == f"{sqlite_url} is up to date"


def test_call_then_result_shows_pending(sqlite_url: str) -> None:
    called = run(
        "-b", sqlite_url, "call", "proj.add", "--args", "[1, 2]", "--kwargs", '{"z": 3}',
        "-Q", "math", "--priority", "4",
    )  # fmt: skip
    assert called.exit_code == 0, called.output
    job_id = called.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id)
    shown = run("-b", sqlite_url, "result", job_id)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == "PENDING"
    app = DBQueue("check", broker=sqlite_url, set_as_current=False)
    try:
        job = app.storage.get_job(job_id)
        assert (job["task"], job["queue"], job["priority"]) == ("proj.add", "math", 4)
        assert bytes(job["payload"]) == b'[[1, 2], {"z": 3}]'
    finally:
        app.close()


def test_result_of_a_revoked_job_exits_non_zero(sqlite_url: str) -> None:
    job_id = run("-b", sqlite_url, "call", "proj.add").stdout.strip()
    app = DBQueue("check", broker=sqlite_url, set_as_current=False)
    try:
        app.AsyncResult(job_id).revoke()
    finally:
        app.close()
    shown = run("-b", sqlite_url, "result", job_id)
    assert shown.exit_code == 1
    assert shown.stdout.startswith("REVOKED")


def test_purge_force_reports_the_count(sqlite_url: str) -> None:
    for queue in ("a", "a", "b"):
        assert run("-b", sqlite_url, "call", "proj.job", "-Q", queue).exit_code == 0
    only_b = run("-b", sqlite_url, "purge", "-f", "-Q", "b")
    assert only_b.exit_code == 0, only_b.output
    assert only_b.stdout.strip() == "Purged 1 job(s) from queue(s) b."
    rest = run("-b", sqlite_url, "purge", "-f")
    assert rest.stdout.strip() == "Purged 2 job(s) from all queues."
    again = run("-b", sqlite_url, "purge", "-f")
    assert again.stdout.strip() == "Purged 0 job(s) from all queues."


def test_purge_asks_first_and_can_be_declined(sqlite_url: str) -> None:
    run("-b", sqlite_url, "call", "proj.job")
    declined = run("-b", sqlite_url, "purge", input="n\n")
    assert declined.exit_code != 0
    assert "no undo" in declined.output
    accepted = run("-b", sqlite_url, "purge", input="y\n")
    assert accepted.exit_code == 0
    assert "Purged 1 job(s)" in accepted.stdout


@pytest.mark.parametrize("command", [["status"], ["result", "some-id"], ["purge", "-f"]])
def test_reading_commands_do_not_create_a_missing_sqlite_file(tmp_path, command) -> None:
    path = tmp_path / "typo.db"
    result = run("-b", f"sqlite:///{path}", *command)
    assert_one_line_error(result, "no SQLite database", str(path))
    assert not path.exists()


def test_status_counts_jobs_per_queue(sqlite_url: str) -> None:
    assert run("-b", sqlite_url, "db", "upgrade").exit_code == 0
    empty = run("-b", sqlite_url, "status")
    assert empty.exit_code == 0, empty.output
    assert "Queues: none" in empty.stdout
    assert "Workers: 0 online" in empty.stdout
    run("-b", sqlite_url, "call", "proj.job", "-Q", "reports")
    shown = run("-b", sqlite_url, "status")
    [row] = [line for line in shown.stdout.splitlines() if line.strip().startswith("reports")]
    assert row.split()[:2] == ["reports", "1"], "one pending job"
