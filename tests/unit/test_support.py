"""Self-tests of the test harness: isolated databases, polling, processes, private PostgreSQL."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import _kill_test_processes
from tests.support import processes
from tests.support.locking import RunLock
from tests.support.modules import ModuleWriter, write_module_file
from tests.support.pgcluster import PrivatePostgres
from tests.support.polling import wait_until
from tests.support.processes import ManagedProcess, WorkerProcess
from tests.support.servers import (
    BACKENDS,
    MARIADB,
    POSTGRESQL,
    Server,
    admin_connection,
    backend_of,
    execute,
    isolated_url,
    probe,
    require,
)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def schema_of(url: str) -> str:
    """The schema or database a connection to ``url`` lands in."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if backend_of(url) == "postgresql":
                return str(conn.exec_driver_sql("SELECT current_schema()").scalar())
            return str(conn.exec_driver_sql("SELECT DATABASE()").scalar())
    finally:
        engine.dispose()


def pg_schema_exists(name: str) -> bool:
    with admin_connection(POSTGRESQL) as conn:
        return bool(execute(conn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)))


def mariadb_database_exists(name: str) -> bool:
    with admin_connection(MARIADB) as conn:
        return bool(
            execute(
                conn, "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (name,)
            )
        )


# --- databases ---------------------------------------------------------------------------------


def test_db_url_round_trip(db_url: str, request: pytest.FixtureRequest) -> None:
    """Each backend's URL works with SQLAlchemy, and unqualified tables stay private to it."""
    assert request.node.callspec.id in BACKENDS
    assert backend_of(db_url) == request.node.callspec.id
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    table = sa.Table("probe", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    try:
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1}, {"id": 2}])
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 2
            assert sa.inspect(conn).get_table_names() == ["probe"]
    finally:
        engine.dispose()


def test_sqlite_url_is_a_file_in_tmp_path(sqlite_url: str, tmp_path: Path) -> None:
    assert sqlite_url == f"sqlite:///{tmp_path}/dbq.db"


def test_pg_url_uses_search_path_schema(pg_url: str) -> None:
    """The schema in the URL's options is where unqualified tables land."""
    name = pg_url.rsplit("%3D", 1)[1]
    assert name.startswith("t_")
    assert schema_of(pg_url) == name
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE landed (id int)")
    finally:
        engine.dispose()
    with admin_connection(POSTGRESQL) as conn:
        rows = execute(
            conn,
            "SELECT table_schema FROM information_schema.tables "
            "WHERE table_name = 'landed' AND table_schema = %s",
            (name,),
        )
    assert rows == [(name,)]


