"""Measurement helpers shared by the driver, the producers and the job bodies.

Job bodies run inside every system's worker processes, so the recording half of this module
imports only the standard library: each job appends one line, ``"<time.time()> <value>"``, to a
per-process file under ``$BENCH_RECORD_DIR`` with a single ``os.write`` on an ``O_APPEND``
descriptor. That costs a few microseconds and is identical for every system, which is what
makes the throughput and latency figures comparable.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import psycopg

RECORD_DIR_ENV = "BENCH_RECORD_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent

_record_lock = threading.Lock()
_record_fd: int | None = None
_record_pid: int | None = None


class BenchError(RuntimeError):
    """A workload could not be measured (timeout, crashed process, missing service)."""


def _descriptor() -> int:
    """Return this process's record file descriptor, opening it on first use.

    The pid is checked so that a forked child (Celery prefork) never writes through a
    descriptor inherited from its parent: each process owns exactly one file.
    """
    global _record_fd, _record_pid
    pid = os.getpid()
    if _record_fd is not None and _record_pid == pid:
        return _record_fd
    with _record_lock:
        if _record_fd is None or _record_pid != pid:
            path = Path(os.environ[RECORD_DIR_ENV]) / f"{pid}.log"
            _record_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _record_pid = pid
        return _record_fd


def record_job(index: int) -> None:
    """Record that job ``index`` of a throughput run is executing now."""
    os.write(_descriptor(), f"{time.time()!r} {index}\n".encode())


def record_start(sent_at: float) -> None:
    """Record the latency of a job enqueued at ``sent_at`` (epoch seconds) that starts now."""
    now = time.time()
    os.write(_descriptor(), f"{now!r} {now - sent_at!r}\n".encode())


class Record(NamedTuple):
    """One line written by a job: when it ran and its value (job index or latency)."""

    timestamp: float
    value: float


@dataclass
class RecordReader:
    """Incrementally reads the record files that jobs append to in ``directory``.

    Each call to :meth:`poll` reads only the bytes added since the previous call, so polling
    every millisecond while waiting for a latency sample stays cheap. ``values`` holds the
    distinct values seen, so a throughput run can tell N jobs from N executions.
    """

    directory: Path
    records: list[Record] = field(default_factory=list)
    values: set[float] = field(default_factory=set)
    _offsets: dict[str, int] = field(default_factory=dict)
    _partial: dict[str, bytes] = field(default_factory=dict)

    def poll(self) -> int:
        """Read new lines from every record file and return the total record count."""
        for entry in os.scandir(self.directory):
            offset = self._offsets.get(entry.name, 0)
            if entry.stat().st_size <= offset:
                continue
            with open(entry.path, "rb") as handle:
                handle.seek(offset)
                data = self._partial.pop(entry.name, b"") + handle.read()
                self._offsets[entry.name] = handle.tell()
            complete, _, rest = data.rpartition(b"\n")
            if rest:
                self._partial[entry.name] = rest
            for line in complete.splitlines():
                stamp, value = line.split()
                self.records.append(Record(float(stamp), float(value)))
                self.values.add(float(value))
        return len(self.records)


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` every ``interval`` seconds until it holds or ``timeout`` passes.

    Raises:
        BenchError: the deadline passed first; ``what`` names the awaited event.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the ``fraction`` quantile of ``values`` with linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sequence")
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def subprocess_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Environment for benchmark subprocesses: the repo root on ``PYTHONPATH`` plus ``extra``.

    The repo root makes ``benchmarks.systems.*`` (and an uninstalled ``dbqueue`` checkout)
    importable by the worker CLIs, whatever the current directory.
    """
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def console_script(name: str) -> list[str]:
    """Command prefix for an installed console script, preferring the running interpreter's."""
    beside = Path(sys.executable).with_name(name)
    return [str(beside)] if beside.exists() else [name]


