"""Processing throughput of dbqueue on PostgreSQL with an ``app.events()`` consumer attached,
against none, in one run.

Usage: ``python benchmarks/events.py [--jobs 20000] [--repeat 3] [--config "threads -c 32"]``

Each run starts from an empty database: N no-op jobs are enqueued with the bulk API, then (in
the *consumer* runs) a subprocess subscribes to ``app.events()`` (``benchmarks/events_consumer.py``)
and the workers start; throughput = N / (last job start - first job start), as in
``benchmarks/run.py``. Runs alternate between the two modes so drift on a shared machine hits
both alike; the median of each mode and their ratio are reported, with the number of events
the consumer received (it must see a started and a completed event per job).

On a shared machine the throughput of one run moves by tens of percent, so each run also
reports the CPU time its worker processes spent per job (and the consumer's, when attached):
that figure hardly depends on what else the machine is doing. Both include process start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    RECORD_DIR_ENV,
    BenchError,
    RecordReader,
    check_alive,
    load_average,
    pg_connect,
    postgres_info,
    recreate_database,
    run_json,
    running,
    subprocess_env,
    wait_until,
)
from benchmarks.systems.base import Settings, WorkerConfig
from benchmarks.systems.dbqueue_system import DbqueuePostgres

RESULTS = Path(__file__).resolve().parent / "results" / "events.md"
MODES = ("none", "consumer")


def children_cpu() -> float:
    """CPU seconds (user + system) of the child processes that have exited and been reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class EventsBench:
    """Alternating throughput runs without and with an event consumer."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.system = DbqueuePostgres(Settings(args.pg_dsn, "", workdir))
        self.system.database = "bench_dbqueue_events"
        configs = {c.label: c for c in self.system.worker_configs()}
        if args.config not in configs:
            raise SystemExit(f"unknown --config {args.config!r}; choose from {sorted(configs)}")
        self.config: WorkerConfig = configs[args.config]
        self.runs = 0

    def log(self, message: str) -> None:
        print(f"[events] {message}", file=sys.stderr, flush=True)

    def env(self, records: Path) -> dict[str, str]:
        return subprocess_env({**self.system.env(), RECORD_DIR_ENV: str(records)})

    def subscribers(self) -> int:
        dsn = self.system.settings.dsn(self.system.database)
        with pg_connect(dsn) as conn:
            row = conn.execute("SELECT COUNT(*) FROM dbqueue_subscribers").fetchone()
        return int(row[0]) if row else 0

    def run(self, mode: str) -> dict[str, Any]:
        """One throughput measurement; with a consumer in ``consumer`` mode."""
        self.runs += 1
        base = self.workdir / f"{self.runs:02d}-{mode}"
        records, logs = base / "records", base / "logs"
        records.mkdir(parents=True)
        logs.mkdir()
        jobs = self.args.jobs
        recreate_database(self.args.pg_dsn, self.system.database)
        self.system.create_tables()
        env = self.env(records)
        fill = [sys.executable, "-m", "benchmarks.producer", self.system.tasks_module]
        run_json([*fill, "fill", str(jobs)], env, self.args.timeout, logs)
        counts_file = base / "consumer.json"
        consumer = (
            [(sys.executable, "-m", "benchmarks.events_consumer", str(counts_file))]
            if mode == "consumer"
            else []
        )
        with running(consumer, env, logs) as listeners:
            if consumer:
                wait_until(
                    lambda: (check_alive(listeners, logs), self.subscribers() == 1)[1],
                    60,
                    "the event consumer to subscribe",
                )
            reader = RecordReader(records)
            started = children_cpu()
            with running(self.config.commands, env, logs) as workers:

                def finished() -> bool:
                    check_alive(workers, logs)
                    reader.poll()
                    return len(reader.values) >= jobs

                wait_until(finished, self.args.timeout, f"{jobs} jobs to run")
            worker_cpu = children_cpu() - started
            # Completion events of the last batch may still be on their way.
            time.sleep(0.5)
        consumer_cpu = children_cpu() - started - worker_cpu
        stamps = [record.timestamp for record in reader.records]
        result: dict[str, Any] = {
            "rate": jobs / (max(stamps) - min(stamps)),
            "worker_us": worker_cpu / jobs * 1e6,
            "consumer_us": consumer_cpu / jobs * 1e6,
        }
        if consumer:
            if not counts_file.exists():
                raise BenchError(f"the consumer wrote no counts; see {logs}")
            result.update(json.loads(counts_file.read_text()))
        return result

    def measure(self) -> dict[str, list[dict[str, Any]]]:
        results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for repeat in range(self.args.repeat):
            order = MODES if repeat % 2 == 0 else MODES[::-1]
            for mode in order:
                outcome = self.run(mode)
                results[mode].append(outcome)
                extra = f", worker CPU {outcome['worker_us']:.0f} us/job"
                if mode == "consumer":
                    extra += (
                        f", consumer CPU {outcome['consumer_us']:.0f} us/job, "
                        f"events {outcome['counts']}, dropped {outcome['dropped']}"
                    )
                self.log(f"{mode}: {outcome['rate']:,.0f} jobs/s{extra}")
        return results


def render(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, info: str) -> str:
    medians = {mode: statistics.median(r["rate"] for r in runs) for mode, runs in results.items()}
    cpu = {mode: statistics.median(r["worker_us"] for r in runs) for mode, runs in results.items()}
    consumer_cpu = statistics.median(r["consumer_us"] for r in results["consumer"])
    ratio = medians["consumer"] / medians["none"]
    lines = [
        "# Event stream overhead (dbqueue on PostgreSQL)",
        "",
        f"`python benchmarks/events.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"{args.jobs:,} no-op jobs per run, workers `{args.config}`, {args.repeat} run(s) per "
        "mode, alternating; throughput = jobs / (last start - first start).",
        "",
        "| mode | runs (jobs/s) | median (jobs/s) | ratio | worker CPU per job (median) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for mode in MODES:
        rates = ", ".join(f"{r['rate']:,.0f}" for r in results[mode])
        lines.append(
            f"| {mode} | {rates} | {medians[mode]:,.0f} | {medians[mode] / medians['none']:.2f} "
            f"| {cpu[mode]:.0f} us |"
        )
    received = [r.get("counts", {}) for r in results["consumer"]]
    started = [c.get("job.started", 0) for c in received]
    completed = [c.get("job.completed", 0) for c in received]
    dropped = [r.get("dropped", 0) for r in results["consumer"]]
    lines += [
        "",
        f"Ratio with a consumer attached: **{ratio:.2f}** (target >= 0.90). Worker CPU per job "
        f"with a consumer / without: **{cpu['consumer'] / cpu['none']:.2f}**; the consumer "
        f"process itself used {consumer_cpu:.0f} us of CPU per job (two events, start-up "
        "included).",
        f"Events received per consumer run: job.started {started}, job.completed {completed}, "
        f"dropped {dropped}.",
        "",
        f"Machine: {os.cpu_count()} cores, load average {load_average()}; {info}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/events.py",
        description="dbqueue throughput with an app.events() consumer attached vs none.",
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per run (20000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (3)")
    parser.add_argument("--config", default="threads -c 32", help="worker configuration")
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1/test")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    parser.add_argument("--output", type=Path, help=f"also write the report here ({RESULTS})")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dbqueue-events-bench-"))
    bench = EventsBench(args, workdir)
    try:
        results = bench.measure()
    except BenchError as error:
        print(f"benchmark failed: {error}\nlogs kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        bench.system.teardown()
    report = render(results, args, postgres_info(args.pg_dsn))
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
