"""Tasks of the durable-workflow benchmark; the broker URL comes from ``$BENCH_DURABLE_BROKER``.

Workers start with ``dbqueue worker -A benchmarks.durable_tasks:app ...``.
"""

from __future__ import annotations

import os

from dbqueue import DBQueue, fan_out, sub

app = DBQueue("bench_durable", broker=os.environ["BENCH_DURABLE_BROKER"])
app.conf.update(result_expires=3600, worker_hijack_root_logger=True)


@app.task
def step(i: int) -> int:
    """A checkpointed step's body: as cheap as a function gets."""
    return i + 1


@app.task
def flow() -> None:
    """The job the step loop runs inside (the benchmark drives it in-process)."""


@app.task
def item(i: int) -> int:
    """One job of the flat run, or one child of the fan-out: returns its index."""
    return i


@app.task
def big(n: int) -> int:
    """Fans out ``n`` children and checks it got every result back, in order."""
    values = fan_out([sub(item, i) for i in range(n)]).values()
    if values != list(range(n)):
        raise AssertionError("fan-out results out of order or missing")
    return len(values)
