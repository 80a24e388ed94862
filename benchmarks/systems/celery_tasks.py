"""Celery app, tasks and producer; the broker URL comes from ``$BENCH_CELERY_BROKER``.

Workers start with ``celery -A benchmarks.systems.celery_tasks worker ...``. No result backend
is configured and every task ignores its result, as a fire-and-forget job queue would.
"""

from __future__ import annotations

import os

from celery import Celery

from benchmarks.common import record_job, record_start
from benchmarks.systems.base import Producer

app = Celery("bench", broker=os.environ["BENCH_CELERY_BROKER"])
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(ignore_result=True)
def noop(i: int) -> None:
    """Throughput job: records its index and start time."""
    record_job(i)


@app.task(ignore_result=True)
def ping(sent_at: float) -> None:
    """Latency job: records how long ago it was enqueued."""
    record_start(sent_at)


class CeleryProducer(Producer):
    """Enqueues with ``delay``; bulk publishes every message through one acquired producer."""

    def enqueue_loop(self, count: int) -> None:
        for i in range(count):
            noop.delay(i)

    def enqueue_bulk(self, count: int) -> None:
        with app.producer_or_acquire() as producer:
            for i in range(count):
                noop.apply_async((i,), producer=producer)

    def send_ping(self, sent_at: float) -> None:
        ping.delay(sent_at)

    def close(self) -> None:
        app.close()


def make_producer() -> Producer:
    """Entry point used by ``benchmarks.producer``."""
    return CeleryProducer()
