"""Durable workflows in real ``dbqueue worker`` processes on SQLite, PostgreSQL and MariaDB.

* ``kill -9`` in the middle of a three-step workflow: recorded steps never run again, the
  interrupted step runs once more, the workflow completes.
* The fan-out matrix: each strategy with successes, failures and cancellations, results in
  input order, each parent resumed exactly once, a timeout; counts always match the children.
* Nested fan-outs in the prefork pool, an ``async def`` parent, and 10,000 children shared
  by two worker processes.

Side effects are rows in the ``effects`` table, written by the tasks themselves.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.acceptance import effects
from tests.acceptance.conftest import FAST
from tests.support import wait_until
from tests.support.processes import WorkerProcess

WORKFLOW = """
from dbqueue import call


@app.task(bind=True)
def step(self, name, done):
    effects.record(name, self.request.id)
    if name == "step2":
        effects.wait_released("step2")
    return done + [name]


@app.task(bind=True)
def workflow(self):
    effects.record("body", self.request.id, info=str(self.request.attempt))
    first = call(step, "step1", [])
    second = call(step, "step2", first)
    return call(step, "step3", second)
"""


@pytest.mark.parametrize(
    ("db_url", "pool"),
    [
        ("sqlite", "threads"),
        ("postgresql", "threads"),
        ("mariadb", "threads"),
        ("postgresql", "prefork"),  # prefork is covered on PostgreSQL; threads everywhere
    ],
    indirect=["db_url"],
)
def test_kill9_mid_workflow_runs_no_recorded_step_again(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    pool: str,
) -> None:
    tasks = load_tasks(f"kill9_flow_{pool}", WORKFLOW, db_url, **FAST)
    victim = start_worker(f"kill9_flow_{pool}", db_url, "-P", pool, "-c", "2")
    result = tasks.workflow.delay()
    wait_until(lambda: effects.count(db_url, "step2"), timeout=30, message="step 2 started")
    assert effects.count(db_url, "step1") == 1
    victim.kill9()
    victim.wait(10)

    effects.release(db_url, "step2")
    start_worker(f"kill9_flow_{pool}", db_url, "-P", pool, "-c", "2")
    assert result.get(timeout=60) == ["step1", "step2", "step3"]
    counts = Counter(row["kind"] for row in effects.rows(db_url))
    assert counts == {"body": 2, "step1": 1, "step2": 2, "step3": 1}
    assert [row["info"] for row in effects.rows(db_url, "body")] == ["1", "2"]
    row = effects.job(db_url, result.id)
    assert (row["status"], row["attempt"]) == ("completed", 2)


MATRIX = """
from dbqueue import CollectAll, FailFast, FanOutFailed, Threshold, fan_out, sub

STRATEGIES = {"fail_fast": FailFast(), "collect_all": CollectAll(), "threshold": Threshold(0.75)}


@app.task(bind=True)
def child(self, i, mode):
    effects.record("child", self.request.id, info=f"{i}:{mode}")
    if mode == "fail":
        raise LookupError(f"child {i} failed")
    if mode == "block":
        effects.wait_released("unblock")
    if mode == "slow":
        time.sleep(0.3)
    return i * i


@app.task(bind=True)
def parent(self, label, modes, strategy, timeout=None):
    effects.record("parent", self.request.id, info=label)
    children = [sub(child, i, mode) for i, mode in enumerate(modes)]
    try:
        results = fan_out(children, STRATEGIES[strategy], timeout=timeout)
        status = "ok"
    except FanOutFailed as error:
        results, status = error.results, "failed"
    return [status, [[r.status, r.value, type(r.error).__name__ if r.error else None]
                     for r in results]]
