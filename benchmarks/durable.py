"""Durable-workflow benchmark, on PostgreSQL in one run.

1. Cost of one checkpointed step: ``call(step, i)`` inside a claimed job (in this process, so
   no worker noise), against a plain function call and against a DBOS Transact ``@DBOS.step``
   in a workflow. Reported per step: microseconds, and database transactions counted by the
   server (``pg_stat_database.xact_commit``) plus, for dbqueue, the client's statements.
2. A fan-out of N children (10,000) end to end, from ``big.delay(n)`` to the parent's
   completion, against the same N jobs enqueued flat with ``delay_many`` and run by the same
   two worker processes, from the enqueue to the last job finished. Reported as jobs/s and
   the fan-out's share of the flat throughput.

Usage: ``python benchmarks/durable.py [--steps 2000] [--children 10000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    BenchError,
    console_script,
    cpu_model,
    database_dsn,
    drop_database,
    load_average,
    package_version,
    pg_connect,
    postgres_info,
    recreate_database,
    run_checked,
    running,
    subprocess_env,
    wait_until,
)

BROKER_ENV = "BENCH_DURABLE_BROKER"
DBQUEUE_DB = "bench_durable"
DBOS_DB = "bench_dbos"
APP = "benchmarks.durable_tasks:app"


def log(message: str) -> None:
    print(f"[durable] {message}", file=sys.stderr, flush=True)


def broker_url(admin_dsn: str) -> str:
    _, _, rest = database_dsn(admin_dsn, DBQUEUE_DB).partition("://")
    return f"postgresql+psycopg://{rest}"


def dbqueue(*args: str) -> list[str]:
    script = console_script("dbqueue")
    if script != ["dbqueue"]:
        return [*script, *args]
    return [
        sys.executable,
        "-c",
        "import sys; from dbqueue.cli import main; sys.exit(main())",
        *args,
    ]


def reset(admin_dsn: str) -> None:
    """An empty database with dbqueue's tables."""
    recreate_database(admin_dsn, DBQUEUE_DB)
    env = subprocess_env({BROKER_ENV: broker_url(admin_dsn)})
    run_checked(dbqueue("db", "upgrade", "-A", APP), env)


#: Seconds a backend may keep its statistics before reporting them (PostgreSQL flushes an
#: idle backend's counters within 10 s).
STATS_DELAY = 11.0


def server_counts(dsn: str) -> tuple[int, int]:
    """(committed transactions, rows written) of a database so far, as the server counts them."""
    with pg_connect(dsn) as conn:
        row = conn.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


class ServerCounter:
    """Counts what the server records for a stretch of work, minus what an idle stretch of
    the same settle time records (background activity, and this counting itself)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        time.sleep(STATS_DELAY)
        first = server_counts(dsn)
        time.sleep(STATS_DELAY)
        self.start = server_counts(dsn)
        self.idle = (self.start[0] - first[0], self.start[1] - first[1])

    def per(self, count: int) -> tuple[float, float]:
        """(transactions, rows written) per unit of work, once the work is done."""
        time.sleep(STATS_DELAY)
        end = server_counts(self.dsn)
        xacts = end[0] - self.start[0] - self.idle[0]
        rows = end[1] - self.start[1] - self.idle[1]
        return xacts / count, rows / count


# -- 1. one step ----------------------------------------------------------------------------------


def plain_step(steps: int) -> dict[str, float]:
    from benchmarks import durable_tasks as tasks

    fn = tasks.step.run
    began = time.perf_counter()
    for i in range(steps):
        fn(i)
    elapsed = time.perf_counter() - began
    return {"us": elapsed / steps * 1e6, "xacts": 0.0, "rows": 0.0, "statements": 0.0}


@contextmanager
def counting(storage: Any) -> Iterator[dict[str, int]]:
    """Count the storage calls that reach the database: one-statement autocommits, and
    transactions (with the statements run in them)."""
    counts = {"autocommit": 0, "transactions": 0}
    originals = storage.autocommit, storage.write, storage.read

    def autocommit(*args: Any, **kwargs: Any) -> Any:
        counts["autocommit"] += 1
        return originals[0](*args, **kwargs)

    def transaction(original: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            counts["transactions"] += 1
            return original(*args, **kwargs)

        return run

    storage.autocommit = autocommit
    storage.write, storage.read = transaction(originals[1]), transaction(originals[2])
    try:
        yield counts
    finally:
        del storage.autocommit, storage.write, storage.read


def dbqueue_step(admin_dsn: str, steps: int) -> dict[str, float]:
    """``call(step, i)`` inside a job this process claimed, as a worker's thread runs it."""
    os.environ[BROKER_ENV] = broker_url(admin_dsn)
    from benchmarks import durable_tasks as tasks
    from dbqueue import call
    from dbqueue.execution import build_request
    from dbqueue.request import pop, push

    app = tasks.app
    storage = app.storage
    worker = str(uuid.uuid4())
    storage.register_worker(worker, "bench", "localhost", os.getpid(), {}, 1, "threads", {})
    tasks.flow.delay()
    (job,) = storage.claim(worker, [app.conf.task_default_queue], 1)
    request = build_request(tasks.flow, job, [], {}, "bench", worker)
    token = push(request)
    dsn = database_dsn(admin_dsn, DBQUEUE_DB)
    try:
        for i in range(20):  # warm up: connections, prepared statements, the job's flag
            call(tasks.step, i)
        counter = ServerCounter(dsn)
        with counting(storage) as counts:
            began = time.perf_counter()
            for i in range(steps):
                call(tasks.step, i)
            elapsed = time.perf_counter() - began
        xacts, rows = counter.per(steps)
    finally:
        pop(token)
        app.close()
    stored = pg_connect(dsn).execute("SELECT COUNT(*) FROM dbqueue_checkpoints").fetchone()
    assert stored is not None and stored[0] == steps + 20, stored
    return {
        "us": elapsed / steps * 1e6,
        "xacts": xacts,
        "rows": rows,
        "statements": (counts["autocommit"] + counts["transactions"]) / steps,
    }


