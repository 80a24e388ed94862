"""Helpers shared by the test suite; the fixtures that use them live in ``tests/conftest.py``."""

from tests.support.modules import ModuleWriter, write_module_file
from tests.support.pgcluster import PrivatePostgres
from tests.support.polling import wait_until
from tests.support.processes import ManagedProcess, WorkerProcess
from tests.support.servers import (
    BACKENDS,
    MARIADB,
    POSTGRESQL,
    Server,
    backend_of,
    in_ci,
    isolated_url,
    require,
)

__all__ = [
    "BACKENDS",
    "MARIADB",
    "POSTGRESQL",
    "ManagedProcess",
    "ModuleWriter",
    "PrivatePostgres",
    "Server",
    "WorkerProcess",
    "backend_of",
    "in_ci",
    "isolated_url",
    "require",
    "wait_until",
    "write_module_file",
]
