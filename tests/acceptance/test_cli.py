"""The command line end to end (``python -m dbqueue ...`` subprocesses), and the worker banner.

Every error is one line on stderr, a non-zero exit status and no traceback.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.acceptance.conftest import FAST, module_source, run_cli
from tests.support import backend_of
from tests.support.modules import ModuleWriter
from tests.support.processes import WorkerProcess

TASKS = """
@app.task
def add(x, y):
    return {"sum": x + y, "args": [x, y]}


@app.task(max_retries=0)
def fail():
    raise ValueError("no luck")


@app.task
def mul(x, y):
    return x * y
"""


def _ok(result: object) -> str:
    """stdout of a command that must have succeeded."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)  # type: ignore[attr-defined]
    return str(result.stdout)  # type: ignore[attr-defined]


def _one_line_error(result: object) -> str:
    """The error line of a command that must have failed cleanly."""
    code, stderr = result.returncode, result.stderr  # type: ignore[attr-defined]
    assert code != 0, result
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    return str(lines[0])


@pytest.mark.slow
def test_cli_end_to_end(
    db_url: str,
    tmp_path: Path,
    write_module: ModuleWriter,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """db upgrade, call, result, status, purge against a live worker."""
    write_module(tmp_path, "cli_tasks", module_source("cli_tasks", TASKS, **FAST))

    def cli(*args: str) -> object:
        return run_cli(*args, url=db_url, cwd=tmp_path)

    assert re.match(r"Applied 0001_initial(, \d{4}_\w+)* to ", _ok(cli("db", "upgrade")))
    assert "is up to date" in _ok(cli("-A", "cli_tasks", "db", "upgrade"))

    job_id = _ok(cli("call", "-A", "cli_tasks", "cli_tasks.add", "-a", "[2, 3]")).strip()
    assert uuid.UUID(job_id)
    # By name, with no app: the task need not be importable by the producer.
    by_name = _ok(cli("call", "cli_tasks.mul", "-k", '{"x": 6, "y": 7}')).strip()
    failing = _ok(cli("call", "-A", "cli_tasks", "cli_tasks.fail")).strip()
    assert uuid.UUID(_ok(cli("call", "-Q", "q", "cli_tasks.mul", "-a", "[1, 1]")).strip())

    worker = start_worker("cli_tasks", db_url, "-P", "threads", "-c", "2", "-n", "cliworker@%h")
    name = worker.wait_for_log(r"(cliworker@\S+) ready\.").group(1)

    assert json.loads(_ok(cli("result", job_id, "--timeout", "30"))) == {
        "sum": 5,
        "args": [2, 3],
    }
    assert json.loads(_ok(cli("-A", "cli_tasks", "result", by_name, "--timeout", "30"))) == 42
    failed = cli("result", failing, "--timeout", "30")
    assert failed.returncode == 1  # type: ignore[attr-defined]
    assert failed.stdout.startswith("FAILURE: ValueError('no luck')")  # type: ignore[attr-defined]

    text = _ok(cli("status"))
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line[:2] == "  "}
    # columns: pending retrying running waiting paused completed failed cancelled
    assert rows["celery"][5:7] == ["2", "1"], text
    assert rows["q"][0] == "1", text
    assert "Workers: 1 online" in text
    assert re.search(rf"^  {re.escape(name)}  pid {worker.pid}  threads x2 ", text, re.M), text
    status = json.loads(_ok(cli("status", "--json")))
    assert status["queues"]["q"] == {"pending": 1}
    assert [w["name"] for w in status["workers"]] == [name]

    assert _ok(cli("purge", "-f", "-Q", "q")).strip() == "Purged 1 job(s) from queue(s) q."
    after = json.loads(_ok(cli("status", "--json")))
    assert "q" not in after["queues"]
    assert after["queues"]["celery"] == {"completed": 2, "failed": 1}

    missing = _one_line_error(cli("result", str(uuid.uuid4())))
    assert missing.startswith("Error: no job with id")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CLOSED_PORT_APP = """
from dbqueue import DBQueue, RetryConfig

app = DBQueue("closed_app", broker={url!r})
app.conf.update(storage_retry=RetryConfig(max_attempts=1))


@app.task
def add(x, y):
    return x + y
"""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "broker is a SQL database, not 'redis'"),
        ("amqp://guest:guest@localhost//", "broker is a SQL database, not 'amqp'"),
        ("not a url", "cannot parse broker URL"),
        ("oracle://scott:tiger@localhost/db", "unsupported database 'oracle'"),
        ("sqlite://", "in-memory SQLite database cannot be shared"),
    ],
)
def test_bad_broker_url_is_one_line(tmp_path: Path, url: str, expected: str) -> None:
    commands = [("status",), ("call", "some.task"), ("db", "upgrade")]
    for args in commands if url.startswith("redis") else commands[:1]:
        line = _one_line_error(run_cli(*args, url=url, cwd=tmp_path))
        assert line.startswith("Error: ") and expected in line, line
        assert "tiger" not in line