def dbos_step(admin_dsn: str, steps: int) -> dict[str, float] | str:
    """A DBOS Transact workflow running ``steps`` ``@DBOS.step`` functions."""
    try:
        from dbos import DBOS
    except ImportError:
        return "skipped: dbos is not installed (pip install -r benchmarks/requirements.txt)"
    recreate_database(admin_dsn, DBOS_DB)
    dsn = database_dsn(admin_dsn, DBOS_DB)
    DBOS(
        config={
            "name": "dbqueue-bench",
            "system_database_url": dsn,
            "log_level": "WARNING",
            "console_log_level": "WARNING",
        }
    )
    measured: dict[str, float] = {}

    @DBOS.step()
    def dbos_add(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def dbos_flow(n: int) -> None:
        for i in range(20):
            dbos_add(i)
        counter = ServerCounter(dsn)
        began = time.perf_counter()
        for i in range(n):
            dbos_add(i)
        measured["us"] = (time.perf_counter() - began) / n * 1e6
        measured["xacts"], measured["rows"] = counter.per(n)

    DBOS.launch()
    try:
        dbos_flow(steps)
    finally:
        DBOS.destroy()
    measured["statements"] = float("nan")
    return measured


# -- 2. fan-out against flat ----------------------------------------------------------------------


def workers(admin_dsn: str, count: int, concurrency: int) -> list[list[str]]:
    return [
        dbqueue("worker", "-A", APP, "-P", "threads", "-c", str(concurrency), "-l", "warning")
        for _ in range(count)
    ]


def scalar(dsn: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with pg_connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def one_run(admin_dsn: str, n: int, fanned: bool, log_dir: Path, timeout: float) -> float:
    """Seconds from the enqueue to the last job (or the parent) finished."""
    reset(admin_dsn)
    dsn = database_dsn(admin_dsn, DBQUEUE_DB)
    env = subprocess_env({BROKER_ENV: broker_url(admin_dsn)})
    os.environ[BROKER_ENV] = broker_url(admin_dsn)
    from benchmarks import durable_tasks as tasks

    with running(workers(admin_dsn, 2, 16), env, log_dir):
        wait_until(
            lambda: scalar(dsn, "SELECT COUNT(*) FROM dbqueue_workers") == 2, 60, "two workers"
        )
        time.sleep(0.5)  # let both finish booting (banner, listener) before timing
        began = time.time()
        if fanned:
            parent = tasks.big.delay(n)
            wait_until(
                lambda: (
                    scalar(dsn, "SELECT status FROM dbqueue_jobs WHERE id = %s", (parent.id,))
                    in ("completed", "failed")
                ),
                timeout,
                "the fan-out's parent",
                interval=0.1,
            )
            status, ended = (
                scalar(dsn, "SELECT status FROM dbqueue_jobs WHERE id = %s", (parent.id,)),
                scalar(dsn, "SELECT finished_at FROM dbqueue_jobs WHERE id = %s", (parent.id,)),
            )
            if status != "completed":
                raise BenchError(f"the fan-out's parent ended {status}")
        else:
            tasks.item.delay_many([(i,) for i in range(n)])
            wait_until(
                lambda: (
                    scalar(dsn, "SELECT COUNT(*) FROM dbqueue_jobs WHERE status = 'completed'") == n
                ),
                timeout,
                "the flat jobs",
                interval=0.1,
            )
            ended = scalar(dsn, "SELECT MAX(finished_at) FROM dbqueue_jobs")
        tasks.app.close()
    return float(ended) - began


def fan_out_vs_flat(admin_dsn: str, n: int, repeat: int, timeout: float) -> dict[str, Any]:
    """Flat and fan-out runs alternate, so a change in the machine's load hits both alike;
    the medians and the median of each pair's ratio are reported."""
    flat: list[float] = []
    fanned: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as work:
        for attempt in range(repeat):
            for kind, into in (("flat", flat), ("fan-out", fanned)):
                seconds = one_run(admin_dsn, n, kind == "fan-out", Path(work), timeout)
                log(f"{kind} run {attempt + 1}/{repeat}: {n} jobs in {seconds:.2f}s")
                into.append(seconds)
    pairs = [f / g for f, g in zip(flat, fanned, strict=True)]
    return {
        "flat": statistics.median(flat),
        "fan-out": statistics.median(fanned),
        "pair ratio": statistics.median(pairs),
        "pair ratios": pairs,
    }


# -- report ---------------------------------------------------------------------------------------


def report(steps: dict[str, Any], fan: dict[str, Any], args: argparse.Namespace) -> str:
    base = steps["dbqueue call()"]
    lines = [
        f"### One checkpointed step ({args.steps} steps, PostgreSQL)",
        "",
        "| system | µs per step | ratio to dbqueue | transactions per step (server) "
        "| rows written per step (server) | statements per step (client) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, figures in steps.items():
        if isinstance(figures, str):
            lines.append(f"| {name} | {figures} | | | | |")
            continue
        statements = figures["statements"]
        shown = "n/a" if statements != statements else f"{statements:.2f}"
        lines.append(
            f"| {name} | {figures['us']:.1f} | {figures['us'] / base['us']:.3f} "
            f"| {figures['xacts']:.2f} | {figures['rows']:.2f} | {shown} |"
        )
    n = args.children
    flat, fanned = fan["flat"], fan["fan-out"]
    lines += [
        "",
        f"### {n:,} jobs end to end (two `-P threads -c 16` workers, median of {args.repeat})",
        "",
        "| run | seconds | jobs/s | ratio to flat |",
        "| --- | --- | --- | --- |",
        f"| flat: `item.delay_many(...)` | {flat:.2f} | {n / flat:,.0f} | 1.00 |",
        f"| fan-out: `fan_out([sub(item, i) ...])` in one parent | {fanned:.2f} "
        f"| {n / fanned:,.0f} | {flat / fanned:.2f} |",
        "",
        f"Fan-out throughput as a share of flat, per alternating pair: "
        f"{', '.join(f'{r:.2f}' for r in fan['pair ratios'])} (median {fan['pair ratio']:.2f}).",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, load average at start "
        f"{args.load}; PostgreSQL {postgres_info(args.pg_dsn)}; Python "
        f"{sys.version.split()[0]}; dbqueue {package_version('dbqueue')}, dbos "
        f"{package_version('dbos')}, psycopg {package_version('psycopg')}.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1/test")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    args.load = load_average()
    os.environ[BROKER_ENV] = broker_url(args.pg_dsn)

    log("step cost: plain function")
    steps: dict[str, Any] = {"plain function call": plain_step(args.steps)}
    log("step cost: dbqueue call()")
    reset(args.pg_dsn)
    steps["dbqueue call()"] = dbqueue_step(args.pg_dsn, args.steps)
    log("step cost: DBOS @DBOS.step")
    steps["DBOS Transact @DBOS.step"] = dbos_step(args.pg_dsn, args.steps)
    steps = {"dbqueue call()": steps.pop("dbqueue call()"), **steps}
    log(f"fan-out of {args.children} children against flat")
    try:
        fan = fan_out_vs_flat(args.pg_dsn, args.children, args.repeat, args.timeout)
    finally:
        for name in (DBQUEUE_DB, DBOS_DB):
            drop_database(args.pg_dsn, name)
    print(report(steps, fan, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
