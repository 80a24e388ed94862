"""Procrastinate app, tasks and producer.

``$BENCH_PG_DSN`` names the database; ``$BENCH_POOL_SIZE`` sizes the psycopg pool (the worker
needs about one connection per concurrent job, the default pool has 4). Workers start with
``procrastinate --app=benchmarks.systems.procrastinate_tasks.app worker ...``. The tasks are
coroutines, Procrastinate's fast path: sync tasks would each hop to a thread.
"""

from __future__ import annotations

import asyncio
import os

import procrastinate
from procrastinate.types import JSONDict

from benchmarks.common import record_job, record_start
from benchmarks.systems.base import Producer

POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "4"))

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ["BENCH_PG_DSN"], min_size=min(POOL_SIZE, 4), max_size=POOL_SIZE
    )
)


@app.task(name="noop")
async def noop(i: int) -> None:
    """Throughput job: records its index and start time."""
    record_job(i)


@app.task(name="ping")
async def ping(sent_at: float) -> None:
    """Latency job: records how long ago it was enqueued."""
    record_start(sent_at)


class ProcrastinateProducer(Producer):
    """Enqueues with ``defer_async`` and ``batch_defer_async`` on one event loop."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._runner.run(self._open())

    @staticmethod
    async def _open() -> None:
        await app.open_async()

    def enqueue_loop(self, count: int) -> None:
        async def loop() -> None:
            for i in range(count):
                await noop.defer_async(i=i)

        self._runner.run(loop())

    def enqueue_bulk(self, count: int) -> None:
        arguments: list[JSONDict] = [{"i": i} for i in range(count)]
        self._runner.run(noop.batch_defer_async(*arguments))

    def send_ping(self, sent_at: float) -> None:
        self._runner.run(ping.defer_async(sent_at=sent_at))

    def close(self) -> None:
        self._runner.run(app.close_async())
        self._runner.close()


def make_producer() -> Producer:
    """Entry point used by ``benchmarks.producer``."""
    return ProcrastinateProducer()