@pytest.mark.parametrize("command", ["worker", "status", "call"])
def test_unknown_app_module_is_one_line(tmp_path: Path, command: str) -> None:
    extra = ["x.y"] if command == "call" else []
    result = run_cli(
        command, "-A", "no_such_module", *extra, url=f"sqlite:///{tmp_path}/q.db", cwd=tmp_path
    )
    line = _one_line_error(result)
    assert line == "Error: cannot import -A 'no_such_module': No module named 'no_such_module'"


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
@pytest.mark.parametrize("command", ["worker", "status", "call", "db upgrade"])
def test_closed_port_is_one_line(
    tmp_path: Path, write_module: ModuleWriter, backend: str, command: str
) -> None:
    """Nothing listens on the broker's port: a clear error, at once (storage_retry=1 attempt)."""
    driver = "postgresql+psycopg" if backend == "postgresql" else "mysql+pymysql"
    url = f"{driver}://dbq:sekrit@127.0.0.1:{closed_port()}/dbq"
    write_module(tmp_path, "closed_app", CLOSED_PORT_APP.format(url=url))
    args = command.split()
    extra = ["closed_app.add", "-a", "[1, 2]"] if command == "call" else []
    result = run_cli(*args, "-A", "closed_app", *extra, url=None, cwd=tmp_path, timeout=30)
    line = _one_line_error(result)
    assert line.startswith("Error: ")
    assert "refused" in line.lower() or "can't connect" in line.lower(), line
    assert "sekrit" not in result.stderr + result.stdout


# -- the banner -------------------------------------------------------------------------------


def _with_password(url: str) -> str:
    """The URL with a password added (PostgreSQL's trust auth ignores it)."""
    return make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)


def test_banner(
    db_url: str,
    tmp_path: Path,
    write_module: ModuleWriter,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """App, masked broker URL, queues with their concurrency, pool, task names, ``ready.``."""
    url = _with_password(db_url) if backend_of(db_url) == "postgresql" else db_url
    write_module(tmp_path, "banner_tasks", module_source("banner_tasks", TASKS))
    worker = start_worker(
        "banner_tasks", url, "-P", "threads", "-c", "3", "-Q", "default,slow:2", "-l", "info"
    )
    worker.wait_for_log(r"\S+@\S+ ready\.$")
    log = worker.log()
    assert re.search(r"^- \*\* -+ \.> app:\s+banner_tasks:0x[0-9a-f]+$", log, re.M), log
    [broker] = re.findall(r"\.> broker:\s+(\S+)$", log, re.M)
    masked = make_url(url)
    assert broker.startswith(f"{masked.drivername}://")
    assert make_url(broker).database == masked.database
    if masked.password:
        assert "s3cret-pw" not in log
        assert f"{masked.username}:**@{masked.host}:{masked.port}/" in broker, broker
    assert re.search(r"\.> concurrency: 5 \(threads\)$", log, re.M), log
    assert re.search(r"^\s+\.> default\s+shared pool of 3$", log, re.M), log
    assert re.search(r"^\s+\.> slow\s+2 at a time$", log, re.M), log
    tasks = re.search(r"^\[tasks\]\n((?:  \. .+\n)+)", log, re.M)
    assert tasks is not None, log
    assert tasks.group(1).split() == [
        ".",
        "banner_tasks.add",
        ".",
        "banner_tasks.fail",
        ".",
        "banner_tasks.mul",
    ]
