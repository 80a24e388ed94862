"""A readers-writer lock across xdist workers, for the ``serial`` marker.

Every test holds the lock shared while it runs; a test marked ``serial`` holds it exclusively,
so no other test runs alongside it. A second "gate" lock gives the exclusive side priority:
once a serial test queues, new tests wait behind it instead of starving it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class RunLock:
    """Shared/exclusive lock built on ``flock`` over two files in a directory all workers share."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.main_path = directory / "dbqueue-tests.lock"
        self.gate_path = directory / "dbqueue-tests.gate"

    @contextlib.contextmanager
    def hold(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the lock (exclusive or shared) for the duration of the block."""
        main = os.open(self.main_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            with self._gate():
                fcntl.flock(main, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(main)

    @contextlib.contextmanager
    def _gate(self) -> Iterator[None]:
        gate = os.open(self.gate_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(gate, fcntl.LOCK_EX)
            yield
        finally:
            os.close(gate)
