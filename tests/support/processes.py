"""Real subprocesses for tests: dbqueue workers (and any other command), logged and reaped.

Each process runs in its own session, so it leads a process group that also holds its pool
children; :meth:`ManagedProcess.kill_group` kills the lot. Every started process is recorded
in a registry so the test harness can kill whatever a test left running and attach the logs of
a failing test's processes to its report. Should the test process itself die, the kernel kills
the main process too (``PR_SET_PDEATHSIG``, for processes started from the main thread).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tests.support.polling import wait_until

#: The repository root, put on the subprocess' PYTHONPATH so ``-m dbqueue`` works uninstalled.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: What a worker prints once it consumes, like Celery's ``celery@host ready.``.
READY_PATTERN = r"\bready\b"
#: How much of a log goes into error messages and failure reports.
LOG_TAIL_CHARS = 20_000

_registry: dict[int, ManagedProcess] = {}
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _in_main_thread() -> bool:
    """Whether we run in the main thread (PR_SET_PDEATHSIG fires when the forking thread exits)."""
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the test process dies (Linux only)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def new_log_path(directory: Path, stem: str) -> Path:
    """Create and return the first free ``<stem>-<n>.log`` in ``directory`` (n = 1, 2, ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = directory / f"{stem}-{n}.log"
        with contextlib.suppress(FileExistsError):
            path.open("x").close()
            return path
    raise AssertionError("itertools.count() is endless")


class ProcessExited(AssertionError):
    """The process exited while a test was waiting for it to log something."""


class ManagedProcess:
    """A command run in its own process group with stdout and stderr captured to a log file."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[Path] = (),
    ) -> None:
        """Describe the process; nothing runs until :meth:`start`.

        ``env`` entries are added to (or override) the test's environment; ``pythonpath``
        directories go first on PYTHONPATH, followed by the repository root.
        """
        self.argv = list(argv)
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self.extra_env = dict(env or {})
        self.pythonpath = [Path(p) for p in pythonpath]
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self._popen.pid if self._popen else None
        return f"<{type(self).__name__} pid={pid} argv={self.argv!r}>"

    def environment(self) -> dict[str, str]:
        """The environment the process gets."""
        env = dict(os.environ)
        env.update(self.extra_env)
        inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        paths = [str(p) for p in (*self.pythonpath, REPO_ROOT)]
        env["PYTHONPATH"] = os.pathsep.join([*paths, *inherited])
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def start(self) -> ManagedProcess:
        """Start the process (in a new session) and register it for reaping."""
        if self._popen is not None:
            raise RuntimeError(f"{self!r} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if _in_main_thread() else None,
            )
        _registry[self._popen.pid] = self
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        """The underlying Popen (the process must have been started)."""
        if self._popen is None:
            raise RuntimeError(f"{self!r} was not started")
        return self._popen

    @property
    def pid(self) -> int:
        """The process id, which is also its process group id."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative signal number if killed), None while running."""
        return self.popen.poll()

    def is_running(self) -> bool:
        """Whether the main process is still running."""
        return self.returncode is None

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of :meth:`log`, for error messages."""
        text = self.log()
        return text if len(text) <= chars else "[...]\n" + text[-chars:]

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = 30.0, *, after: int = 0
    ) -> re.Match[str]:
        """Poll the log until ``pattern`` matches at or after character offset ``after``.

        Pass ``after=len(proc.log())`` taken before an action to wait for a new line only.
        Fails at once, with the log, if the process exits first.
        """
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern

        def matched() -> re.Match[str] | None:
            found = regex.search(self.log(), after)
            if found is None and not self.is_running():
                found = regex.search(self.log(), after)
                if found is None:
                    raise ProcessExited(
                        f"{self!r} exited with code {self.returncode} before its log matched "
                        f"{regex.pattern!r}; log:\n{self.log_tail()}"
                    )
            return found

        try:
            return wait_until(matched, timeout=timeout, interval=0.05)
        except ProcessExited:
            raise
        except AssertionError:
            raise AssertionError(
                f"{self!r}: no log line matched {regex.pattern!r} within {timeout:g}s; "
                f"log:\n{self.log_tail()}"
            ) from None

    def send_signal(self, sig: int, *, group: bool = False) -> None:
        """Send ``sig`` to the main process, or to its whole process group."""
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.pid, sig)
            else:
                self.popen.send_signal(sig)

    def kill9(self, *, group: bool = True) -> None:
        """SIGKILL: by default the whole group (main process and pool children), like a crash."""
        self.send_signal(signal.SIGKILL, group=group)

    def terminate(self, *, group: bool = False) -> None:
        """SIGTERM to the main process (like ``kill <pid>``): a warm shutdown."""
        self.send_signal(signal.SIGTERM, group=group)

    def interrupt(self, *, group: bool = False) -> None:
        """SIGINT to the main process; ``group=True`` is what Ctrl-C in a terminal does."""
        self.send_signal(signal.SIGINT, group=group)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the main process to exit and return its exit code."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self!r} still running after {timeout:g}s; log:\n{self.log_tail()}"
            ) from None

    def kill_group(self) -> None:
        """SIGKILL the whole process group, reap the main process, and unregister it."""
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(10)
        _registry.pop(self._popen.pid, None)

    def __enter__(self) -> ManagedProcess:
        return self if self._popen is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill_group()


class WorkerProcess(ManagedProcess):
    """``python -m dbqueue worker -A <app_spec> [args]`` with ``DBQUEUE_BROKER_URL`` set.

    ``cwd`` (typically the test's ``tmp_path``, where :func:`write_module` put the app) is the
    working directory and first on PYTHONPATH. The log defaults to a new ``worker-<n>.log`` there.
    """

    def __init__(
        self,
        app_spec: str,
        broker_url: str,
        *args: str,
        cwd: Path,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        """Describe the worker; call :meth:`start`, then usually :meth:`wait_ready`."""
        self.app_spec = app_spec
        self.broker_url = broker_url
        super().__init__(
            [python, "-m", "dbqueue", "worker", "-A", app_spec, *args],
            cwd=cwd,
            log_path=log_path or new_log_path(Path(cwd), "worker"),
            env={**(env or {}), "DBQUEUE_BROKER_URL": broker_url},
            pythonpath=[Path(cwd)],
        )

    def start(self) -> WorkerProcess:
        """Start the worker process."""
        super().start()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll the log until the worker reports ``... ready.``; fail with the log otherwise."""
        self.wait_for_log(READY_PATTERN, timeout)


def live_processes() -> list[ManagedProcess]:
    """Started processes not yet reaped by :meth:`ManagedProcess.kill_group`, oldest first."""
    return list(_registry.values())


def kill_all(processes: Sequence[ManagedProcess] | None = None) -> None:
    """Kill the process groups of ``processes`` (default: every registered process)."""
    for proc in list(_registry.values()) if processes is None else processes:
        proc.kill_group()


atexit.register(kill_all)
