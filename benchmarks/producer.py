"""Producer subprocess: runs one client-side workload and prints its result as JSON.

Usage: ``python -m benchmarks.producer TASKS_MODULE WORKLOAD COUNT [--timeout S]``

Each workload runs in a fresh process so that no system's imports, connection pools or
event loops leak into another's measurement. Workloads:

* ``single``: one untimed warm-up enqueue (opens connections, creates lazy tables), then
  ``COUNT`` jobs one call at a time; prints ``{"seconds": elapsed}``.
* ``bulk``: the same warm-up, then one bulk call for ``COUNT`` jobs; prints ``{"seconds": ...}``.
* ``fill``: an untimed bulk enqueue of ``COUNT`` jobs for the throughput workload.
* ``latency``: with a worker already running, sends warm-up pings until the worker answers,
  then ``COUNT`` pings one by one, each only after the previous one started; prints
  ``{"latencies": [seconds, ...]}`` as recorded by the job bodies.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path

from benchmarks.common import RECORD_DIR_ENV, RecordReader, wait_until
from benchmarks.systems.base import Producer

WARM_UP_PINGS = 3
"""Pings sent before measuring latency; the first also waits for the worker to be ready."""
STARTUP_TIMEOUT = 90.0
"""Seconds the first warm-up ping may take: it waits for the worker to boot."""
PING_POLL_INTERVAL = 0.001


def measure_latencies(producer: Producer, count: int, timeout: float) -> list[float]:
    """Send ``count`` pings sequentially and return their recorded start latencies."""
    reader = RecordReader(Path(os.environ[RECORD_DIR_ENV]))

    def ping_and_wait(wait: float) -> None:
        expected = reader.poll() + 1
        producer.send_ping(time.time())
        wait_until(
            lambda: reader.poll() >= expected, wait, "a ping job to start", PING_POLL_INTERVAL
        )

    ping_and_wait(STARTUP_TIMEOUT)
    for _ in range(WARM_UP_PINGS - 1):
        ping_and_wait(timeout)
    first = reader.poll()
    for _ in range(count):
        ping_and_wait(timeout)
    return [record.value for record in reader.records[first:]]


def run(producer: Producer, workload: str, count: int, timeout: float) -> dict[str, object]:
    """Run ``workload`` with ``producer`` and return the JSON-ready result."""
    if workload == "fill":
        producer.enqueue_bulk(count)
        return {"jobs": count}
    if workload == "latency":
        return {"latencies": measure_latencies(producer, count, timeout)}
    producer.enqueue_loop(1)
    timed = producer.enqueue_loop if workload == "single" else producer.enqueue_bulk
    started = time.perf_counter()
    timed(count)
    return {"seconds": time.perf_counter() - started}


def main() -> None:
    """Parse the command line, build the system's producer and print the workload's result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks_module")
    parser.add_argument("workload", choices=["single", "bulk", "fill", "latency"])
    parser.add_argument("count", type=int)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per latency ping")
    args = parser.parse_args()
    producer: Producer = importlib.import_module(args.tasks_module).make_producer()
    try:
        result = run(producer, args.workload, args.count, args.timeout)
    finally:
        producer.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
