"""Fixtures shared by all tests.

Databases: ``db_url`` (parametrized sqlite / postgresql / mariadb), ``sqlite_url``, ``pg_url``,
``mysql_url``, ``pg_database_url`` and the factory ``db_url_for(backend)``; each gives a fresh,
isolated database that is removed after the test. A server that is not reachable skips the test
(fails it when ``CI=true``). Processes: ``start_worker`` runs real ``dbqueue worker``
subprocesses; every process a test starts is killed when it ends, and a failing test's report
includes their logs. ``private_pg`` / ``private_pg_url`` give a PostgreSQL cluster of our own
that tests may stop and restart. ``write_module`` writes task modules. Tests marked ``serial``
run with no other test alongside.

Helpers live in ``tests/support``; nothing here imports dbqueue.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support import processes
from tests.support.locking import RunLock
from tests.support.modules import ModuleWriter
from tests.support.pgcluster import (
    PrivatePostgres,
    PrivatePostgresError,
    PrivatePostgresUnavailable,
)
from tests.support.processes import ManagedProcess, WorkerProcess, new_log_path
from tests.support.servers import BACKENDS, isolated_url, pg_database, skip_or_fail

_PROCESSES_BEFORE = pytest.StashKey[set[int]]()
_PROCESSES_STARTED = pytest.StashKey[list[ManagedProcess]]()


def _started_during(item: pytest.Item) -> list[ManagedProcess]:
    """Processes the test ``item`` started that are still registered."""
    before = item.stash.get(_PROCESSES_BEFORE, set())
    return [p for p in processes.live_processes() if p.pid not in before]


def _kill_test_processes(item: pytest.Item) -> None:
    """Kill every process group the test started (remembering them for the failure report)."""
    started = _started_during(item)
    item.stash[_PROCESSES_STARTED] = [*item.stash.get(_PROCESSES_STARTED, []), *started]
    processes.kill_all(started)


@contextlib.contextmanager
def _test_database(item: pytest.Item, backend: str, directory: Path) -> Iterator[str]:
    """An isolated database for one test; its processes are killed before the database goes."""
    with isolated_url(backend, directory) as url:
        try:
            yield url
        finally:
            _kill_test_processes(item)


@pytest.fixture(autouse=True)
def _test_harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Serialize ``serial`` tests across xdist workers and kill the test's processes after it."""
    request.node.stash[_PROCESSES_BEFORE] = {p.pid for p in processes.live_processes()}
    with contextlib.ExitStack() as stack:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            lock = RunLock(tmp_path_factory.getbasetemp().parent)
            serial = request.node.get_closest_marker("serial") is not None
            stack.enter_context(lock.hold(exclusive=serial))
        try:
            yield
        finally:
            _kill_test_processes(request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the processes a failing test started to its report."""
    report = yield
    if report.failed:
        seen = item.stash.get(_PROCESSES_STARTED, [])
        for proc in [*seen, *(p for p in _started_during(item) if p not in seen)]:
            report.sections.append((f"log of pid {proc.pid}: {proc.log_path}", proc.log_tail()))
    return report


@pytest.fixture(params=BACKENDS, ids=list(BACKENDS))
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL on each backend: sqlite, postgresql, mariadb."""
    with _test_database(request.node, request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``sqlite:///<tmp_path>/dbq.db``."""
    with _test_database(request.node, "sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh schema on the shared PostgreSQL server, selected by the URL's search_path."""
    with _test_database(request.node, "postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def mysql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on the shared MariaDB server."""
    with _test_database(request.node, "mariadb", tmp_path) as url:
        yield url


@pytest.fixture
def pg_database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh *database* on the shared PostgreSQL server (when a schema is not isolated enough:
    LISTEN/NOTIFY channels and advisory locks are per database)."""
    with pg_database() as url:
        try:
            yield url
        finally:
            _kill_test_processes(request.node)


@pytest.fixture
def db_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``db_url_for(backend)``: a fresh database URL for ``backend`` on every call.

    For tests that parametrize the backend themselves; accepts ``sqlite``, ``postgresql``,
    ``mariadb`` (and ``postgres``, ``pg``, ``mysql``).
    """
    counter = itertools.count(1)
    with contextlib.ExitStack() as stack:

        def make(backend: str) -> str:
            directory = tmp_path / f"db{next(counter)}"
            return stack.enter_context(_test_database(request.node, backend, directory))

        yield make


@pytest.fixture
def write_module() -> Iterator[ModuleWriter]:
    """``write_module(directory, name, source) -> name``: write an importable module.

    The directory goes on sys.path for this test only, and the module is forgotten afterwards.
    """
    writer = ModuleWriter()
    try:
        yield writer
    finally:
        writer.cleanup()


@pytest.fixture
def start_worker(tmp_path: Path) -> Callable[..., WorkerProcess]:
    """``start_worker(app_spec, broker_url, *args, cwd=tmp_path, env=None, ready=True,
    timeout=30.0)``: start a worker process, by default waiting until it is ready.

    Logs go to ``tmp_path/worker-<n>.log``; the process group is killed when the test ends.
    """

    def start(
        app_spec: str,
        broker_url: str,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready: bool = True,
        timeout: float = 30.0,
    ) -> WorkerProcess:
        worker = WorkerProcess(
            app_spec,
            broker_url,
            *args,
            cwd=cwd or tmp_path,
            log_path=new_log_path(tmp_path, "worker"),
            env=env,
        ).start()
        if ready:
            worker.wait_ready(timeout)
        return worker

    return start


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster for this xdist worker alone, which tests may stop and restart.

    Prefer ``private_pg_url``, which also restarts the cluster if a previous test left it down.
    """
    try:
        cluster = PrivatePostgres.create()
    except (PrivatePostgresUnavailable, PrivatePostgresError) as exc:
        skip_or_fail(str(exc))
    try:
        yield cluster
    finally:
        processes.kill_all()
        cluster.destroy()


@pytest.fixture
def private_pg_url(request: pytest.FixtureRequest, private_pg: PrivatePostgres) -> Iterator[str]:
    """A fresh database on the private cluster (started if it was left stopped)."""
    private_pg.ensure_running()
    with pg_database(private_pg.server) as url:
        try:
            yield url
        finally:
            _kill_test_processes(request.node)
            private_pg.ensure_running()
