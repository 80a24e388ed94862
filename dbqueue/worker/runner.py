"""Running one claimed job in this process: decode, run, commit the outcome, then signals.

Used by every pool: worker threads, the solo pool, prefork children and the asyncio loop.
``commit`` hands an outcome to whoever writes it (the completer, or the prefork parent) and
returns a future resolving to whether the job was still ours when it was written.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dbqueue import signals
from dbqueue.exceptions import DecodeError, SoftTimeLimitExceeded, TimeLimitExceeded
from dbqueue.execution import (
    Decision,
    after_commit,
    build_request,
    log_success,
    run_async,
    run_sync,
    to_outcome,
)
from dbqueue.execution import logger as trace_logger
from dbqueue.request import Context
from dbqueue.serialization import decode_call
from dbqueue.storage import ClaimedJob, Outcome
from dbqueue.task import Task
from dbqueue.worker.completer import Receipt
from dbqueue.worker.limits import LimitGuard

if TYPE_CHECKING:
    from dbqueue.app import DBQueue
    from dbqueue.worker.control import WorkerControl
    from dbqueue.worker.limits import Limiter, Stopper

logger = logging.getLogger("dbqueue.worker")

#: Hands an outcome over to be written: ``commit(outcome, wait)``; ``wait=False`` says nobody
#: will ask whether it was committed (a prefork child then skips the acknowledgement).
Commit = Callable[[Outcome, bool], "Receipt"]
#: Hands over outcomes nobody waits for, all at once.
CommitMany = Callable[[list[Outcome]], None]
#: Frees the slots of jobs whose outcomes are handed over.
Release = Callable[[Sequence[str]], None]


def time_limits(app: DBQueue, task: Task, job: ClaimedJob) -> tuple[float | None, float | None]:
    """(soft, hard) seconds: the call's options, else the task's, else the settings."""
    conf = app.conf
    options = job.options
    soft = task.soft_time_limit or conf.task_soft_time_limit
    hard = task.time_limit or conf.task_time_limit
    if options:
        soft = options.get("soft_time_limit") or soft
        hard = options.get("time_limit") or hard
    return soft, hard


class JobRunner:
    """Executes claimed jobs of one app on behalf of one worker."""

    def __init__(
        self,
        app: DBQueue,
        hostname: str,
        worker_id: str,
        commit: Commit,
        watchdog: Limiter | None = None,
        control: WorkerControl | None = None,
        stopper: Stopper | _Body | None = None,
        commit_many: CommitMany | None = None,
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.worker_id = worker_id
        self.commit = commit
        self.commit_many = commit_many or self._commit_each
        #: Recent seconds per job of each task (a running average), to spot long jobs coming.
        self.expected: dict[str, float] = {}
        #: Time limits in this process (dbqueue/worker/limits.py); None in prefork children.
        self.watchdog = watchdog
        #: Knows which job the thread runs, to stop it (limits.py; prefork's body flag).
        self.stopper = stopper
        #: The worker's gate and stop requests (dbqueue/worker/control.py); None in children.
        self.control = control
        self._serializers = (app.conf.result_serializer, app.conf.task_serializer)
        self._accept = app.accept
        self._task_limits: dict[str, tuple[float | None, float | None]] = {}

    def _limits(self, task: Task, job: ClaimedJob) -> tuple[float | None, float | None]:
        """:func:`time_limits`, with the task's own part looked up once per task."""
        if job.options:
            return time_limits(self.app, task, job)
        limits = self._task_limits.get(task.name)
        if limits is None:
            limits = self._task_limits[task.name] = time_limits(self.app, task, job)
        return limits

    def _commit_each(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.commit(outcome, False)

    def _prepare(self, task: Task, job: ClaimedJob) -> Context | Receipt:
        """The job's request, or (payload undecodable) the committed failure of the job."""
        try:
            args, kwargs = decode_call(job.payload, job.content_type, self._accept)
        except DecodeError as error:
            logger.error(
                "Job %s of %s has a payload that cannot be decoded: %s", job.id, job.task, error
            )
            signals.task_rejected.send(self, message=job, exc=error)
            future = self.commit(
                Outcome(
                    "fail", job.id, error_type="dbqueue.exceptions.DecodeError", error=str(error)
                ),
                True,
            )
            future.result()
            return future
        return build_request(task, job, args, kwargs, self.hostname, self.worker_id)

    def run_many(self, jobs: Iterable[ClaimedJob], release: Release) -> None:
        """Run sync jobs one after another in this thread, then release their slots.

        Successes nobody observes are handed over together, in one call: at the end, or before
        a job whose task is not known to be short (so they never wait for a long job). Other
        outcomes are committed as each job ends and release their slot once committed.
        """
        quiet: list[Outcome] = []
        expected = self.expected
        try:
            for job in jobs:
                if quiet and expected.get(job.task, SHORT_JOB) >= SHORT_JOB:
                    self._hand_over(quiet, release)
                started = time.monotonic()
                try:
                    receipt = self.run(job, quiet)
                except BaseException:
                    logger.exception("Job %s of %s stopped its thread's run", job.id, job.task)
                    release((job.id,))
                    continue
                spent = time.monotonic() - started
                prior = expected.get(job.task)
                expected[job.task] = spent if prior is None else prior + (spent - prior) * 0.2
                if receipt is not None:
                    receipt.add_done_callback(_releaser(release, job.id))
        finally:
            if quiet:
                self._hand_over(quiet, release)

    def _hand_over(self, quiet: list[Outcome], release: Release) -> None:
        batch = quiet[:]
        quiet.clear()
        self.commit_many(batch)
        release([outcome.job_id for outcome in batch])

    def run(self, job: ClaimedJob, quiet: list[Outcome] | None = None) -> Receipt | None:
        """Run a sync task's job (in a pool thread or prefork child).

        Returns a receipt that resolves once the job no longer needs its execution slot: for
        most outcomes, once committed and handlers have run. A success nobody listens to (no
        signal receivers, no handlers, no INFO logging) is done as soon as its outcome is
        handed to the group commit, so the slot, and the thread, take the next job while the
        commit is under way (the completer bounds how many outcomes may wait). With ``quiet``
        given, such an outcome is appended to it instead, and None returned.

        Never raises: a failure of dbqueue's own machinery fails the job, saying so, rather
        than leaving it running forever under a live worker.
        """
        try:
            return self._run(job, quiet)
        except BaseException as error:
            logger.exception("Internal error while running job %s of %s", job.id, job.task)
            future = self.commit(
                Outcome(
                    "fail",
                    job.id,
                    error_type="dbqueue.exceptions.DBQueueError",
                    error=f"internal error in the worker: {error!r}",
                ),
                True,
            )
            future.result()
            if not isinstance(error, Exception):
                raise
            return future

    def _run(self, job: ClaimedJob, quiet: list[Outcome] | None) -> Receipt | None:
        task = self.app.tasks[job.task]
        control = self.control
        if control is not None and control.active and control.holds(job):
            return control.hold_receipt(job, self.commit)
        request = self._prepare(task, job)
        if isinstance(request, Receipt):
            return request
        soft, hard = self._limits(task, job)
        guard: Any = self.stopper.prepare(job.id) if self.stopper is not None else None
        if (soft or hard) and self.watchdog:
            guard = LimitGuard(self.watchdog, soft, hard, guard)
        decision = run_sync(task, request, guard)
        outcome = to_outcome(task, request, decision, *self._serializers)
        outcome.claim = job
        watched = _watchers(task) if decision.kind == "success" else HANDLERS
        if watched is NOBODY:
            if quiet is not None:
                quiet.append(outcome)
                return None
            self.commit(outcome, False)
            return _DONE
        if watched is LOG_LINE:
            receipt = self.commit(outcome, True)
            receipt.add_done_callback(_success_logger(task, str(request.id), decision))
            return receipt
        future = self.commit(outcome, True)
        after_commit(task, request, decision, future.result())
        return future

    async def run_async(self, job: ClaimedJob) -> None:
        """Run an ``async def`` task's job on the worker's event loop."""
        import asyncio

        task = self.app.tasks[job.task]
        control = self.control
        if control is not None and control.active and control.holds(job):
            await asyncio.to_thread(control.hold_receipt, job, self.commit)
            return
        request = self._prepare(task, job)
        if isinstance(request, Receipt):
            return
        soft, hard = time_limits(self.app, task, job)
        limit, exc = (soft, SoftTimeLimitExceeded) if soft else (hard, TimeLimitExceeded)
        body = run_async(task, request, limit, exc)
        decision = await (control.stoppable(job.id, body) if control is not None else body)
        outcome = to_outcome(task, request, decision, *self._serializers)
        outcome.claim = job
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[bool] = loop.create_future()

        def resolve(receipt: Receipt) -> None:
            loop.call_soon_threadsafe(committed.set_result, receipt.result())

        self.commit(outcome, True).add_done_callback(resolve)
        after_commit(task, request, decision, await committed)


class _Body(Protocol):
    """Something that knows when a job body runs (a prefork child's flag)."""

    def prepare(self, job_id: str) -> Any: ...


#: The receipt of a job that needs nothing more from its slot.
_DONE = Receipt.resolved(True)
#: Seconds per job under which a task counts as short: successes batched in a thread wait
#: only for jobs of short tasks before they are handed over to be committed.
SHORT_JOB = 0.02


def _releaser(release: Release, job_id: str) -> Callable[[Receipt], None]:
    """Free the job's slot once its outcome is committed."""

    def released(_: Receipt) -> None:
        release((job_id,))

    return released


#: Who notices a success's after-commit step: nobody, only the INFO log line, or handlers and
#: signal receivers (which run in the job's thread, so it waits for the commit).
NOBODY, LOG_LINE, HANDLERS = "nobody", "log line", "handlers"


def _watchers(task: Task) -> str:
    """Who would notice a success's after-commit step (handlers, signals, the log line)."""
    cls = type(task)
    if (
        signals.task_success.receivers
        or signals.task_postrun.receivers
        or cls.on_success is not Task.on_success
        or cls.after_return is not Task.after_return
    ):
        return HANDLERS
    return LOG_LINE if trace_logger.isEnabledFor(logging.INFO) else NOBODY


def _success_logger(task: Task, task_id: str, decision: Decision) -> Callable[[Receipt], None]:
    """Log the success from the committing thread, so the job's own thread need not wait."""

    def log(receipt: Receipt) -> None:
        log_success(task, task_id, decision, receipt.result())

    return log


def freeze_boot_objects() -> None:
    """Put what booting allocated (modules, tasks, the app, the engine) out of the cyclic
    collector's reach, in a worker's own process (or a prefork child) once it has booted.

    Full collections then scan only what jobs allocate: a job that builds many objects (a
    10,000-child fan-out) no longer stalls its worker for a ~30 ms collection of the whole
    heap, and a forked child does not copy those pages by touching their reference counts.
    """
    gc.collect()
    gc.freeze()
