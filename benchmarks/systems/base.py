"""The interface every benchmarked system implements.

A system has two halves that run in different processes:

* :class:`System` lives in the driver: it names the system, resets its storage between
  workloads and says how to start its workers (one :class:`WorkerConfig` per configuration
  the throughput sweep tries).
* :class:`Producer` lives in a producer subprocess (``python -m benchmarks.producer``): it
  enqueues jobs through the system's public API. It is built by ``make_producer()`` in the
  system's *tasks module*, the same module its workers import, so task names always match.

Only the standard library is imported here, so worker processes stay light.
"""

from __future__ import annotations

import importlib.util
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from benchmarks.common import database_dsn


@dataclass(frozen=True)
class Settings:
    """Where the shared services are and where a run may write scratch files."""

    admin_dsn: str
    redis_url: str
    scratch: Path

    def dsn(self, database: str) -> str:
        """libpq URL of ``database`` on the benchmark's PostgreSQL server."""
        return database_dsn(self.admin_dsn, database)


@dataclass(frozen=True)
class WorkerConfig:
    """One way to run a system's workers: a label for the report and the processes to start."""

    label: str
    commands: tuple[tuple[str, ...], ...]
    env: Mapping[str, str] = field(default_factory=dict)


def python_module(module: str, *args: str) -> tuple[str, ...]:
    """Command running ``python -m module args`` with the driver's interpreter."""
    return (sys.executable, "-m", module, *args)


class System(ABC):
    """Driver-side adapter for one queue system on one broker."""

    key: ClassVar[str]
    """Name used on the command line (``--systems``)."""
    title: ClassVar[str]
    """Name shown in the report."""
    tasks_module: ClassVar[str]
    """Module defining the app, the ``noop``/``ping`` tasks and ``make_producer()``."""
    requires: ClassVar[tuple[str, ...]]
    """Importable modules the system needs; it is skipped when one is missing."""
    bulk_api: ClassVar[str]
    """How the bulk-enqueue workload calls the system, for the report."""
    notes: ClassVar[str] = ""
    """Caveats the report should print next to the figures (durability, polling)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def unavailable(self) -> str | None:
        """Why this system cannot run here, or ``None`` when it can."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install -r benchmarks/requirements.txt)"
        return None

    @abstractmethod
    def env(self) -> dict[str, str]:
        """Environment variables telling the tasks module where its broker is."""

    @abstractmethod
    def reset(self) -> None:
        """Give the system empty storage, schema installed, so workloads cannot interfere."""

    @abstractmethod
    def worker_configs(self) -> list[WorkerConfig]:
        """Worker configurations to try, the recommended one first."""

    @abstractmethod
    def teardown(self) -> None:
        """Release the storage used by the benchmark (called once, after the last workload)."""


class Producer(ABC):
    """Producer-side adapter: enqueues jobs through the system's own client API."""

    @abstractmethod
    def enqueue_loop(self, count: int) -> None:
        """Enqueue ``noop(i)`` for ``i`` in ``range(count)``, one API call per job."""

    @abstractmethod
    def enqueue_bulk(self, count: int) -> None:
        """Enqueue ``noop(i)`` for ``i`` in ``range(count)`` with the system's bulk API."""

    @abstractmethod
    def send_ping(self, sent_at: float) -> None:
        """Enqueue one ``ping(sent_at)`` job."""

    def close(self) -> None:
        """Close connections and pools; by default process exit releases them."""
        return None
