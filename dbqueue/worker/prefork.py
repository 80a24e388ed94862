"""``-P prefork``: child processes run sync jobs; the parent claims, commits and supervises.

The parent sends a job to an idle child over a pipe; the child runs it and sends back the
outcome, which the parent commits (group commit with every other job) before acknowledging,
so the child's ``task_success`` handlers see a committed result. The parent enforces time
limits (SIGUSR1 raises SoftTimeLimitExceeded in the child; the hard limit kills it), replaces
children that die or reach ``max_tasks_per_child``, and settles the job a dead child held.
A job being stopped (aggressive pause, terminate) gets SIGUSR2, which raises JobStopped in the
child; if it has not stopped after ``worker_stop_timeout`` its child is killed and replaced.

Children are started through a fork server when the app can be imported by name (``-A``), so
they never inherit the parent's threads or database connections; otherwise they are forked.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from dbqueue import control as app_control
from dbqueue import signals
from dbqueue.exceptions import JobStopped, SoftTimeLimitExceeded
from dbqueue.request import current_request
from dbqueue.storage import ClaimedJob, Outcome
from dbqueue.worker.completer import Receipt
from dbqueue.worker.runner import JobRunner, freeze_boot_objects, time_limits

logger = logging.getLogger("dbqueue.worker")

#: Seconds between two checks, in a child, that the worker that started it is alive.
PARENT_CHECK_INTERVAL = 0.5


@dataclass
class _Child:
    process: Any
    conn: Connection
    job: ClaimedJob | None = None
    soft_at: float | None = None
    hard_at: float | None = None
    soft_sent: bool = False
    reported: bool = False
    killed: bool = False
    #: When a job asked to stop gets its child killed, if it has not reported by then.
    stop_at: float | None = None
    #: The child said its last job was its last (max_tasks_per_child): give it no more.
    retiring: bool = False
    #: The child process is gone: give it no more.
    exited: bool = False
    #: A job handed to the child that it had not started when it exited cleanly.
    started: bool = False
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: Any) -> None:
        with self.send_lock:
            try:
                self.conn.send(message)
            except (BrokenPipeError, OSError):
                pass


class PreforkPool:
    """Supervises ``size`` child processes running sync jobs."""

    name = "prefork"

    def __init__(
        self,
        size: int,
        app: Any,
        app_spec: str | None,
        hostname: str,
        worker_id: str,
        commit: Callable[[Outcome, bool], Receipt],
        on_done: Callable[[str], None],
        max_tasks_per_child: int | None,
        loglevel: int,
    ) -> None:
        self.size = size
        self.app = app
        self.app_spec = app_spec
        self.hostname = hostname
        self.worker_id = worker_id
        self.commit = commit
        self.on_done = on_done
        self.max_tasks = max_tasks_per_child
        self.loglevel = loglevel
        self.stop_timeout = float(app.conf.worker_stop_timeout)
        method = "forkserver" if app_spec else "fork"
        self._ctx: Any = multiprocessing.get_context(method)
        if app_spec:
            self._ctx.set_forkserver_preload([app_spec.partition(":")[0]])
        self._children: list[_Child] = []
        self._backlog: list[ClaimedJob] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._wakeup_r, self._wakeup_w = self._ctx.Pipe(duplex=False)
        self._thread = threading.Thread(target=self._supervise, name="dbqueue-prefork", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.size):
            self._children.append(self._spawn())
        self._thread.start()

    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=child_main,
            args=(
                self.app_spec,
                None if self.app_spec else self.app,
                child_conn,
                self.hostname,
                self.worker_id,
                self.max_tasks,
                self.loglevel,
                os.getpid(),
            ),
            name="dbqueue-child",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return _Child(process, parent_conn)

    def stop(self, timeout: float) -> None:
        """Ask idle children to exit, wait up to ``timeout``, then kill the rest."""
        self._stopping = True
        for child in list(self._children):
            child.send(None)
        deadline = time.monotonic() + timeout
        for child in list(self._children):
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                child.process.kill()
                child.process.join(1.0)
        self._wakeup_w.send(b"")
        self._thread.join(2.0)

    def kill(self) -> None:
        """Cold shutdown: kill every child now."""
        self._stopping = True
        for child in self._children:
            if child.process.is_alive():
                child.process.kill()

    # -- dispatching -------------------------------------------------------------------------

    def submit_many(self, jobs: list[ClaimedJob]) -> None:
        for job in jobs:
            self.submit(job)

    def submit(self, job: ClaimedJob) -> None:
        with self._lock:
            child = next(
                (
                    c
                    for c in self._children
                    if c.job is None and not c.killed and not c.retiring and c.process.is_alive()
                ),
                None,
            )
            if child is None:
                self._backlog.append(job)
                return
            self._assign(child, job)

    def _assign(self, child: _Child, job: ClaimedJob) -> None:
        task = self.app.tasks[job.task]
        soft, hard = time_limits(self.app, task, job)
        now = time.monotonic()
        child.job, child.reported, child.soft_sent = job, False, False
        child.stop_at = None
        child.soft_at = now + soft if soft else None
        child.hard_at = now + hard if hard else None
        child.send(("job", job))
        self._wakeup_w.send(b"")

    def drain_unstarted(self) -> list[ClaimedJob]:
        with self._lock:
            jobs, self._backlog = self._backlog, []
        return jobs

    def stop_job(self, job_id: str) -> bool:
        """Stop a job a child runs: SIGUSR2 now, SIGKILL after ``worker_stop_timeout``."""
        with self._lock:
            child = next(
                (
                    c
                    for c in self._children
                    if c.job is not None and c.job.id == job_id and not c.reported
                ),
                None,
            )
            if child is None:
                return False
            if child.stop_at is not None:
                return True
            child.stop_at = time.monotonic() + self.stop_timeout
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.process.pid, signal.SIGUSR2)
        self._wakeup_w.send(b"")
        return True

    # -- supervision (one thread) ------------------------------------------------------------

    def _supervise(self) -> None:
        while not (self._stopping and not any(c.process.is_alive() for c in self._children)):
            by_conn = {c.conn: c for c in self._children if not c.killed}
            by_sentinel = {c.process.sentinel: c for c in self._children}
            ready = wait([*by_conn, *by_sentinel, self._wakeup_r], self._next_timeout())
            for item in ready:
                if item is self._wakeup_r:
                    with contextlib.suppress(EOFError, OSError):
                        self._wakeup_r.recv()
                elif item in by_conn:
                    self._receive(by_conn[item])
            for item in ready:
                if item in by_sentinel:
                    self._reap_child(by_sentinel[item])
            self._enforce_limits()

    def _next_timeout(self) -> float:
        deadlines = [
            d
            for c in self._children
            if c.job is not None and not c.reported
            for d in (None if c.soft_sent else c.soft_at, c.hard_at, c.stop_at)
            if d is not None
        ]
        if not deadlines:
            return 0.5
        return max(0.0, min(min(deadlines) - time.monotonic(), 0.5))

    def _receive(self, child: _Child) -> bool:
        """Handle one message from the child; False once its pipe is closed."""
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            return False
        kind = message[0]
        if kind == "outcome" and child.job is not None and not child.killed:
            child.reported = True
            outcome = message[1]
            outcome.claim = child.job  # the child's copy is not the object claimed here
            receipt = self.commit(outcome, message[2])
            if message[2]:
                receipt.add_done_callback(_acknowledge(child))
        elif kind == "done":
            child.retiring = bool(message[2])
            self._finished(child)
        return True

    def _finished(self, child: _Child) -> None:
        job = child.job
        with self._lock:
            child.job = None
            if self._backlog and not self._stopping and not child.retiring and not child.exited:
                self._assign(child, self._backlog.pop(0))
        if job is not None:
            self.on_done(job.id)

    def _reap_child(self, child: _Child) -> None:
        """A child exited: settle the job it held, then replace it.

        Messages it sent before exiting (its last "done") are read first: the exit can be
        seen before them.
        """
        child.process.join(0)
        child.exited = True
        with contextlib.suppress(EOFError, OSError):
            while not child.killed and child.conn.poll() and self._receive(child):
                pass
        job = child.job
        if job is not None:
            if child.reported:
                self._finished(child)
            elif child.process.exitcode == 0:
                self._give_back(child, job)
            else:
                self._settle_lost(child, job)
        with self._lock:
            if child in self._children:
                self._children.remove(child)
            if not self._stopping:
                replacement = self._spawn()
                self._children.append(replacement)
                if self._backlog:
                    self._assign(replacement, self._backlog.pop(0))

    def _give_back(self, child: _Child, job: ClaimedJob) -> None:
        """A child that exited cleanly never ran the job it was handed: run it elsewhere."""
        child.job = None
        with self._lock:
            if not self._stopping:
                self._backlog.insert(0, job)
                return
        self.commit(Outcome("release", job.id), True).result()
        self.on_done(job.id)

    def _settle_lost(self, child: _Child, job: ClaimedJob) -> None:
        code = child.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if child.stop_at is not None:
            logger.warning(
                "Job %s of %s did not stop in time: its child process was replaced",
                job.id,
                job.task,
            )
            outcome = Outcome("release", job.id)
        elif child.killed:
            outcome = Outcome(
                "fail",
                job.id,
                error_type="dbqueue.exceptions.TimeLimitExceeded",
                error=f"hard time limit exceeded: child process killed ({how})",
            )
        else:
            message = (
                f"Worker exited prematurely: child process {child.process.pid} ended "
                f"with {how} during attempt {job.attempt}"
            )
            budget_left = job.max_retries is None or job.attempt <= job.max_retries
            outcome = Outcome(
                "retry" if budget_left else "fail",
                job.id,
                error_type="dbqueue.exceptions.WorkerLostError",
                error=message,
            )
            logger.error("Job %s of %s: %s", job.id, job.task, message)
        self.commit(outcome, True).result()
        child.job = None
        self.on_done(job.id)

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.job is None or child.reported or child.killed:
                continue
            if child.stop_at is not None and now >= child.stop_at:
                child.killed = True
                child.process.kill()
            elif child.hard_at is not None and now >= child.hard_at:
                logger.error(
                    "Job %s of %s exceeded its hard time limit: killing child %s",
                    child.job.id,
                    child.job.task,
                    child.process.pid,
                )
                child.killed = True
                child.process.kill()
            elif child.soft_at is not None and now >= child.soft_at and not child.soft_sent:
                child.soft_sent = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGUSR1)


#: What a child's commit returns when it asked for no acknowledgement.
_UNASKED = Receipt.resolved(True)


def _acknowledge(child: _Child) -> Callable[[Receipt], None]:
    """Tell a child whether its outcome was committed while the job was still ours."""

    def send(future: Receipt) -> None:
        child.send(("ack", future.result()))

    return send


# -- the child process ---------------------------------------------------------------------------


class _BodyFlag:
    """Marks when a job body runs, so a late SIGUSR1/SIGUSR2 never lands in dbqueue's code."""

    def __init__(self) -> None:
        self.in_body = False

    def prepare(self, job_id: str) -> _BodyFlag:
        return self

    def __enter__(self) -> None:
        self.in_body = True

    def __exit__(self, *exc: object) -> None:
        self.in_body = False


