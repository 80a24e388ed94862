"""Periodic jobs: two schedulers at once, and still one job per fire time.

    python examples/periodic.py

Starts `dbqueue worker -B -A tasks` (a worker that also schedules) and `dbqueue beat -A tasks`
(a scheduler alone) on one SQLite file, lets them race for a few seconds over an every-second
schedule, then shows that each second enqueued exactly one job, and lists the stored schedules.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "periodic"
SECONDS = 6


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="dbqueue-periodic-"))
    os.environ.setdefault("DBQUEUE_BROKER_URL", f"sqlite:///{workdir / 'dbqueue.db'}")
    sys.path.insert(0, str(HERE))
    from tasks import app

    dbqueue = [sys.executable, "-m", "dbqueue"]
    worker = start([*dbqueue, "worker", "-A", "tasks", "-B", "-P", "threads", "--without-banner"])
    beat = start([*dbqueue, "beat", "-A", "tasks"])
    try:
        print(f"two schedulers racing for {SECONDS}s on {app.broker_url()} ...")
        time.sleep(SECONDS)
    finally:
        for process in (beat, worker):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    with app.storage.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT run_at, status, result FROM dbqueue_jobs WHERE task = 'tasks.heartbeat' "
            "ORDER BY run_at"
        ).all()
    per_second = collections.Counter(run_at for run_at, _, _ in rows)
    print(
        f"jobs fired: {len(rows)}, fire times: {len(per_second)}, "
        f"most jobs for one fire time: {max(per_second.values(), default=0)}"
    )
    for run_at, status, result in rows[:3]:
        value = json.loads(result) if result else None
        print(f"  fire time {time.strftime('%H:%M:%S', time.localtime(run_at))}: {status} {value}")
    print()
    subprocess.run([*dbqueue, "-A", "tasks", "schedules"], cwd=HERE, check=True)
    return 0


def start(command: list[str]) -> subprocess.Popen[str]:
    """Start a dbqueue process and wait until it logs that it is ready."""
    process = subprocess.Popen(
        command, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "ready." in line:
            return process
    raise SystemExit(f"{' '.join(command[2:4])} exited early with code {process.wait()}")


if __name__ == "__main__":
    raise SystemExit(main())
