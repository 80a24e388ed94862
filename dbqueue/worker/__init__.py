"""The worker: claim loop, pools, group commit, heartbeat, reaper."""

from __future__ import annotations

from dbqueue.worker.worker import Worker, parse_queues

__all__ = ["Worker", "parse_queues"]
