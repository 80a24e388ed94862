"""Schedulers as real processes (``dbqueue beat`` and ``dbqueue worker -B``): exactly one job
per fire time with several running and one killed, one catch-up run after a stop, the
``dbqueue schedules`` commands, and bad schedules refused at start."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.acceptance.conftest import FAST, module_source, run_cli
from tests.integration.helpers import sql
from tests.support.modules import ModuleWriter
from tests.support.polling import wait_until
from tests.support.processes import ManagedProcess, WorkerProcess, new_log_path

#: Seconds the exactly-once test keeps its schedulers running.
RUN_FOR = 60.0

TASKS = """
from dbqueue import daily, every

app.conf.beat_schedule = {
    "tick": {"task": "%(name)s.tick", "schedule": every(1)},
    "nightly": {"task": "%(name)s.tick", "schedule": daily(3, 0), "args": (0,)},
}


@app.task
def tick(n=1):
    return n
"""


def start_beat(module: str, url: str, cwd: Path, *args: str) -> ManagedProcess:
    """``dbqueue beat -A module`` as a process, once it says it is ready."""
    process = ManagedProcess(
        [sys.executable, "-m", "dbqueue", "beat", "-A", module, "-l", "info", *args],
        cwd=cwd,
        log_path=new_log_path(cwd, "beat"),
        env={"DBQUEUE_BROKER_URL": url},
        pythonpath=[cwd],
    ).start()
    process.wait_for_log(r"\bready\b", timeout=60)
    return process


def fired(module: ModuleType, schedule: str = "tick") -> list[float]:
    """run_at of every job the schedule enqueued (its fire time), in order."""
    rows = sql(
        module.app,
        "SELECT run_at FROM dbqueue_jobs WHERE options LIKE :mark ORDER BY run_at",
        mark=f'%"periodic_task_name":"{schedule}"%',
    )
    return [float(run_at) for (run_at,) in rows]


def stored(module: ModuleType, name: str) -> dict[str, Any]:
    from dbqueue.storage.schedules import ScheduleStore

    (row,) = [r for r in ScheduleStore(module.app.storage).all() if r["name"] == name]
    return row


def wait_for_db_clock(module: ModuleType, moment: float, timeout: float) -> None:
    wait_until(
        lambda: module.app.storage.now() >= moment,
        timeout=timeout,
        interval=0.2,
        message=f"the database clock never reached {moment}",
    )


@pytest.mark.slow
def test_three_schedulers_for_a_minute_give_one_job_per_second(
    db_url: str,
    tmp_path: Path,
    load_tasks: Callable[..., ModuleType],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Two ``dbqueue beat`` and one ``worker -B``, every second for a minute: no fire time is
    missed or doubled, not even while one scheduler is killed (-9) and another takes its place."""
    name = "beat_once"
    module = load_tasks(name, TASKS % {"name": name}, db_url, **FAST)
    schedulers = [start_beat(name, db_url, tmp_path), start_beat(name, db_url, tmp_path)]
    start_worker(name, db_url, "-B", "-P", "threads", "-c", "2", "-l", "info", timeout=60)
    started = module.app.storage.now()

    wait_for_db_clock(module, started + RUN_FOR / 3, timeout=RUN_FOR)
    schedulers[0].kill9()  # a scheduler dies mid-flight; nobody has to take over a lead
    wait_for_db_clock(module, started + 2 * RUN_FOR / 3, timeout=RUN_FOR)
    schedulers.append(start_beat(name, db_url, tmp_path))  # and a new one joins
    wait_for_db_clock(module, started + RUN_FOR, timeout=RUN_FOR)
    for process in schedulers[1:]:
        process.terminate()
        assert process.wait(30) == 0

    times = fired(module)
    counts = Counter(times)
    doubled = sorted(t for t, n in counts.items() if n > 1)
    assert not doubled, f"fire times enqueued more than once: {doubled[:10]}"
    first, last = min(times), max(times)
    assert last - first >= RUN_FOR - 5, (first, last)
    expected = [first + n for n in range(int(last - first) + 1)]
    missing = sorted(set(expected) - set(times))
    assert not missing, f"fire times never enqueued: {missing[:10]}"
    assert times == expected
    assert all(t == int(t) for t in times), "every(1) fires on whole seconds"
    assert fired(module, "nightly") == [], "nothing fires on boot unless due"
    row = stored(module, "tick")
    assert row["total_run_count"] == len(times)
    winners = [p for p in schedulers if "Sending due task tick" in p.log()]
    assert len(winners) >= 2, "the schedulers really raced (more than one of them fired)"


def test_catch_up_after_a_stop_fires_once(
    db_url: str, tmp_path: Path, load_tasks: Callable[..., ModuleType]
) -> None:
    name = "beat_catch_up"
    module = load_tasks(name, TASKS % {"name": name}, db_url, beat_misfire_grace_time=1.0)
    beat = start_beat(name, db_url, tmp_path)
    wait_until(lambda: len(fired(module)) >= 3, timeout=60, message="no fires before the stop")
    beat.terminate()
    assert beat.wait(30) == 0
    before = fired(module)
    last = before[-1]
    assert stored(module, "tick")["next_fire_at"] == last + 1
    wait_for_db_clock(module, last + 6, timeout=60)  # several fire times go by unfired

    beat = start_beat(name, db_url, tmp_path)
    wait_until(lambda: len(fired(module)) >= len(before) + 3, timeout=60)
    beat.terminate()
    assert beat.wait(30) == 0
    after = fired(module)[len(before) :]
    assert after[0] == last + 1, "one catch-up run, for the first missed fire time"
    assert after[1] >= last + 6, "and not one per missed fire time"
    assert after[1:] == [after[1] + n for n in range(len(after) - 1)], "then every second"
    assert "firing one catch-up run" in beat.log()
    assert fired(module, "nightly") == []