def _exit_with_parent(parent_pid: int) -> None:
    """Die with the worker: a child must not keep running jobs its dead parent gave it up for."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_INTERVAL)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="dbqueue-parent-watch", daemon=True).start()


def child_main(
    app_spec: str | None,
    app: Any,
    conn: Connection,
    hostname: str,
    worker_id: str,
    max_tasks: int | None,
    loglevel: int,
    parent_pid: int,
) -> None:
    """The loop of one prefork child: receive a job, run it, report, repeat."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_parent(parent_pid)
    if app_spec:
        from dbqueue.utils.imports import find_app
        from dbqueue.worker.banner import setup_logging

        setup_logging(loglevel, None)
        app = find_app(app_spec)
    flag = _BodyFlag()

    def soft_limit(signum: int, frame: Any) -> None:
        if flag.in_body:
            raise SoftTimeLimitExceeded("soft time limit exceeded")

    def stop(signum: int, frame: Any) -> None:
        request = current_request()
        if request is not None and request.id:
            app_control._stopping.add(str(request.id))
        if flag.in_body:
            raise JobStopped("stopped by the worker")

    signal.signal(signal.SIGUSR1, soft_limit)
    signal.signal(signal.SIGUSR2, stop)
    signals.worker_process_init.send(hostname)

    def commit(outcome: Outcome, wait: bool) -> Receipt:
        outcome.claim = None  # the parent attaches its own claim: no need to send this one
        conn.send(("outcome", outcome, wait))
        if not wait:
            return _UNASKED
        reply = conn.recv()
        return Receipt.resolved(bool(reply[1]))

    runner = JobRunner(app, hostname, worker_id, commit, stopper=flag)
    freeze_boot_objects()
    done = 0
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message is None:
                break
            job = message[1]
            app_control._stopping.clear()
            runner.run(job)
            done += 1
            retiring = bool(max_tasks and done >= max_tasks)
            conn.send(("done", job.id, retiring))
            if retiring:
                break
    finally:
        signals.worker_process_shutdown.send(hostname, pid=os.getpid(), exitcode=0)
