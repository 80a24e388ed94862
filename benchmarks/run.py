"""Benchmark driver: runs the same four workloads against every system and reports them.

Usage: ``python benchmarks/run.py [--jobs 10000] [--systems dbqueue-pg,celery-redis] [--quick]``

Workloads, each on freshly reset storage (see ``benchmarks/README.md``):

1. enqueue rate, single: jobs enqueued one call at a time, no worker running;
2. enqueue rate, bulk: the system's bulk API, no worker running;
3. processing throughput: N no-op jobs pre-enqueued, then the workers started;
   N / (last job start - first job start), for each worker configuration of the sweep;
4. latency: pings sent one at a time to an idle running worker (best configuration);
   p50 and p95 of job start - enqueue.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
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
    machine_info,
    percentile,
    run_json,
    running,
    subprocess_env,
    wait_until,
)
from benchmarks.report import SystemResult, ThroughputRun, render
from benchmarks.systems import SYSTEMS
from benchmarks.systems.base import Settings, System, WorkerConfig

RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"
PING_TIMEOUT = 30.0
"""Seconds one latency ping may take to start before the run is declared failed."""


class Bench:
    """Runs the four workloads for one system, each on freshly reset storage."""

    def __init__(self, system: System, args: argparse.Namespace, workdir: Path) -> None:
        self.system = system
        self.args = args
        self.workdir = workdir
        self.runs = 0
        self.started = time.monotonic()
        self.clean = False

    def reset(self) -> None:
        """Give the system empty storage, unless nothing has used it since the last reset."""
        try:
            if not self.clean:
                self.system.reset()
        except BenchError:
            raise
        except Exception as exc:
            raise BenchError(f"resetting storage failed: {exc}") from exc
        finally:
            self.clean = False

    def log(self, message: str) -> None:
        """Progress line on stderr (stdout carries only the report), with elapsed time."""
        elapsed = time.monotonic() - self.started
        print(f"[{self.system.key} {elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)

    def fresh_dirs(self, name: str) -> tuple[Path, Path]:
        """New empty record and log directories for one workload run."""
        self.runs += 1
        base = self.workdir / self.system.key / f"{self.runs:02d}-{name}"
        records, logs = base / "records", base / "logs"
        records.mkdir(parents=True)
        logs.mkdir()
        return records, logs

    def env(self, records: Path, config: WorkerConfig | None = None) -> dict[str, str]:
        """Environment for this system's producer and worker processes."""
        extra = {**self.system.env(), RECORD_DIR_ENV: str(records)}
        if config:
            extra.update(config.env)
        return subprocess_env(extra)

    def produce(
        self,
        workload: str,
        count: int,
        records: Path,
        logs: Path,
        config: WorkerConfig | None,
        watch: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Run one producer subprocess (``benchmarks/producer.py``) and return its result."""
        command = [sys.executable, "-m", "benchmarks.producer", self.system.tasks_module]
        command += [workload, str(count), "--timeout", str(PING_TIMEOUT)]
        return run_json(command, self.env(records, config), self.args.timeout, logs, watch)

    def enqueue_rate(self, workload: str) -> float:
        """Jobs per second for the ``single`` or ``bulk`` enqueue workload."""
        self.reset()
        records, logs = self.fresh_dirs(f"enqueue-{workload}")
        result = self.produce(workload, self.args.enqueue_jobs, records, logs, None)
        return self.args.enqueue_jobs / float(result["seconds"])

    def throughput(self, config: WorkerConfig) -> tuple[float, int]:
        """Pre-enqueue the jobs, start the workers, time first to last job start.

        Returns jobs per second and the number of extra executions (jobs run twice).
        """
        jobs = self.args.jobs
        self.reset()
        records, logs = self.fresh_dirs("throughput")
        self.produce("fill", jobs, records, logs, config)
        reader = RecordReader(records)
        with running(config.commands, self.env(records, config), logs) as processes:

            def finished() -> bool:
                check_alive(processes, logs)
                reader.poll()
                return len(reader.values) >= jobs

            wait_until(finished, self.args.timeout, f"{jobs} jobs to run")
        stamps = [record.timestamp for record in reader.records]
        elapsed = max(stamps) - min(stamps)
        if elapsed <= 0:
            raise BenchError("all jobs recorded the same timestamp; use more --jobs")
        return jobs / elapsed, len(reader.records) - jobs

    def latency(self, config: WorkerConfig) -> list[float]:
        """Start the workers, then let the producer send pings one by one (seconds)."""
        self.reset()
        records, logs = self.fresh_dirs("latency")
        with running(config.commands, self.env(records, config), logs) as processes:
            result = self.produce(
                "latency",
                self.args.latency_jobs,
                records,
                logs,
                config,
                watch=lambda: check_alive(processes, logs),
            )
        return [float(value) for value in result["latencies"]]

    def run(self) -> SystemResult:
        """Measure every workload; a failed workload is recorded and the next one still runs."""
        system = self.system
        result = SystemResult(system.key, system.title, system.bulk_api, system.notes)
        result.load_at_start = os.getloadavg()[0]
        result.skipped = system.unavailable()
        if result.skipped is None:
            try:
                system.reset()
                self.clean = True
            except Exception as exc:
                result.skipped = "setup failed, see Errors"
                self.fail(result, "setup", exc)
        if result.skipped:
            self.log(f"skipped: {result.skipped}")
            return result
        try:
            self.measure_enqueue(result)
            configs = system.worker_configs()
            self.measure_throughput(result, configs if self.args.sweep else configs[:1])
            best = result.best
            chosen = next((c for c in configs if best and c.label == best.config), configs[0])
            self.measure_latency(result, chosen)
        finally:
            system.teardown()
        return result

    def measure_enqueue(self, result: SystemResult) -> None:
        """Median enqueue rates over ``--repeat`` runs of each enqueue workload."""
        for workload in ("single", "bulk"):
            try:
                rates = [self.enqueue_rate(workload) for _ in range(self.args.repeat)]
            except BenchError as exc:
                self.fail(result, f"enqueue {workload}", exc)
                continue
            setattr(result, f"enqueue_{workload}", statistics.median(rates))
            self.log(f"enqueue {workload}: {', '.join(f'{r:,.0f}' for r in rates)} jobs/s")

    def measure_throughput(self, result: SystemResult, configs: Sequence[WorkerConfig]) -> None:
        """Throughput of each worker configuration, ``--repeat`` runs each."""
        for config in configs:
            run = ThroughputRun(config.label)
            try:
                for _ in range(self.args.repeat):
                    rate, duplicates = self.throughput(config)
                    run.rates.append(rate)
                    run.duplicates += duplicates
            except BenchError as exc:
                self.fail(result, f"throughput [{config.label}]", exc)
                run.error = str(exc)
            else:
                rates = ", ".join(f"{rate:,.0f}" for rate in run.rates)
                self.log(f"throughput [{config.label}]: {rates} jobs/s")
            result.sweep.append(run)

    def measure_latency(self, result: SystemResult, config: WorkerConfig) -> None:
        """Latency percentiles with the chosen worker configuration."""
        result.latency_config = config.label
        try:
            latencies = self.latency(config)
        except BenchError as exc:
            self.fail(result, f"latency [{config.label}]", exc)
            return
        result.latency_p50 = percentile(latencies, 0.50)
        result.latency_p95 = percentile(latencies, 0.95)
        self.log(
            f"latency [{config.label}]: p50 {result.latency_p50 * 1000:.1f} ms, "
            f"p95 {result.latency_p95 * 1000:.1f} ms"
        )

    def fail(self, result: SystemResult, what: str, exc: Exception) -> None:
        """Record a failed measurement and report it on stderr."""
        result.errors.append(f"{what}: {exc}")
        self.log(f"{what} FAILED: {exc}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks every workload for a smoke test."""
    keys = [system.key for system in SYSTEMS]
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Benchmark dbqueue against Celery, Procrastinate and PgQueuer.",
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="throughput jobs (10000)")
    parser.add_argument("--enqueue-jobs", type=int, default=2_000, help="enqueue jobs (2000)")
    parser.add_argument("--latency-jobs", type=int, default=200, help="latency samples (200)")
    parser.add_argument(
        "--systems", default=",".join(keys), help=f"comma-separated subset of {','.join(keys)}"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 200 jobs, 20 latency samples, first worker config only, no file",
    )
    parser.add_argument(
        "--no-sweep",
        dest="sweep",
        action="store_false",
        help="only run each system's first (recommended) worker configuration",
    )
    parser.add_argument(
        "--pg-dsn",
        default="postgresql://postgres@127.0.0.1/test",
        help="PostgreSQL server URL; the benchmark creates and drops bench_* databases on it",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/9",
        help="Redis database for Celery; it is FLUSHDB'd between workloads",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each enqueue and throughput measurement; the median is reported",
    )
    parser.add_argument("--baseline", default="dbqueue-pg", help="system the ratios refer to")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per workload")
    parser.add_argument("--output", type=Path, help=f"report file (default {RESULTS})")
    parser.add_argument("--keep-workdir", action="store_true", help="keep records and logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = args.enqueue_jobs = 200
        args.latency_jobs = 20
        args.sweep = False
        args.timeout = min(args.timeout, 60.0)
    elif args.output is None:
        args.output = RESULTS
    if min(args.jobs, args.enqueue_jobs, args.latency_jobs, args.repeat) < 1:
        parser.error("job counts and --repeat must be at least 1")
    unknown = set(args.systems.split(",")) - set(keys)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 1 if any measurement failed."""
    args = parse_args(argv)
    selected = args.systems.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="dbqueue-bench-"))
    settings = Settings(admin_dsn=args.pg_dsn, redis_url=args.redis_url, scratch=workdir)
    info = machine_info(args.pg_dsn, args.redis_url)
    if os.getloadavg()[0] > 0.5:
        print(
            f"warning: load average is {os.getloadavg()[0]:.2f} before starting; "
            "other activity on this machine will make the figures noisy",
            file=sys.stderr,
        )
    results = [
        Bench(system(settings), args, workdir).run() for system in SYSTEMS if system.key in selected
    ]
    parameters = {
        "enqueue jobs": f"{args.enqueue_jobs:,}",
        "throughput jobs": f"{args.jobs:,}",
        "latency samples": f"{args.latency_jobs:,}",
        "repeats (median)": str(args.repeat),
        "worker sweep": "yes" if args.sweep else "no (first configuration only)",
    }
    command = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    info["load average at end (1/5/15 min)"] = load_average()
    markdown = render(results, info, parameters, args.baseline, command)
    print(markdown)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        partial = args.output.with_name(args.output.name + ".tmp")
        partial.write_text(markdown)
        partial.replace(args.output)
        print(f"report written to {args.output}", file=sys.stderr)
    failed = any(result.errors for result in results)
    if failed or args.keep_workdir:
        print(f"records and worker logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