"""

#: label -> (children's modes, strategy, timeout)
SCENARIOS: dict[str, tuple[list[str], str, float | None]] = {
    "ff_ok": (["ok", "slow", "ok", "ok"], "fail_fast", None),
    "ff_fail": (["block", "fail", "block", "ok"], "fail_fast", None),
    "ca_mixed": (["slow", "fail", "block", "ok"], "collect_all", None),
    "th_ok": (["ok", "slow", "ok", "block"], "threshold", None),
    "th_fail": (["fail", "fail", "ok", "block"], "threshold", None),
    "timeout": (["block", "ok"], "collect_all", 1.5),
}
UNFINISHED = ("SubJobCancelled", "SubJobIncomplete")


def fan_out_rows(url: str) -> list[dict[str, Any]]:
    with effects.connect(url) as conn:
        rows = conn.execute(
            effects.sa.text(
                "SELECT f.id, f.parent_id, f.status, f.total, f.completed, f.failed, f.cancelled, "
                "(SELECT COUNT(*) FROM dbqueue_jobs j WHERE j.fan_out_id = f.id "
                "AND j.status = 'completed') AS really_completed, "
                "(SELECT COUNT(*) FROM dbqueue_jobs j WHERE j.fan_out_id = f.id "
                "AND j.status = 'failed') AS really_failed, "
                "(SELECT COUNT(*) FROM dbqueue_jobs j WHERE j.fan_out_id = f.id "
                "AND j.status = 'cancelled') AS really_cancelled "
                "FROM dbqueue_fan_outs f"
            )
        )
        return [dict(r._mapping) for r in rows]


def test_fan_out_matrix_in_a_worker_process(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    tasks = load_tasks("fan_matrix", MATRIX, db_url, **FAST)
    worker = start_worker("fan_matrix", db_url, "-P", "threads", "-c", "12")
    parents = {
        label: tasks.parent.delay(label, modes, strategy, timeout)
        for label, (modes, strategy, timeout) in SCENARIOS.items()
    }

    # Cancel the blocking child of ca_mixed once it runs: CollectAll still completes.
    def blocked_child_of_ca_mixed() -> str | None:
        with effects.connect(db_url) as conn:
            row = conn.execute(
                effects.sa.text(
                    "SELECT id FROM dbqueue_jobs WHERE parent_id = :p AND fan_out_index = 2 "
                    "AND status = 'running'"
                ),
                {"p": parents["ca_mixed"].id},
            ).first()
        return row[0] if row else None

    blocked = wait_until(blocked_child_of_ca_mixed, timeout=60, message="ca_mixed child 2 runs")
    tasks.app.control.revoke(blocked)

    outcomes = {label: result.get(timeout=90) for label, result in parents.items()}
    effects.release(db_url, "unblock")

    assert outcomes["ff_ok"] == ["ok", [["completed", i * i, None] for i in range(4)]]

    status, results = outcomes["ff_fail"]
    assert status == "failed"
    assert results[1] == ["failed", None, "LookupError"]
    assert results[3][0] in ("completed", "cancelled", "pending", "running")
    for index in (0, 2):
        assert results[index][2] in UNFINISHED

    status, results = outcomes["ca_mixed"]
    assert status == "ok"
    assert results == [
        ["completed", 0, None],
        ["failed", None, "LookupError"],
        ["cancelled", None, "SubJobCancelled"],
        ["completed", 9, None],
    ]

    status, results = outcomes["th_ok"]
    assert status == "ok"  # 3 of 4 completed while the 4th still blocked
    assert [r[:2] for r in results[:3]] == [["completed", 0], ["completed", 1], ["completed", 4]]
    assert results[3][2] in UNFINISHED

    status, results = outcomes["th_fail"]
    assert status == "failed"  # 2 failed: 3 of 4 can no longer complete
    assert [r[2] for r in results[:2]] == ["LookupError", "LookupError"]

    status, results = outcomes["timeout"]
    assert status == "failed"
    assert results[0][2] in UNFINISHED and results[1] == ["completed", 1, None]

    # Every parent ran twice: the run that fanned out, and one replay.
    runs = Counter(row["job_id"] for row in effects.rows(db_url, "parent"))
    assert runs == {result.id: 2 for result in parents.values()}
    for result in parents.values():
        row = effects.job(db_url, result.id)
        assert (row["status"], row["attempt"]) == ("completed", 1)

    by_parent = {row["parent_id"]: row for row in fan_out_rows(db_url)}
    expected = {
        "ff_ok": "completed",
        "ff_fail": "failed",
        "ca_mixed": "completed",
        "th_ok": "completed",
        "th_fail": "failed",
        "timeout": "timed_out",
    }
    assert {label: by_parent[r.id]["status"] for label, r in parents.items()} == expected

    def counts_settled() -> bool:
        rows = fan_out_rows(db_url)
        return all(
            (r["completed"], r["failed"], r["cancelled"])
            == (r["really_completed"], r["really_failed"], r["really_cancelled"])
            and r["completed"] + r["failed"] + r["cancelled"] == r["total"]
            for r in rows
        )

    wait_until(counts_settled, timeout=30, message=f"counts match: {fan_out_rows(db_url)}")
    wait_until(
        lambda: not {"pending", "running", "waiting"} & set(effects.status_counts(db_url)),
        timeout=30,
        message="nothing left running",
    )
    assert worker.is_running()


TREE = """
from dbqueue import call, fan_out, sub


