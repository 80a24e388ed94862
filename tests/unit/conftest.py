"""Fixtures for the unit tests: fresh apps on a per-test SQLite file, signal handlers that are
always disconnected."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbqueue import DBQueue
from dbqueue.signals import Signal


@pytest.fixture
def make_app(sqlite_url: str) -> Iterator[Callable[..., DBQueue]]:
    """``make_app(**settings)``: a new app on this test's SQLite file, closed afterwards.

    Apps are never made current, so no test depends on (or leaks) ``current_app``.
    """
    apps: list[DBQueue] = []

    def make(main: str = "tests", **settings: Any) -> DBQueue:
        app = DBQueue(main, broker=sqlite_url, set_as_current=False, **settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., DBQueue]) -> DBQueue:
    """A fresh app with default settings on this test's SQLite file."""
    return make_app()


@pytest.fixture
def eager_app(make_app: Callable[..., DBQueue]) -> DBQueue:
    """A fresh app with ``task_always_eager`` on."""
    return make_app(task_always_eager=True)


@pytest.fixture
def connect() -> Iterator[Callable[..., Any]]:
    """``connect(signal, handler, **options)``: connect for this test only.

    The fixture keeps a strong reference to each handler (signals hold weak ones by default)
    and disconnects every handler when the test ends, so nothing leaks into other tests.
    """
    connected: list[tuple[Signal, Callable[..., Any]]] = []

    def _connect(signal: Signal, handler: Callable[..., Any], **options: Any) -> Any:
        signal.connect(handler, **options)
        connected.append((signal, handler))
        return handler

    yield _connect
    for signal, handler in connected:
        signal.disconnect(handler)
