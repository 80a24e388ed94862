"""PgQueuer factory, entrypoints and producer, using asyncpg (PgQueuer's fastest driver).

``$BENCH_PG_DSN`` names the database. The job payload is the job index, or the enqueue
timestamp for pings. Workers start with ``python -m benchmarks.systems.pgqueuer_tasks
--batch-size N``, which does what ``pgq run <factory> --batch-size N`` does (the documented
``pgqueuer.run`` on uvloop) because the ``pgq run`` command of PgQueuer 1.6 fails to parse its
``--log-level`` default with current typer releases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries

from benchmarks.common import record_job, record_start
from benchmarks.systems.base import Producer


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """Worker factory for ``pgq run``: one asyncpg connection and the two entrypoints."""
    connection = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    try:
        pgq = PgQueuer.from_asyncpg_connection(connection)

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            record_job(int(job.payload or b"-1"))

        @pgq.entrypoint("ping")
        async def ping(job: Job) -> None:
            record_start(float(job.payload or b"0"))

        yield pgq
    finally:
        await connection.close()


class PgQueuerProducer(Producer):
    """Enqueues with ``Queries.enqueue``: scalars for one job, lists for a batch."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._connection: asyncpg.Connection = self._runner.run(
            asyncpg.connect(os.environ["BENCH_PG_DSN"])
        )
        self._queries = Queries(AsyncpgDriver(self._connection))

    def enqueue_loop(self, count: int) -> None:
        async def loop() -> None:
            for i in range(count):
                await self._queries.enqueue("noop", str(i).encode())

        self._runner.run(loop())

    def enqueue_bulk(self, count: int) -> None:
        payloads: list[bytes | None] = [str(i).encode() for i in range(count)]
        self._runner.run(self._queries.enqueue(["noop"] * count, payloads, [0] * count))

    def send_ping(self, sent_at: float) -> None:
        self._runner.run(self._queries.enqueue("ping", repr(sent_at).encode()))

    def close(self) -> None:
        self._runner.run(self._connection.close())
        self._runner.close()


def make_producer() -> Producer:
    """Entry point used by ``benchmarks.producer``."""
    return PgQueuerProducer()


def main() -> None:
    """Worker process: run PgQueuer's supervisor on uvloop until SIGTERM."""
    parser = argparse.ArgumentParser(description="PgQueuer benchmark worker")
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    uvloop.run(pgqueuer.run(create_pgqueuer, batch_size=args.batch_size))


if __name__ == "__main__":
    main()