@app.task
def leaf(x):
    return x


@app.task(bind=True)
def branch(self, base):
    effects.record("branch", self.request.id, info=str(os.getpid()))
    return sum(fan_out([sub(leaf, base + i) for i in range(3)]).values())


@app.task(bind=True)
def tree(self):
    effects.record("tree", self.request.id)
    first = call(leaf, 100)
    return [first, *fan_out([sub(branch, 0), sub(branch, 10)]).values()]


@app.task(bind=True)
async def async_tree(self, n):
    await asyncio.to_thread(effects.record, "async_tree", self.request.id)
    first = await call(leaf, 7)
    results = await fan_out([sub(leaf, i) for i in range(n)])
    return [first, results.values()]
"""


@pytest.mark.parametrize(
    ("db_url", "pool"),
    [
        ("sqlite", "prefork"),
        ("postgresql", "prefork"),
        ("mariadb", "prefork"),
        ("sqlite", "threads"),  # both pools run on SQLite; prefork alone elsewhere
    ],
    indirect=["db_url"],
)
def test_nested_and_async_fan_outs(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    pool: str,
) -> None:
    """Children that fan out again (in prefork children too) and an async parent."""
    tasks = load_tasks(f"tree_{pool}", TREE, db_url, **FAST)
    worker = start_worker(f"tree_{pool}", db_url, "-P", pool, "-c", "2")
    nested = tasks.tree.delay()
    awaited = tasks.async_tree.delay(4)
    assert nested.get(timeout=60) == [100, 3, 33]
    assert awaited.get(timeout=60) == [7, [0, 1, 2, 3]]
    assert Counter(r["kind"] for r in effects.rows(db_url)) == {
        "tree": 2,
        "branch": 4,
        "async_tree": 2,
    }
    if pool == "prefork":
        assert worker.pid not in {int(r["info"]) for r in effects.rows(db_url, "branch")}
    assert effects.status_counts(db_url) == {"completed": 2 + 2 + 6 + 4}


BIG = """
from dbqueue import fan_out, sub


@app.task
def item(i):
    return i


@app.task(bind=True)
def big(self, n):
    effects.record("big", self.request.id, t0=time.time())
    results = fan_out([sub(item, i) for i in range(n)])
    values = results.values()
    effects.record("big_done", self.request.id, t1=time.time())
    return [len(values), sum(values), values == list(range(n))]
"""


@pytest.mark.slow
def test_ten_thousand_children_over_two_worker_processes(
    db_url: str,
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    n = 10_000
    tasks = load_tasks("big_fan", BIG, db_url, **FAST)
    first = start_worker("big_fan", db_url, "-P", "threads", "-c", "8", ready=False)
    second = start_worker("big_fan", db_url, "-P", "threads", "-c", "8", ready=False)
    first.wait_ready()
    second.wait_ready()
    began = time.monotonic()
    result = tasks.big.delay(n)
    assert result.get(timeout=280) == [n, n * (n - 1) // 2, True]
    elapsed = time.monotonic() - began
    assert Counter(r["kind"] for r in effects.rows(db_url)) == {"big": 2, "big_done": 1}
    with effects.connect(db_url) as conn:
        workers = conn.execute(
            effects.sa.text(
                "SELECT worker, COUNT(*) FROM dbqueue_jobs WHERE fan_out_id IS NOT NULL "
                "GROUP BY worker"
            )
        ).all()
        fan = conn.execute(
            effects.sa.text(
                "SELECT status, total, completed, failed, cancelled FROM dbqueue_fan_outs"
            )
        ).one()
    assert len(workers) == 2, f"both workers took children: {workers}"
    assert sum(count for _, count in workers) == n
    assert tuple(fan) == ("completed", n, n, 0, 0)
    assert effects.status_counts(db_url) == {"completed": n + 1}
    print(f"10,000 children on {db_url.split(':')[0]}: {elapsed:.1f}s end to end")