def test_mysql_url_is_a_fresh_database(mysql_url: str) -> None:
    name = mysql_url.rsplit("/", 1)[1]
    assert name.startswith("t_")
    assert schema_of(mysql_url) == name


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_each_call_is_isolated(backend: str, db_url_for: Callable[[str], str]) -> None:
    """Two databases for the same backend are distinct and do not see each other's tables."""
    first, second = db_url_for(backend), db_url_for(backend)
    assert schema_of(first) != schema_of(second)
    engine = sa.create_engine(first, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE only_in_first (id int)")
    finally:
        engine.dispose()
    other = sa.create_engine(second, poolclass=sa.pool.NullPool)
    try:
        with other.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
    finally:
        other.dispose()


def test_pg_schema_dropped_despite_lingering_sessions(tmp_path: Path) -> None:
    """Sessions left idle in a transaction holding locks are terminated so the drop succeeds."""
    import psycopg

    with isolated_url("postgresql", tmp_path) as url:
        name = schema_of(url)
        conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string()
        holds_table = psycopg.connect(conninfo)
        holds_table.execute("CREATE TABLE held (id int)")
        holds_table.commit()
        holds_table.execute("INSERT INTO held VALUES (1)")
        holds_schema = psycopg.connect(conninfo)
        holds_schema.execute("CREATE TABLE uncommitted (id int)")
    assert not pg_schema_exists(name)
    for lingering in (holds_table, holds_schema):
        with pytest.raises(psycopg.OperationalError):
            lingering.execute("SELECT 1")
        lingering.close()


def test_mariadb_database_dropped_despite_lingering_session(tmp_path: Path) -> None:
    import pymysql

    with isolated_url("mariadb", tmp_path) as url:
        name = schema_of(url)
        lingering = pymysql.connect(
            host=MARIADB.host, port=MARIADB.port, user="root", database=name
        )
        with lingering.cursor() as cursor:
            cursor.execute("CREATE TABLE held (id int)")
            cursor.execute("BEGIN")
            cursor.execute("INSERT INTO held VALUES (1)")
    assert not mariadb_database_exists(name)
    lingering.close()


def test_pg_database_url_is_a_fresh_database(pg_database_url: str) -> None:
    name = pg_database_url.rsplit("/", 1)[1]
    engine = sa.create_engine(pg_database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_database()").scalar() == name
    finally:
        engine.dispose()


# --- availability ------------------------------------------------------------------------------


@pytest.mark.parametrize("server", [POSTGRESQL, MARIADB], ids=["postgresql", "mariadb"])
def test_unreachable_server_reason(server: Server) -> None:
    port = closed_port()
    unreachable = Server(server.backend, server.label, "127.0.0.1", port, server.user, "test")
    reason = probe(unreachable)
    assert reason is not None
    assert reason.startswith(f"{server.label} not reachable at 127.0.0.1:{port}: ")
    assert "refused" in reason.lower()
    assert "\n" not in reason


def test_unreachable_server_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    unreachable = Server("postgresql", "PostgreSQL", "127.0.0.1", port, "postgres", "test")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match=f"PostgreSQL not reachable at 127.0.0.1:{port}"
    ):
        require(unreachable)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require(unreachable)


# --- polling -----------------------------------------------------------------------------------


def test_wait_until_returns_the_truthy_value() -> None:
    values = iter([0, None, "", 42])
    assert wait_until(lambda: next(values), timeout=5, interval=0.001) == 42


def test_wait_until_timeout_names_message_and_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        wait_until(lambda: [], timeout=0.2, interval=0.01, message="queue never filled")
    assert 0.2 <= time.monotonic() - started < 2
    assert "queue never filled" in str(info.value)
    assert "last value: []" in str(info.value)


def test_wait_until_ignores_listed_exceptions_only() -> None:
    outcomes: list[str | Exception] = [ConnectionError("down"), ConnectionError("down"), "up"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert wait_until(flaky, timeout=5, interval=0.001, ignore=(ConnectionError,)) == "up"

    def down() -> bool:
        raise ConnectionError("still down")

    with pytest.raises(AssertionError, match="ConnectionError"):
        wait_until(down, timeout=0.1, interval=0.01, ignore=(ConnectionError,))

    def broken() -> bool:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        wait_until(broken, timeout=5)


# --- modules and processes ---------------------------------------------------------------------


FAKE_DBQUEUE_MAIN = """
    import os, signal, subprocess, sys, time
    import importlib
    app_module = sys.argv[sys.argv.index("-A") + 1]
    app = importlib.import_module(app_module)
    print("argv", sys.argv[1:], flush=True)
    print("broker", os.environ["DBQUEUE_BROKER_URL"], flush=True)
    print("cwd", os.getcwd(), flush=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("child", child.pid, flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(app.TERM_EXIT))
    print(f"dbqueue@{app.NAME} ready.", flush=True)
    while True:
        time.sleep(0.05)
"""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_write_module_importable_then_forgotten(tmp_path: Path) -> None:
    writer = ModuleWriter()
    name = writer(tmp_path, "proj_tasks_probe", "VALUE = 1\n")
    assert __import__(name).VALUE == 1
    writer(tmp_path, "proj_tasks_probe", "VALUE = 2\n")
    assert __import__(name).VALUE == 2
    assert writer(tmp_path, "pkg_probe.tasks", "X = 'x'") == "pkg_probe.tasks"
    assert __import__("pkg_probe.tasks").tasks.X == "x"
    writer.cleanup()
    assert str(tmp_path) not in sys.path
    assert "proj_tasks_probe" not in sys.modules
    assert "pkg_probe.tasks" not in sys.modules


def test_worker_process_runs_signals_and_is_reaped(
    tmp_path: Path,
    write_module: ModuleWriter,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """WorkerProcess against a stand-in ``dbqueue`` package (the real one may not exist yet)."""
    write_module_file(tmp_path, "dbqueue.__main__", FAKE_DBQUEUE_MAIN)
    app = write_module(tmp_path, "proj_tasks", "NAME = 'probe'\nTERM_EXIT = 7\n")
    worker = start_worker(app, "sqlite:///x.db", "--concurrency", "2", timeout=20)
    log = worker.log()
    assert "argv ['worker', '-A', 'proj_tasks', '--concurrency', '2']" in log
    assert "broker sqlite:///x.db" in log
    assert f"cwd {tmp_path}" in log
    assert "dbqueue@probe ready." in log
    child = int(worker.wait_for_log(r"^child (\d+)$").group(1))
    worker.terminate()
    assert worker.wait(10) == 7
    assert pid_alive(child), "SIGTERM to the main process only must leave the child running"
    second = start_worker(app, "sqlite:///x.db", timeout=20)
    assert second.log_path != worker.log_path
    second_child = int(second.wait_for_log(r"^child (\d+)$").group(1))
    second.kill9()
    assert second.wait(10) == -signal.SIGKILL
    wait_until(lambda: not pid_alive(second_child), timeout=10, message="child survived kill9")
    processes.kill_all([worker])
    wait_until(lambda: not pid_alive(child), timeout=10, message="group kill missed the child")


def test_wait_for_log_fails_fast_with_log_when_process_exits(tmp_path: Path) -> None:
    proc = ManagedProcess(
        [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
        cwd=tmp_path,
        log_path=tmp_path / "p.log",
    ).start()
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)exited with code 3.*boom: bad config"):
        proc.wait_for_log("ready", timeout=30)
    assert time.monotonic() - started < 10


def test_interrupt_and_timeout_messages(tmp_path: Path) -> None:
    script = (
        "import time\n"
        "print('sleeping')\n"
        "try:\n"
        "    time.sleep(600)\n"
        "except KeyboardInterrupt:\n"
        "    print('bye')\n"
    )
    proc = ManagedProcess(
        [sys.executable, "-c", script], cwd=tmp_path, log_path=tmp_path / "p.log"
    ).start()
    proc.wait_for_log("^sleeping$", timeout=20)
    with pytest.raises(AssertionError, match="no log line matched 'never'"):
        proc.wait_for_log("never", timeout=0.3)
    with pytest.raises(AssertionError, match="still running"):
        proc.wait(timeout=0.1)
    proc.interrupt()
    assert proc.wait(10) == 0
    assert "bye" in proc.log()


def test_harness_kills_what_the_test_started(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sleeper = ManagedProcess(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        cwd=tmp_path,
        log_path=tmp_path / "sleeper.log",
    ).start()
    assert sleeper in processes.live_processes()
    _kill_test_processes(request.node)
    assert sleeper not in processes.live_processes()
    assert sleeper.returncode == -signal.SIGKILL


# --- serial lock -------------------------------------------------------------------------------


def test_run_lock_exclusive_excludes_shared(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    with lock.hold(exclusive=True):
        probe_fd = os.open(lock.main_path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(probe_fd)
    with lock.hold(exclusive=False), lock.hold(exclusive=False):
        pass


# --- private PostgreSQL ------------------------------------------------------------------------


def test_private_pg_restarts_and_accepts_connections_again(
    private_pg: PrivatePostgres, private_pg_url: str
) -> None:
    import psycopg

    conninfo = sa.make_url(private_pg_url).set(drivername="postgresql").render_as_string()
    with psycopg.connect(conninfo) as conn:
        conn.execute("CREATE TABLE survives (id int)")
        conn.execute("INSERT INTO survives VALUES (1)")
        conn.commit()
        private_pg.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM survives").fetchone() == (1,)
    private_pg.stop()
    assert not private_pg.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo, connect_timeout=2)
    private_pg.start()
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    timings = dict(private_pg.timings)
    assert {"start", "stop", "restart"} <= set(timings)
    print("private PostgreSQL timings:", private_pg.timings)
