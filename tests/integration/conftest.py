"""Fixtures for the integration tests: apps on real databases and in-process worker threads.

``app`` is a DBQueue on the parametrized ``db_url`` (sqlite, postgresql, mariadb) with settings
that keep the tests fast and the connection count low; ``make_app(url, **settings)`` builds
more. ``run_worker(app, **options)`` starts a real worker in a thread (threads pool by default)
and waits until it is ready; every app is closed and every worker stopped when the test ends.
``record_signals(*signals)`` records what handlers receive, disconnecting them afterwards.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbqueue import DBQueue, signals
from tests.integration.helpers import (
    FAST_SETTINGS,
    JOB_TIMEOUT,
    Received,
    Runs,
    ThreadWorker,
)


@pytest.fixture
def make_app() -> Iterator[Callable[..., DBQueue]]:
    """``make_app(url, **settings)``: a DBQueue with the fast settings; closed at teardown."""
    apps: list[DBQueue] = []

    def make(url: str, **settings: Any) -> DBQueue:
        app = DBQueue("itest", broker=url, **{**FAST_SETTINGS, **settings})
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        with contextlib.suppress(Exception):
            app.close()


@pytest.fixture
def app(make_app: Callable[..., DBQueue], db_url: str) -> DBQueue:
    """A DBQueue on this test's database (sqlite, postgresql or mariadb), schema created."""
    created = make_app(db_url)
    _ = created.storage  # create the tables now, so tests can write SQL at once
    return created


@pytest.fixture
def run_worker(make_app: Callable[..., DBQueue]) -> Iterator[Callable[..., ThreadWorker]]:
    """``run_worker(app, pool="threads", concurrency=4, queues=None, ready=True, **options)``.

    Depends on ``make_app`` so that workers stop before their apps are closed.
    """
    started: list[ThreadWorker] = []

    def start(app: DBQueue, ready: bool = True, **options: Any) -> ThreadWorker:
        settings: dict[str, Any] = {
            "pool": "threads",
            "concurrency": 4,
            "install_signals": False,
            "show_banner": False,
            "loglevel": "WARNING",
        }
        settings.update(options)
        worker = app.Worker(**settings)
        handle = ThreadWorker(worker, threading.Thread(target=lambda: None))

        def on_ready(sender: Any, **_: Any) -> None:
            handle.ready.set()

        signals.worker_ready.connect(on_ready, sender=worker, weak=False)

        def run() -> None:
            try:
                worker.start()
            except BaseException as error:
                handle.error = error
                handle.ready.set()

        handle.thread = threading.Thread(target=run, name=f"test-worker-{len(started)}")
        handle.thread.daemon = True
        started.append(handle)
        handle.thread.start()
        try:
            if ready:
                assert handle.ready.wait(JOB_TIMEOUT), "worker never became ready"
                assert handle.error is None, f"worker failed to start: {handle.error!r}"
        finally:
            signals.worker_ready.disconnect(on_ready, sender=worker)
        return handle

    yield start
    failures = []
    for handle in reversed(started):
        if handle.thread.is_alive():
            try:
                handle.stop()
            except AssertionError as failure:
                failures.append(failure)
    if failures:
        raise failures[0]


@pytest.fixture
def record_signals() -> Iterator[Callable[..., list[Received]]]:
    """``record_signals(sig, ...)``: a list that fills with every delivery of those signals."""
    connected: list[tuple[Any, Callable[..., None]]] = []

    def record(*sigs: Any) -> list[Received]:
        seen: list[Received] = []
        for sig in sigs:

            def handler(sender: Any, _name: str = sig.name, **kwargs: Any) -> None:
                kwargs.pop("signal", None)
                seen.append(Received(_name, sender, kwargs))

            sig.connect(handler, weak=False)
            connected.append((sig, handler))
        return seen

    yield record
    for sig, handler in connected:
        sig.disconnect(handler)


@pytest.fixture
def connect_signal() -> Iterator[Callable[..., None]]:
    """``connect_signal(sig, handler)``: connect for this test only."""
    connected: list[tuple[Any, Callable[..., Any]]] = []

    def connect(sig: Any, handler: Callable[..., Any]) -> None:
        sig.connect(handler, weak=False)
        connected.append((sig, handler))

    yield connect
    for sig, handler in connected:
        sig.disconnect(handler)


@pytest.fixture
def runs() -> Runs:
    return Runs()