def _terminate(processes: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """Stop ``processes`` gracefully, then make sure nothing of their process groups survives.

    SIGTERM goes to each group leader only, as a service manager would send it, so that a
    prefork master can shut its children down itself; once every leader has exited, or
    ``grace`` seconds have passed, each whole group gets SIGKILL.
    """
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def running(
    commands: Sequence[Sequence[str]], env: Mapping[str, str], log_dir: Path, grace: float = 10.0
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start each command in its own session (process group); stop all of them on exit.

    Output goes to ``log_dir/worker-<n>.log`` so a failed run can be diagnosed.
    """
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    try:
        for number, command in enumerate(commands):
            log = open(log_dir / f"worker-{number}.log", "ab")  # noqa: SIM115
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    list(command),
                    env=dict(env),
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        yield processes
    finally:
        _terminate(processes, grace)
        for handle in logs:
            handle.close()


def check_alive(processes: Sequence[subprocess.Popen[bytes]], log_dir: Path) -> None:
    """Raise if a worker process has exited, quoting the end of the worker logs."""
    for process in processes:
        if process.poll() is not None:
            raise BenchError(f"worker exited with code {process.returncode}\n{log_tail(log_dir)}")


def log_tail(log_dir: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of every log in ``log_dir``, for error messages."""
    parts = []
    for path in sorted(log_dir.glob("*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        if text:
            parts.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(parts)


def _run(
    command: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    watch: Callable[[], None] | None = None,
) -> tuple[int, str, str]:
    """Run ``command`` in its own process group; return its exit code, stdout and stderr.

    ``watch`` is called about every 0.2 s while waiting and may raise to abort (the driver
    uses it to notice a dead worker). The whole group is killed if the command overruns
    ``timeout`` (then BenchError), if ``watch`` raises, or if the driver is interrupted.
    """
    process = subprocess.Popen(
        list(command),
        env=dict(env),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                out, err = process.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise BenchError(f"{' '.join(command)} timed out after {timeout:.0f}s")
                if watch:
                    watch()
    finally:
        if process.poll() is None:
            _terminate([process], grace=1.0)
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def run_checked(command: Sequence[str], env: Mapping[str, str], timeout: float = 120.0) -> None:
    """Run a setup command (schema install, migrations) and raise with its output if it fails."""
    code, out, err = _run(command, env, timeout)
    if code != 0:
        raise BenchError(f"{' '.join(command)} failed (exit {code}):\n{(out + err).strip()}")


def run_json(
    command: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    log_dir: Path,
    watch: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run a producer subprocess to completion and return the JSON object it prints last.

    Its stderr is appended to ``log_dir/producer.log``; ``watch`` is as for :func:`_run`.
    """
    code, out, err = _run(command, env, timeout, watch)
    with (log_dir / "producer.log").open("a") as log:
        log.write(err)
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        raise BenchError(f"producer failed (exit {code})\n{log_tail(log_dir)}")
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise BenchError(f"producer printed {lines[-1]!r}, not a JSON object")
    return result


def pg_connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    """Open an autocommit psycopg connection to ``dsn``."""
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def recreate_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` (disconnecting its clients) and create it empty."""
    with pg_connect(admin_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting its clients."""
    with pg_connect(admin_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_dsn(admin_dsn: str, name: str) -> str:
    """URL of database ``name`` on the server that the ``admin_dsn`` URL points at."""
    return urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    """Installed version of distribution ``name``, or ``"not installed"``."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def postgres_info(admin_dsn: str) -> str:
    """Server version and the settings that decide what a commit costs."""
    try:
        with pg_connect(admin_dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            settings = conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('fsync', 'synchronous_commit') ORDER BY name"
            ).fetchall()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    durability = ", ".join(f"{name}={value}" for name, value in settings)
    return f"{version[0] if version else 'unknown'} ({durability})"


def redis_info(redis_url: str) -> str:
    """Server version and persistence settings (they decide what an enqueue costs)."""
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            version = client.info("server")["redis_version"]
            aof = client.config_get("appendonly").get("appendonly")
            save = client.config_get("save").get("save")
        finally:
            client.close()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    return f"{version} (appendonly={aof}, save={save!r})"


def load_average() -> str:
    """The 1, 5 and 15-minute load averages: other activity on the machine skews figures."""
    return " / ".join(f"{load:.2f}" for load in os.getloadavg())


def machine_info(admin_dsn: str, redis_url: str) -> dict[str, str]:
    """Facts needed to reproduce a run: hardware, interpreter, servers and library versions."""
    packages = ["dbqueue", "celery", "kombu", "procrastinate", "pgqueuer", "sqlalchemy"]
    packages += ["psycopg", "asyncpg", "redis"]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load average at start (1/5/15 min)": load_average(),
        "postgresql": postgres_info(admin_dsn),
        "redis": redis_info(redis_url),
        "packages": ", ".join(f"{name} {package_version(name)}" for name in packages),
    }
