"""dbqueue app, tasks and producer; the broker URL comes from ``$BENCH_DBQUEUE_BROKER``.

Workers start with ``dbqueue worker -A benchmarks.systems.dbqueue_tasks:app ...``.
"""

from __future__ import annotations

import os

from benchmarks.common import record_job, record_start
from benchmarks.systems.base import Producer
from dbqueue import DBQueue

app = DBQueue("bench", broker=os.environ["BENCH_DBQUEUE_BROKER"])
app.conf.update(result_expires=3600)


@app.task(ignore_result=True)
def noop(i: int) -> None:
    """Throughput job: records its index and start time."""
    record_job(i)


@app.task(ignore_result=True)
def ping(sent_at: float) -> None:
    """Latency job: records how long ago it was enqueued."""
    record_start(sent_at)


class DbqueueProducer(Producer):
    """Enqueues with ``delay`` (committed on return) and ``delay_many`` (one COPY on PG)."""

    def enqueue_loop(self, count: int) -> None:
        for i in range(count):
            noop.delay(i)

    def enqueue_bulk(self, count: int) -> None:
        noop.delay_many([(i,) for i in range(count)])

    def send_ping(self, sent_at: float) -> None:
        ping.delay(sent_at)


def make_producer() -> Producer:
    """Entry point used by ``benchmarks.producer``."""
    return DbqueueProducer()
