"""The worker's start-up banner and log setup, in Celery's style."""

from __future__ import annotations

import logging
import platform
import sys
import time
from typing import TYPE_CHECKING

from dbqueue.exceptions import ImproperlyConfigured
from dbqueue.storage.engine import mask_password

if TYPE_CHECKING:
    from dbqueue.worker.worker import Worker

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
_LEVELS = {"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL"}


def parse_loglevel(level: str | int | None) -> int:
    """Celery's ``-l``: a level name in any case, or a number."""
    if level is None:
        return logging.WARNING
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name.isdigit():
        return int(name)
    if name not in _LEVELS:
        raise ImproperlyConfigured(
            f"unknown log level {level!r} (use debug, info, warning, error or critical)"
        )
    return logging.getLevelName("WARNING" if name == "WARN" else name)


def setup_logging(level: int, logfile: str | None, fmt: str = LOG_FORMAT) -> None:
    """Log to stderr (or ``logfile``) with Celery's format, unless the app configured logging."""
    root = logging.getLogger()
    handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(fmt))
    for existing in list(root.handlers):
        if getattr(existing, "_dbqueue", False):
            root.removeHandler(existing)
    handler._dbqueue = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def banner(worker: Worker) -> str:
    """Celery-style banner: node, app, broker (password masked), pool, queues, tasks."""
    app = worker.app
    conf = app.conf
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    from dbqueue import __version__

    queue_lines = []
    for group in worker.groups:
        for name in group.queues:
            if group.shared:
                limit = f"shared pool of {group.concurrency}"
            else:
                limit = f"{group.concurrency} at a time"
            queue_lines.append(f"                .> {name:<20} {limit}")
    reaper = (
        f"every {conf.stale_lock_interval:g}s, jobs of workers silent {conf.stale_lock_age:g}s"
        if conf.stale_lock_interval
        else "disabled"
    )
    tasks = sorted(name for name in app.tasks if not name.startswith("celery."))
    lines = [
        f" -------------- {worker.name} v{__version__} "
        f"({platform.system()}-{platform.release()} {started})",
        "--- ***** -----",
        "-- ******* ---- " + platform.platform(),
        "- *** --- * --- [config]",
        f"- ** ---------- .> app:         {app.main or '__main__'}:{id(app):#x}",
        f"- ** ---------- .> broker:      {mask_password(app.broker_url())}",
        f"- ** ---------- .> concurrency: {worker.total_slots} ({worker.pool_name})",
        f"- *** --- * --- .> reaper:      {reaper}",
        f"-- ******* ---- .> results:     kept {conf.result_expires} after jobs finish",
        "--- ***** ----- [queues]",
        *queue_lines,
        "",
        "[tasks]",
        *(f"  . {name}" for name in tasks),
        "",
    ]
    beat = getattr(worker, "beat", None)
    if beat is not None:
        lines += ["[schedules] (-B: fired from this worker too)"]
        lines += [f"  . {line}" for line in beat.describe()] or ["  none defined"]
        lines.append("")
    return "\n".join(lines)
