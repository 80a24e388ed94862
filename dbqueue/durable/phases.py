"""Named phase checkpoints: save and load a value under a name, and ``phase(name)`` to skip a
phase a previous run of the job already finished.

Phases are keyed by name, not position, so they may be saved in any order and more than once
(the last value wins). Outside a worker they live for the run only.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from dbqueue.durable.context import PHASE_INDEX, job_context
from dbqueue.storage.checkpoints import StoredCheckpoint

F = TypeVar("F", bound=Callable[..., Any])


def save_checkpoint(name: str, value: Any = None) -> None:
    """Record ``value`` under ``name`` for this job (one write); a no-op outside a job.

    A blocking write, also in ``async def`` tasks (it is a single short statement).
    """
    _check_name(name)
    context = job_context()
    if context is None:
        return
    content_type, data = context.encode(value, f"phase {name!r}")
    context.record(StoredCheckpoint(PHASE_INDEX, name, data, content_type))


def load_checkpoint(name: str, default: Any = None) -> Any:
    """The value saved under ``name`` by this or an earlier run of the job, else ``default``."""
    _check_name(name)
    context = job_context()
    if context is None:
        return default
    recorded = context.phase(name)
    return default if recorded is None else context.value(recorded)


def has_checkpoint(name: str) -> bool:
    """Whether a value was saved under ``name`` for this job."""
    _check_name(name)
    context = job_context()
    return context is not None and context.phase(name) is not None


class PhaseRun:
    """One pass through a ``with phase(name) as step:`` block.

    ``done`` says an earlier run finished the phase (guard the block with ``if not
    step.done``); ``value`` is its saved value. Leaving the block without an exception
    saves ``value`` and marks the phase done.
    """

    def __init__(self, name: str, done: bool, value: Any) -> None:
        self.name = name
        self.done = done
        self.value = value


class phase:
    """A named phase that runs once per job.

    As a decorator, the function runs only if the phase is not done yet, and its return value
    is saved; once done, calls return the saved value without running::

        @phase("download")
        def download(url): ...

    As a context manager it tells whether the phase is done and saves it on a clean exit::

        with phase("notify") as step:
            if not step.done:
                send_emails()
    """

    def __init__(self, name: str) -> None:
        _check_name(name)
        self.name = name
        #: The block being run in this thread or asyncio task (a phase object may be shared).
        self._current: contextvars.ContextVar[tuple[PhaseRun, Any]] = contextvars.ContextVar(
            f"dbqueue_phase_{name}"
        )

    def __call__(self, fn: F) -> F:
        name = self.name
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                context = job_context()
                if context is not None:
                    await asyncio.to_thread(context.preload)
                    if context.phase(name) is not None:
                        return load_checkpoint(name)
                value = await fn(*args, **kwargs)
                await asyncio.to_thread(save_checkpoint, name, value)
                return value

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if has_checkpoint(name):
                return load_checkpoint(name)
            value = fn(*args, **kwargs)
            save_checkpoint(name, value)
            return value

        return run  # type: ignore[return-value]

    def __enter__(self) -> PhaseRun:
        done = has_checkpoint(self.name)
        run = PhaseRun(self.name, done, load_checkpoint(self.name) if done else None)
        previous = self._current.get(None)
        self._current.set((run, previous))
        return run

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        run, previous = self._current.get()
        if previous is not None:
            self._current.set(previous)
        if exc_type is None and not run.done:
            save_checkpoint(self.name, run.value)
            run.done = True

    def __repr__(self) -> str:
        return f"<phase {self.name!r}>"


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ValueError(
            f"a phase name must be a non-empty string of at most 255 characters, got {name!r}"
        )
