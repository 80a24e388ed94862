"""The worker: claim jobs in batches up to the free slots, run them, commit their outcomes.

Read top to bottom: ``start`` sets up the pieces, ``_loop`` claims and dispatches, ``_done``
frees a slot, ``_shutdown`` stops warmly. Waking up: PostgreSQL LISTEN/NOTIFY, a job enqueued
in this process, a freed slot, or an adaptive poll (fast right after work, slower when idle).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbqueue import signals
from dbqueue.exceptions import ImproperlyConfigured, NotRegistered, StorageUnavailable
from dbqueue.request import Context
from dbqueue.storage import ClaimedJob, Outcome, Storage
from dbqueue.storage.control import CONTROL_CHANNEL
from dbqueue.worker.aio import EventLoopThread
from dbqueue.worker.banner import banner, parse_loglevel, setup_logging
from dbqueue.worker.beat import embedded_beat
from dbqueue.worker.completer import Completer
from dbqueue.worker.control import WorkerControl
from dbqueue.worker.limits import Stopper, Watchdog
from dbqueue.worker.maintenance import Maintenance, Schedule
from dbqueue.worker.pools import SoloPool, ThreadPool
from dbqueue.worker.runner import JobRunner, freeze_boot_objects

logger = logging.getLogger("dbqueue.worker")

POOLS = ("prefork", "threads", "solo")
#: Seconds added when sleeping until a delayed job is due, so the claim never comes too early.
DUE_MARGIN = 0.002
#: Seconds between two ownership audits (sooner after a claim that failed).
AUDIT_INTERVAL = 60.0
#: Prefetching is capped at this many seconds of expected work beyond the free slots, so a
#: worker never holds jobs that another worker could start sooner (Celery's head-of-line
#: blocking): short jobs are claimed in large batches, jobs this long or longer never early.
PREFETCH_HORIZON = 0.05
#: Most jobs one claim takes.
MAX_CLAIM = 1000
#: Weight of the newest job in the running average of time spent per job.
RUNTIME_WEIGHT = 0.1


@dataclass(eq=False)
class QueueGroup:
    """Queues that share a concurrency limit: the shared pool, or one ``name:N`` queue."""

    queues: list[str]
    concurrency: int
    shared: bool
    #: Most jobs held per slot (Celery's ``worker_prefetch_multiplier``); 1 claims free slots only.
    prefetch: int = 1
    #: Jobs claimed and not yet committed, including prefetched ones not started yet.
    running: int = 0
    next_poll: float = 0.0
    interval: float = 0.0
    outage: float = 0.0
    #: Bumped by every wake-up for these queues, so a claim that raced one does not back off.
    pokes: int = 0
    #: Running average of seconds a job spends in this worker, from claim to commit.
    job_time: float = 0.0
    #: ``async def`` jobs on the event loop, and those waiting for one of its slots.
    async_running: int = 0
    async_waiting: collections.deque[ClaimedJob] = field(default_factory=collections.deque)

    def window(self) -> int:
        """How many jobs this group may hold now: its slots, plus prefetch for short jobs."""
        if self.prefetch <= 1 or self.job_time <= 0.0:
            return self.concurrency
        ahead = self.concurrency * PREFETCH_HORIZON / self.job_time
        extra = min(self.concurrency * (self.prefetch - 1), int(ahead))
        return max(self.concurrency, min(self.concurrency + extra, MAX_CLAIM))


def parse_queues(spec: str | Sequence[str] | None, default: str) -> list[tuple[str, int | None]]:
    """``"default,emails:5"`` -> [("default", None), ("emails", 5)] (None: the shared pool)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    parsed: list[tuple[str, int | None]] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, sep, limit = item.partition(":")
        if not name.strip():
            raise ImproperlyConfigured(f"queue {item!r} has no name")
        if not sep:
            parsed.append((name, None))
            continue
        if not limit.isdigit() or int(limit) < 1:
            raise ImproperlyConfigured(f"queue {item!r}: concurrency must be a positive integer")
        parsed.append((name, int(limit)))
    return parsed or [(default, None)]


