"""Durable workflows: checkpointed calls, named phases, the current job, fan-out / fan-in.

``context.py`` (the running job, its positions and checkpoints), ``calls.py`` (``call``),
``phases.py`` (named phases), ``fanout.py`` (``sub``, ``fan_out``), ``strategies.py``,
``results.py``, ``maintenance.py`` (timeouts and recovery, in the worker's maintenance
thread). The rows behind them live in ``dbqueue/storage/checkpoints.py`` and
``dbqueue/storage/fanouts.py``.
"""

from __future__ import annotations

from dbqueue.durable.calls import call
from dbqueue.durable.context import JobContext, current_job
from dbqueue.durable.fanout import Sub, fan_out, sub
from dbqueue.durable.phases import (
    PhaseRun,
    has_checkpoint,
    load_checkpoint,
    phase,
    save_checkpoint,
)
from dbqueue.durable.results import (
    Result,
    Results,
    all_succeeded,
    partition,
    success_count,
    values,
)
from dbqueue.durable.strategies import CollectAll, FailFast, Strategy, Threshold

__all__ = [
    "CollectAll",
    "FailFast",
    "JobContext",
    "PhaseRun",
    "Result",
    "Results",
    "Strategy",
    "Sub",
    "Threshold",
    "all_succeeded",
    "call",
    "current_job",
    "fan_out",
    "has_checkpoint",
    "load_checkpoint",
    "partition",
    "phase",
    "save_checkpoint",
    "sub",
    "success_count",
    "values",
]
