"""Quickstart: start a real worker process on the embedded SQLite default and run jobs on it.

    python examples/quickstart.py

The worker is `dbqueue worker -A tasks`, exactly what you would run in production; this script
only plays the producer: it enqueues jobs, waits for their results and prints them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "quickstart"


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="dbqueue-quickstart-"))
    os.environ.setdefault("DBQUEUE_BROKER_URL", f"sqlite:///{workdir / 'dbqueue.db'}")
    sys.path.insert(0, str(HERE))
    from tasks import add, app, daily_report, divide, fetch_title, flaky_charge

    print(f"broker: {app.broker_url()}")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dbqueue",
            "worker",
            "-A",
            "tasks",
            "-P",
            "threads",
            "-c",
            "4",
            "-l",
            "info",
            "--without-banner",
        ],
        cwd=HERE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(worker)
        threading.Thread(target=echo, args=(worker,), daemon=True).start()
        started = time.perf_counter()
        sums = add.delay_many([(i, i) for i in range(10)])
        print("add(i, i) for i in 0..9 ->", [r.get(timeout=30) for r in sums])
        print("fetch_title ->", fetch_title.delay("https://example.org").get(timeout=30))
        print("flaky_charge ->", flaky_charge.delay(42).get(timeout=30))
        first = daily_report.apply_async(("2026-11-22",), countdown=0.5)
        second = daily_report.delay("2026-11-22")
        print(
            "daily_report twice -> same job:", first.id == second.id, "->", second.get(timeout=30)
        )
        failed = divide.delay(1, 0)
        failed.get(timeout=30, propagate=False)
        print(f"divide(1, 0) -> {failed.state}: {failed.result!r}")
        print(f"done in {time.perf_counter() - started:.2f}s")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    return 0


def wait_ready(worker: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Block until the worker logs that it is ready (it prints Celery's 'ready.' line)."""
    assert worker.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = worker.stderr.readline()
        if not line:
            raise SystemExit(f"worker exited early with code {worker.wait()}")
        if "ready." in line:
            return
    raise SystemExit("worker did not become ready in time")


def echo(worker: subprocess.Popen[str]) -> None:
    """Show the worker's own log lines (received / succeeded / retry) as they happen."""
    assert worker.stderr is not None
    for line in worker.stderr:
        print("  worker |", line.rstrip().split("] ", 1)[-1])


if __name__ == "__main__":
    raise SystemExit(main())
