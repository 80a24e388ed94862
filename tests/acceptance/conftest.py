"""Fixtures of the acceptance tests: task modules that real worker processes import.

``load_tasks(name, body, url, **settings)`` writes a task module into the test's directory (the
workers' working directory), creates the ``effects``/``flags`` tables, points this process at
``url`` through ``DBQUEUE_BROKER_URL`` and imports the module here too, so the test enqueues
with the very tasks the workers run. Its app's connections are closed when the test ends.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.acceptance import effects
from tests.support.modules import ModuleWriter
from tests.support.processes import REPO_ROOT

#: Fast crash recovery: heartbeats every 0.3 s, a worker silent for 2 s is presumed dead.
FAST: dict[str, Any] = {
    "worker_heartbeat_interval": 0.3,
    "stale_lock_interval": 0.3,
    "stale_lock_age": 2.0,
    "worker_poll_interval": 0.1,
}
#: Few connections per process: PostgreSQL allows 100 for every test running in parallel.
LEAN: dict[str, Any] = {"broker_pool_preset": "resource_constrained"}

PRELUDE = """\
import asyncio
import os
import time

from dbqueue import DBQueue
from tests.acceptance import effects

app = DBQueue({name!r})
app.conf.update({settings!r})
"""


def module_source(name: str, body: str, **settings: Any) -> str:
    """A task module: the app ``name`` with LEAN settings (and ``settings``), then ``body``."""
    prelude = PRELUDE.format(name=name, settings={**LEAN, **settings})
    return prelude + "\n" + textwrap.dedent(body).lstrip("\n")


@pytest.fixture
def load_tasks(
    tmp_path: Path, write_module: ModuleWriter, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ModuleType]]:
    """``load_tasks(name, body, url, **settings)`` -> the imported task module."""
    loaded: list[ModuleType] = []

    def load(name: str, body: str, url: str, **settings: Any) -> ModuleType:
        monkeypatch.setenv("DBQUEUE_BROKER_URL", url)
        effects.create_tables(url)
        write_module(tmp_path, name, module_source(name, body, **settings))
        module = importlib.import_module(name)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        app = getattr(module, "app", None)
        if app is not None:
            app.close()
    for engine in effects._engines.values():
        engine.dispose()
    effects._engines.clear()


def run_cli(
    *args: str,
    url: str | None,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """``python -m dbqueue <args>`` in ``cwd`` with ``DBQUEUE_BROKER_URL=url``; output captured."""
    environment = dict(os.environ)
    environment.pop("DBQUEUE_BROKER_URL", None)
    environment.pop("DBQUEUE_TRACEBACK", None)
    if url is not None:
        environment["DBQUEUE_BROKER_URL"] = url
    environment.update(env or {})
    environment["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO_ROOT)])
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "dbqueue", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