def test_schedules_cli_lists_disables_and_enables(
    db_url: str, tmp_path: Path, load_tasks: Callable[..., ModuleType]
) -> None:
    name = "beat_cli"
    module = load_tasks(name, TASKS % {"name": name}, db_url)

    def cli(*args: str) -> Any:
        return run_cli(*args, url=db_url, cwd=tmp_path)

    empty = cli("schedules", "-A", name)
    assert empty.returncode == 0, empty.stderr
    assert "No schedules stored" in empty.stdout

    beat = start_beat(name, db_url, tmp_path)
    wait_until(lambda: fired(module), timeout=60)
    listing = cli("-A", name, "schedules")
    assert listing.returncode == 0, listing.stderr
    header, *lines = listing.stdout.splitlines()
    assert header.split() == ["NAME", "ENABLED", "WHEN", "TIMEZONE", "NEXT", "LAST", "RUNS", "TASK"]
    by_name = {line.split()[0]: line for line in lines}
    assert set(by_name) == {"nightly", "tick"}
    assert by_name["tick"].split()[1:4] == ["yes", "every", "1s"]
    assert "0 3 * * *" in by_name["nightly"] and "never" in by_name["nightly"]

    disabled = cli("schedules", "disable", "tick")
    assert disabled.returncode == 0, disabled.stderr
    assert "Schedule tick disabled" in disabled.stdout
    count = stored(module, "tick")["total_run_count"]
    start = module.app.storage.now()
    wait_for_db_clock(module, start + 3, timeout=30)
    # One fire may have been in flight when the disable landed; none after it.
    assert stored(module, "tick")["total_run_count"] <= count + 1
    settled = stored(module, "tick")["total_run_count"]
    wait_for_db_clock(module, start + 5, timeout=30)
    assert stored(module, "tick")["total_run_count"] == settled

    beat.terminate()
    assert beat.wait(30) == 0
    beat = start_beat(name, db_url, tmp_path)  # a redeploy registers the schedules again
    assert stored(module, "tick")["enabled"] is False, "a redeploy keeps the operator's disable"
    as_json = cli("schedules", "--json")
    assert '"enabled": false' in as_json.stdout

    enabled = cli("schedules", "enable", "tick")
    assert enabled.returncode == 0, enabled.stderr
    assert "Schedule tick enabled; next fire" in enabled.stdout
    wait_until(
        lambda: stored(module, "tick")["total_run_count"] > settled,
        timeout=60,
        message="the enabled schedule never fired again",
    )
    beat.terminate()
    assert beat.wait(30) == 0

    unknown = cli("schedules", "disable", "nope")
    assert unknown.returncode != 0
    assert unknown.stderr.strip().splitlines() == [
        "Error: no schedule named 'nope' (stored schedules: 'nightly', 'tick')"
    ]


BROKEN = {
    "cron": (
        "from dbqueue import cron\n"
        "app.conf.beat_schedule = {'bad': {'task': '%(name)s.t', 'schedule': cron('61 * * * *')}}",
        "invalid cron expression '61 * * * *'",
    ),
    "task": (
        "app.conf.beat_schedule = {'bad': {'task': '%(name)s.typo', 'schedule': 10}}",
        "schedule 'bad': task 'beat_bad_task.typo' is not registered",
    ),
    "timezone": (
        "app.conf.timezone = 'Europe/Atlantis'\n"
        "app.conf.beat_schedule = {'bad': {'task': '%(name)s.t', 'schedule': 10}}",
        "the app's timezone setting: unknown timezone 'Europe/Atlantis'",
    ),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
@pytest.mark.parametrize("command", ["beat", "worker"])
def test_a_broken_schedule_stops_the_scheduler_with_one_clear_line(
    sqlite_url: str, tmp_path: Path, write_module: ModuleWriter, what: str, command: str
) -> None:
    name = f"beat_bad_{what}"
    setup, message = BROKEN[what]
    body = setup % {"name": name} + "\n\n@app.task\ndef t():\n    pass\n"
    write_module(tmp_path, name, module_source(name, body))
    args = ["-B", "-P", "solo"] if command == "worker" else []
    result = run_cli(command, "-A", name, *args, url=sqlite_url, cwd=tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0]
    assert "Traceback" not in result.stderr


def test_a_prefork_worker_with_beat_lists_and_runs_its_schedules(
    sqlite_url: str,
    tmp_path: Path,
    load_tasks: Callable[..., ModuleType],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    name = "beat_banner"
    module = load_tasks(name, TASKS % {"name": name}, sqlite_url)
    worker = start_worker(name, sqlite_url, "-B", "-P", "prefork", "-c", "2")
    log = worker.wait_for_log(r"\[schedules\][^\n]*\n(?:.*\n){2}").group(0)
    assert f"nightly: 0 3 * * * (UTC) -> {name}.tick" in log
    assert f"tick: every 1s (UTC) -> {name}.tick" in log

    def completed() -> int:
        rows = sql(module.app, "SELECT COUNT(*) FROM dbqueue_jobs WHERE status = 'completed'")
        return int(rows[0][0])

    wait_until(lambda: completed() >= 3, timeout=60, message="scheduled jobs never completed")
    worker.terminate()
    assert worker.wait(30) == 0