def expand_hostname(template: str) -> str:
    """Celery's node name templates: %h (host), %n (short name), %d (domain), %% (%)."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    return (
        template.replace("%%", "\0")
        .replace("%h", host)
        .replace("%n", short)
        .replace("%d", domain)
        .replace("\0", "%")
    )


class Worker:
    """A worker process for an app: ``app.Worker(queues="default,emails:5").start()``."""

    def __init__(
        self,
        app: Any,
        queues: str | Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        hostname: str | None = None,
        loglevel: str | int | None = None,
        logfile: str | None = None,
        max_tasks_per_child: int | None = None,
        app_spec: str | None = None,
        install_signals: bool | None = None,
        show_banner: bool = True,
        prefetch_multiplier: int | None = None,
        beat: bool = False,
        freeze_heap: bool = False,
    ) -> None:
        conf = app.conf
        self.app = app
        self.app_spec = app_spec
        self.pool_name = (pool or conf.worker_pool or "prefork").lower()
        if self.pool_name not in POOLS:
            raise ImproperlyConfigured(f"unknown pool {pool!r} (choose from {', '.join(POOLS)})")
        if self.pool_name == "prefork" and not hasattr(os, "fork"):
            self.pool_name = "threads"
        shared = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if self.pool_name == "solo":
            shared = 1
        parsed = parse_queues(queues, conf.task_default_queue)
        self.groups: list[QueueGroup] = []
        shared_queues = [name for name, limit in parsed if limit is None]
        if shared_queues:
            if prefetch_multiplier is None:
                prefetch_multiplier = conf.worker_prefetch_multiplier
            multiplier = int(prefetch_multiplier or 0)
            if multiplier < 0:
                raise ImproperlyConfigured("worker_prefetch_multiplier cannot be negative")
            prefetch = multiplier or MAX_CLAIM
            self.groups.append(QueueGroup(shared_queues, shared, True, prefetch=prefetch))
        for name, limit in parsed:
            if limit is not None:
                self.groups.append(
                    QueueGroup([name], 1 if self.pool_name == "solo" else limit, False)
                )
        self.queue_names = [name for name, _ in parsed]
        self.name = expand_hostname(hostname or "dbqueue@%h")
        self.id = str(uuid.uuid4())
        self.loglevel = parse_loglevel(loglevel)
        self.logfile = logfile
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.install_signals = install_signals
        self.show_banner = show_banner
        self.embed_beat = beat
        #: ``gc.freeze()`` the boot-time heap once booted: for a process that exists to run
        #: this worker (``dbqueue worker`` sets it), not for a program embedding one.
        self.freeze_heap = freeze_heap
        self.beat: Any = None
        self._jobs: dict[str, tuple[QueueGroup, float]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopping = False
        self._stopped = threading.Event()
        self._signals_seen = 0
        self._audit_due = time.monotonic() + AUDIT_INTERVAL
        self._min_interval = float(conf.worker_poll_interval_min)
        self._max_interval = float(conf.worker_poll_interval)
        #: Pause, the gate before each job start, stop requests, events (worker/control.py).
        self.control = WorkerControl(self)

    @property
    def total_slots(self) -> int:
        return sum(group.concurrency for group in self.groups)

    @property
    def running_job_count(self) -> int:
        """Jobs claimed by this worker whose outcome is not committed yet."""
        with self._lock:
            return len(self._jobs)

    @property
    def storage(self) -> Storage:
        return self.app.storage

    # -- pause, resume, cancel (worker/control.py) -------------------------------------------

    def pause(self, mode: str = "graceful") -> None:
        """Stop claiming and give back claimed jobs not started; running jobs finish
        (``"graceful"``) or are stopped and returned to the queue (``"aggressive"``)."""
        self.control.pause(mode)

    def resume(self) -> None:
        """Claim jobs again."""
        self.control.resume()

    @property
    def is_paused(self) -> bool:
        return self.control.mode is not None

    @property
    def pause_mode(self) -> str | None:
        """``"graceful"`` or ``"aggressive"`` while paused, else None."""
        return self.control.mode

    def wait_for_pause(self, timeout: float | None = None) -> bool:
        """After :meth:`pause`: wait until no job runs here; False on timeout."""
        return self.control.wait_for_pause(timeout)

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a job (revoke) and stop it at once; True if it was running here."""
        return self.control.cancel_job(job_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run until stopped (SIGTERM/SIGINT, or :meth:`stop` from another thread)."""
        if (
            self.install_signals is not False
            and threading.current_thread() is threading.main_thread()
        ):
            self._install_signal_handlers()
        if self.app.conf.worker_hijack_root_logger:
            setup_logging(self.loglevel, self.logfile, self.app.conf.worker_log_format)
        self.app.finalize()
        signals.worker_init.send(self)
        storage = self.storage
        if self.embed_beat:
            self.beat = embedded_beat(self.app)
        self._register()
        self.completer = Completer(lambda: self.app.storage, self.id, self._wake.set)
        self.completer.start()
        self.watchdog = Watchdog()
        self.stopper = Stopper()
        self.runner = JobRunner(
            self.app,
            self.name,
            self.id,
            self.completer.submit,
            self.watchdog,
            self.control,
            self.stopper,
            commit_many=self.completer.submit_many,
        )
        if self.freeze_heap:
            freeze_boot_objects()
        self.pool = self._make_pool()
        self.pool.start()
        self.loop_thread = EventLoopThread()
        self.maintenance = Maintenance(
            lambda: self.app.storage,
            self.id,
            self._schedule(),
            self._register,
            lambda n: self._poke_all(),
        )
        self.maintenance.start()
        if self.beat is not None:
            self.beat.start()
        self.control.start()
        self.listener = storage.listener(
            ["dbqueue_jobs", CONTROL_CHANNEL], self._notified, self._on_listening
        )
        self.app.add_local_waker(self._poke)
        if self.show_banner:
            print(banner(self), flush=True)
        self._announce_ready()
        try:
            self._loop()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask for a warm shutdown: stop claiming, finish running jobs, then return."""
        self._stopping = True
        self._wake.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _make_pool(self) -> Any:
        size = self.total_slots
        if self.pool_name == "prefork":
            from dbqueue.worker.prefork import PreforkPool

            return PreforkPool(
                size,
                self.app,
                self.app_spec,
                self.name,
                self.id,
                self.completer.submit,
                self._done,
                self.max_tasks_per_child,
                self.loglevel,
            )
        cls = SoloPool if self.pool_name == "solo" else ThreadPool
        return cls(size, self.runner, self._done_many)

    def _schedule(self) -> Schedule:
        conf = self.app.conf
        return Schedule(
            heartbeat=float(conf.worker_heartbeat_interval),
            reap=float(conf.stale_lock_interval or 0),
            stale_age=float(conf.stale_lock_age),
            prune=float(conf.result_prune_interval),
            result_expires=conf.result_expires_seconds,
        )

    def _register(self) -> None:
        queues = {
            name: (None if group.shared else group.concurrency)
            for group in self.groups
            for name in group.queues
        }
        from dbqueue import __version__

        self.storage.register_worker(
            self.id,
            self.name,
            socket.gethostname(),
            os.getpid(),
            queues,
            self.total_slots,
            self.pool_name,
            {"version": __version__, "tasks": sorted(self.app.tasks)},
            self.control.mode,
        )

    def _announce_ready(self) -> None:
        message = f"{self.name} ready."
        if logger.isEnabledFor(logging.INFO):
            logger.info(message)
        else:
            print(message, file=sys.stderr, flush=True)
        signals.worker_ready.send(self)

    # -- waking ------------------------------------------------------------------------------

    def _notified(self, channel: str, queue: str) -> None:
        if channel == CONTROL_CHANNEL:
            self.control.notified()
        elif queue in self.queue_names:
            self._poke(queue)

    def _on_listening(self) -> None:
        """(Re)connected: notifications sent meanwhile are lost, so look again."""
        self._poke_all()
        self.control.notified()

    def _poke(self, queue: str) -> None:
        """Work may be waiting in ``queue``: claim at the next turn of the loop."""
        for group in self.groups:
            if queue in group.queues:
                group.pokes += 1
                group.next_poll = 0.0
                group.interval = self._min_interval
        self._wake.set()

    def _poke_all(self) -> None:
        for group in self.groups:
            group.pokes += 1
            group.next_poll = 0.0
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            if now >= self._audit_due:
                self._audit()
            wake_at = now + self._max_interval
            backlogged = self.completer.backlog > max(self.total_slots, MAX_CLAIM)
            paused = self.control.mode is not None
            for group in self.groups:
                free = group.window() - group.running
                if free <= 0 or backlogged or paused:
                    continue
                if group.next_poll > now:
                    wake_at = min(wake_at, group.next_poll)
                    continue
                self._claim_into(group, free, now)
                if group.next_poll > now and group.window() > group.running:
                    wake_at = min(wake_at, group.next_poll)
            self._wake.wait(max(0.0, wake_at - time.monotonic()))
            self._wake.clear()

    def _claim_into(self, group: QueueGroup, free: int, now: float) -> None:
        pokes = group.pokes
        try:
            jobs = self.storage.claim(
                self.id, group.queues, free, self.app.conf.dequeue_retry, self._claim_in_doubt
            )
        except Exception as error:
            self._audit_due = 0.0
            group.outage = min(max(group.outage * 2, 1.0), 30.0)
            group.next_poll = now + group.outage
            logger.error(
                "Cannot claim jobs from %s, retrying in %.0fs: %s",
                ",".join(group.queues),
                group.outage,
                error if isinstance(error, StorageUnavailable) else repr(error),
            )
            return
        group.outage = 0.0
        if jobs:
            self._dispatch(group, jobs)
        if len(jobs) >= free:
            group.next_poll, group.interval = now, self._min_interval
        elif jobs:
            group.next_poll, group.interval = now + self._min_interval, self._min_interval
        elif group.pokes != pokes:
            group.next_poll = now
        else:
            group.interval = min(max(group.interval * 2, self._min_interval), self._max_interval)
            group.next_poll = now + group.interval
            if group.interval >= self._max_interval:
                self._sleep_until_due(group)

    def _claim_in_doubt(self, error: BaseException) -> None:
        """A claim attempt failed; its commit may have landed all the same: audit soon."""
        self._audit_due = 0.0

    def _audit(self) -> None:
        """Release jobs the database says this worker holds but nothing here is running.

        They come from a claim whose commit succeeded while its reply was lost: the retry
        claimed other jobs, and the heartbeat would keep the reaper off these forever.
        """
        self._audit_due = time.monotonic() + AUDIT_INTERVAL
        try:
            held = self.storage.running_ids(self.id)
        except Exception as error:
            logger.warning("Ownership audit failed: %s", error)
            self._audit_due = 0.0
            return
        with self._lock:
            tracked = set(self._jobs)
        tracked |= self.completer.job_ids()
        orphans = sorted(held - tracked)
        if orphans:
            released = self._release(orphans)
            logger.warning("Released %d job(s) claimed by a claim whose reply was lost", released)

    def _sleep_until_due(self, group: QueueGroup) -> None:
        """An idle queue with a delayed job: wake exactly when it becomes due."""
        try:
            due, db_now = self.storage.next_run_at(group.queues)
        except Exception:
            return
        if due is not None:
            wake = time.monotonic() + max(due - db_now, 0.0) + DUE_MARGIN
            group.next_poll = min(group.next_poll, wake)

    def _dispatch(self, group: QueueGroup, jobs: list[ClaimedJob]) -> None:
        claimed = time.monotonic()
        with self._lock:
            group.running += len(jobs)
            for job in jobs:
                self._jobs[job.id] = (group, claimed)
        control = self.control
        if control.events.on:
            control.events.started(jobs)
        tasks = self.app.tasks
        log_received = logger.isEnabledFor(logging.INFO)
        runnable: list[ClaimedJob] = []
        for job in jobs:
            task = tasks.get(job.task)
            if task is None:
                self._unknown(job)
            elif (
                job.expires_at is not None
                and job.claimed_at > job.expires_at
                and not job.checkpointed  # a workflow resuming is not a late start
            ):
                self._expire(job, task)
            else:
                if log_received:
                    logger.info("Task %s[%s] received", job.task, job.id)
                if signals.task_received.receivers:
                    signals.task_received.send(self, request=job)
                if control.active and control.holds(job):
                    control.hold(job)
                elif task.is_async:
                    self._start_async(group, job)
                else:
                    runnable.append(job)
        if runnable:
            self.pool.submit_many(runnable)

    def _start_async(self, group: QueueGroup, job: ClaimedJob | None) -> None:
        """Start an ``async def`` job on the event loop, or queue it: at most -c run at once."""
        with self._lock:
            if job is not None:
                group.async_waiting.append(job)
            if group.async_running >= group.concurrency or not group.async_waiting:
                return
            group.async_running += 1
            job = group.async_waiting.popleft()
        job_id = job.id

        def done(_: Any) -> None:
            with self._lock:
                group.async_running -= 1
            self._done(job_id)
            if not self._stopping:
                self._start_async(group, None)

        self.loop_thread.submit(self.runner.run_async(job), done)

    def _unstarted_async(self) -> list[ClaimedJob]:
        with self._lock:
            jobs = [job for group in self.groups for job in group.async_waiting]
            for group in self.groups:
                group.async_waiting.clear()
        return jobs

    def _unknown(self, job: ClaimedJob) -> None:
        error = NotRegistered(
            f"Received unregistered task of type {job.task!r} (worker {self.name} knows "
            f"{len(self.app.tasks)} tasks): is the module imported by -A / include?"
        )
        logger.error("%s. Job %s failed.", error, job.id)
        signals.task_unknown.send(self, message=job, exc=error, name=job.task, id=job.id)
        outcome = Outcome(
            "fail", job.id, error_type="dbqueue.exceptions.NotRegistered", error=str(error)
        )
        self.completer.submit(outcome).add_done_callback(self._done_callback(job.id))

    def _expire(self, job: ClaimedJob, task: Any) -> None:
        logger.info("Task %s[%s] expired before it started: revoked", job.task, job.id)
        request = Context(id=job.id, task=job.task, queue=job.queue)
        signals.task_revoked.send(
            task, request=request, terminated=False, signum=None, expired=True
        )
        self.completer.submit(Outcome("expire", job.id)).add_done_callback(
            self._done_callback(job.id)
        )

    def _done_callback(self, job_id: str) -> Callable[[Any], None]:
        def done(_: Any) -> None:
            self._done(job_id)

        return done

    def _done(self, job_id: str) -> None:
        """A job's outcome is committed: free its slot, and claim again if worth it."""
        self._done_many((job_id,))

    def _done_many(self, job_ids: Sequence[str]) -> None:
        """Free the slots of jobs whose outcomes are handed over; claim again once half free."""
        now = time.monotonic()
        groups: set[QueueGroup] = set()
        with self._lock:
            for job_id in job_ids:
                entry = self._jobs.pop(job_id, None)
                if entry is None:
                    continue
                group, claimed = entry
                group.running -= 1
                spent = now - claimed
                if group.job_time:
                    group.job_time += (spent - group.job_time) * RUNTIME_WEIGHT
                else:
                    group.job_time = spent
                groups.add(group)
            if not self._jobs:
                self._idle.notify_all()
        for group in groups:
            window = group.window()
            if group.next_poll <= now and (
                (window - group.running) * 2 >= window or group.running == 0
            ):
                self._wake.set()

    # -- shutdown ----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, frame: Any) -> None:
            self._signals_seen += 1
            if self._signals_seen > 1 or signum == signal.SIGQUIT:
                self._cold_shutdown(signum)
            logger.warning(
                "Warm shutdown (%s): finishing running jobs, press Ctrl-C again "
                "for a cold shutdown",
                signal.Signals(signum).name,
            )
            signals.worker_shutting_down.send(
                self.name, sig=signal.Signals(signum).name, how="Warm", exitcode=0
            )
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handle)
        signal.signal(signal.SIGQUIT, handle)

    def _cold_shutdown(self, signum: int) -> None:
        logger.warning(
            "Cold shutdown (%s): running jobs will be recovered by the reaper",
            signal.Signals(signum).name,
        )
        pool = getattr(self, "pool", None)
        if pool is not None and hasattr(pool, "kill"):
            pool.kill()
        logging.shutdown()
        os._exit(1)

    def _shutdown(self) -> None:
        """Warm shutdown: release unstarted jobs, wait for running ones, then leave."""
        self._stopping = True
        if self.beat is not None:
            self.beat.stop()
        self.app.remove_local_waker(self._poke)
        unstarted = self.pool.drain_unstarted() + self._unstarted_async()
        if unstarted:
            released = self._release([job.id for job in unstarted])
            logger.info("Released %d claimed job(s) that had not started", released)
        timeout = float(self.app.conf.worker_shutdown_timeout)
        with self._idle:
            self._idle.wait_for(lambda: not self._jobs, timeout)
            leftover = list(self._jobs)
        if leftover:
            logger.warning(
                "%d job(s) still running after %.0fs: releasing them to the queue",
                len(leftover),
                timeout,
            )
            if hasattr(self.pool, "kill"):
                self.pool.kill()
            self._release(leftover)
        # Threads still stuck in released jobs are not waited for: the process exits next.
        self.pool.stop(0.0 if leftover else 5.0)
        self.completer.stop()
        self.control.stop()
        self.maintenance.stop()
        if self.listener is not None:
            self.listener.stop()
        self.loop_thread.stop()
        self.watchdog.stop()
        try:
            self.storage.unregister_worker(self.id)
        except Exception as error:
            logger.warning("Could not remove this worker from the registry: %s", error)
        signals.worker_shutdown.send(self)
        self._stopped.set()

    def _release(self, ids: list[str]) -> int:
        try:
            count = self.storage.release(self.id, ids)
        except Exception as error:
            logger.error("Could not release %d job(s); the reaper will: %s", len(ids), error)
            return 0
        with self._lock:
            for job_id in ids:
                entry = self._jobs.pop(job_id, None)
                if entry is not None:
                    entry[0].running -= 1
        return count
