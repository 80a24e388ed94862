"""A worker's control: pausing it, the gate in front of every job start, stopping running jobs,
and the control pass that hears about requests made in other processes.

* Pause: graceful stops claiming and gives back claimed jobs that have not started; aggressive
  also stops the running ones, which go back to the queue with their attempt given back (the
  worker is paused, not the jobs: another worker may take them).
* Gate: a job about to start is released instead when the worker is paused, its queue is
  paused, or a pause, revoke or takeover of it is known here. Checking costs one attribute read
  while nothing is paused.
* Stopping: a sync job gets :class:`~dbqueue.exceptions.JobStopped` raised into its thread (the
  time-limit watchdog's mechanism, ``limits.Stopper``), an async job is cancelled, a prefork
  child is signalled (and replaced if the job does not stop within ``worker_stop_timeout``).
* Control pass: one read every ``worker_control_interval`` (at once when PostgreSQL notifies):
  requests on the jobs held here, this worker's pause mode, paused queues, event subscribers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dbqueue import control as app_control
from dbqueue import signals
from dbqueue.control import AGGRESSIVE, check_mode
from dbqueue.events import SUBSCRIBER_AGE
from dbqueue.exceptions import JobStopped
from dbqueue.execution import Decision
from dbqueue.storage import ClaimedJob, Outcome
from dbqueue.storage.control import PAUSE_AGGRESSIVE, TERMINATE
from dbqueue.worker.events import WorkerEvents

if TYPE_CHECKING:
    from dbqueue.worker.completer import Receipt
    from dbqueue.worker.worker import Worker

logger = logging.getLogger("dbqueue.worker")

#: Requests on a held job that mean "stop it now".
_STOP = (PAUSE_AGGRESSIVE, TERMINATE)


class WorkerControl:
    """Pause state, gate, stop requests and control pass of one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        #: The worker's pause mode, None while it runs.
        self.mode: str | None = None
        #: Whether any job might have to be held at the gate (read on every job start).
        self.active = False
        self.paused_queues: frozenset[str] = frozenset()
        #: Held jobs with a request (control value, or the status of a revoked/taken job).
        self.requests: dict[str, str] = {}
        self.events = WorkerEvents(worker, self)
        self._lock = threading.Lock()
        #: Local changes are numbered, so a control pass that read the database before one was
        #: written never undoes it.
        self._gen = 0
        #: Local pause/resume writes not yet committed (the database's mode is stale meanwhile).
        self._writing = 0
        #: A mode whose write failed: each control pass writes it again, and until one does,
        #: the database's (stale) mode is not applied here.
        self._unwritten: tuple[str | None] | None = None
        #: The generation of the latest change of the worker's mode.
        self._mode_gen = 0
        self._local_jobs: dict[str, tuple[str | None, int]] = {}
        self._local_queues: dict[str, tuple[bool, int]] = {}
        #: Jobs this worker was asked to stop (until they leave it).
        self._asked: set[str] = set()
        self._tasks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = {}
        self._cancelled: set[str] = set()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Attach to the app, run a first control pass (so the worker claims nothing before it
        knows its pause state and whether anyone follows events), then keep passing."""
        self.worker.completer.observer = self.events.finished
        self.worker.app.controller.attach(self)
        try:
            self.control_pass()
        except Exception as error:
            logger.warning("Control pass failed: %s", error)
        self._thread = threading.Thread(target=self._run, name="dbqueue-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.worker.app.controller.detach(self)
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.worker.app.event_bus.close()
        self.events.stop()

    def notified(self) -> None:
        """PostgreSQL said a request was written: run the control pass now."""
        self._wake.set()

    def _run(self) -> None:
        interval = float(self.worker.app.conf.worker_control_interval)
        while not self._halt.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._halt.is_set():
                return
            try:
                self.control_pass()
            except Exception as error:
                logger.warning("Control pass failed: %s", error)

    # -- the control pass ----------------------------------------------------------------------

    def control_pass(self) -> None:
        """Read what other processes asked for and apply it (one round trip)."""
        worker = self.worker
        self._write_again()
        gen = self._gen
        held = list(worker._jobs)
        found = worker.storage.control_requests(worker.id, held, SUBSCRIBER_AGE)
        with self._lock:
            self._local_jobs = {k: v for k, v in self._local_jobs.items() if v[1] > gen}
            self._local_queues = {k: v for k, v in self._local_queues.items() if v[1] > gen}
            requests = dict(found.jobs)
            for job_id, (request, _) in self._local_jobs.items():
                if request is None:
                    requests.pop(job_id, None)
                else:
                    requests[job_id] = request
            queues = set(found.paused_queues)
            for name, (paused, _) in self._local_queues.items():
                (queues.add if paused else queues.discard)(name)
            self.requests = requests
            self.paused_queues = frozenset(queues)
            self._refresh()
        self.events.set_active(found.subscribers > 0)
        for job_id, request in requests.items():
            if request in _STOP:
                self.stop_job(job_id)
        if found.found and gen == self._gen and found.pause_mode != self.mode:
            if found.pause_mode is not None:
                check_mode(found.pause_mode)
            self._set_mode(found.pause_mode, write=False, seen=gen)
        gone = self._asked - set(worker._jobs)
        if gone:
            self._asked -= gone
            app_control._stopping.difference_update(gone)

    def _refresh(self) -> None:
        self.active = self.mode is not None or bool(self.paused_queues) or bool(self.requests)

    # -- told at once by this process's app (dbqueue.control.LocalControl) -----------------------

    def local_job_request(self, job_id: str, request: str | None) -> None:
        with self._lock:
            self._gen += 1
            self._local_jobs[job_id] = (request, self._gen)
            if request is None:
                self.requests.pop(job_id, None)
            else:
                self.requests = {**self.requests, job_id: request}
            self._refresh()
        if request in _STOP:
            self.stop_job(job_id)

    def local_queue(self, name: str, paused: bool) -> None:
        with self._lock:
            self._gen += 1
            self._local_queues[name] = (paused, self._gen)
            queues = set(self.paused_queues)
            (queues.add if paused else queues.discard)(name)
            self.paused_queues = frozenset(queues)
            self._refresh()

    def local_worker(self, name: str, mode: str | None) -> bool:
        if name not in (self.worker.name, self.worker.id):
            return False
        if mode is None:
            self.resume(write=False)
        else:
            self.pause(mode, write=False)
        return True

    # -- pausing the worker --------------------------------------------------------------------

    def pause(self, mode: str, write: bool = True) -> None:
        """Stop claiming; release claimed jobs not started; aggressive: stop running ones."""
        check_mode(mode)
        self._set_mode(mode, write)

    def resume(self, write: bool = True) -> None:
        self._set_mode(None, write)

    def _set_mode(self, mode: str | None, write: bool, seen: int | None = None) -> None:
        """Pause (``mode``) or resume (None). ``seen``: the generation a control pass read the
        database at; the change is dropped if a local one came since (checked under the lock)."""
        worker = self.worker
        with self._lock:
            if seen is not None and (
                seen != self._gen or self._writing or self._unwritten is not None
            ):
                return
            self._gen += 1
            self._mode_gen = change = self._gen
            self._writing += int(write)
            self._unwritten = None  # a newer mode: the failed write of an older one is moot
            changed = self.mode != mode
            self.mode = mode
            self._refresh()
        if write:
            self._write_mode(mode, change)
        if mode is None:
            if changed:
                logger.warning("Worker %s resumed", worker.name)
                signals.worker_resumed.send(worker)
                self.events.worker_event(paused=False, mode=None)
                worker._poke_all()
            return
        pool = getattr(worker, "pool", None)
        if pool is not None:
            unstarted = pool.drain_unstarted()
            if unstarted:
                worker._release([job.id for job in unstarted])
        if mode == AGGRESSIVE:
            for job_id in list(worker._jobs):
                self.stop_job(job_id)
        if changed:
            logger.warning("Worker %s paused (%s)", worker.name, mode)
            signals.worker_paused.send(worker, mode=mode)
            self.events.worker_event(paused=True, mode=mode)

    def _write_mode(self, mode: str | None, change: int) -> None:
        """Store the mode for other processes. A control pass that reads the row before this
        commits sees the old mode: until it is written, and for any pass that began before,
        the database's mode is not applied here (``_writing``, then the generation moves).
        If the write fails, the next control pass writes it again (``_unwritten``)."""
        written = False
        try:
            self.worker.storage.pause_worker(self.worker.id, mode)
            written = True
        except Exception as error:
            logger.warning("Could not record the worker's pause state (retried): %s", error)
        finally:
            with self._lock:
                self._writing -= 1
                self._gen += 1
                if self._mode_gen == change:  # no newer change replaced this one
                    self._unwritten = None if written else (mode,)

    def _write_again(self) -> None:
        """A control pass first retries a mode whose write failed."""
        with self._lock:
            if self._unwritten is None:
                return
            mode, change = self._unwritten[0], self._mode_gen
            self._writing += 1
        self._write_mode(mode, change)

    def wait_for_pause(self, timeout: float | None = None) -> bool:
        """Wait until no job is held here; False on timeout. The worker must be paused."""
        if self.mode is None:
            raise RuntimeError(f"worker {self.worker.name} is not paused: call pause() first")
        worker = self.worker
        with worker._idle:
            return worker._idle.wait_for(lambda: not worker._jobs, timeout)

    # -- the gate ------------------------------------------------------------------------------

    def holds(self, job: ClaimedJob) -> bool:
        """Whether a job about to start must be released instead (read when :attr:`active`)."""
        return self.mode is not None or job.queue in self.paused_queues or job.id in self.requests

    def hold(self, job: ClaimedJob) -> None:
        """Release a claimed job that has not started (it pauses if its pause was asked),
        through the group commit like any outcome; its slot is freed once written."""
        logger.info("Task %s[%s] released before it started (paused)", job.task, job.id)
        worker = self.worker
        receipt = worker.completer.submit(Outcome("release", job.id))
        receipt.add_done_callback(worker._done_callback(job.id))

    def hold_receipt(self, job: ClaimedJob, commit: Callable[[Outcome, bool], Receipt]) -> Receipt:
        """The runner's form of :meth:`hold`: the release goes through the group commit."""
        logger.info("Task %s[%s] released before it started (paused)", job.task, job.id)
        receipt = commit(Outcome("release", job.id), True)
        receipt.result()
        return receipt

    # -- stopping running jobs -----------------------------------------------------------------

    def stop_job(self, job_id: str) -> bool:
        """Stop a job running here at once; False if it is not running (yet: the gate holds
        it). Asking again while the same run is stopping does nothing more."""
        if job_id not in self._asked:
            self._asked.add(job_id)
            logger.warning("Stopping job %s", job_id)
        app_control._stopping.add(job_id)
        worker = self.worker
        stopper = getattr(worker, "stopper", None)
        if stopper is not None and stopper.interrupt(job_id, JobStopped):
            return True
        entry = self._tasks.get(job_id)
        if entry is not None:
            entry[0].call_soon_threadsafe(self._cancel_task, job_id)
            return True
        stop = getattr(getattr(worker, "pool", None), "stop_job", None)
        return bool(stop is not None and stop(job_id))

    def _cancel_task(self, job_id: str) -> None:
        """In the event loop: cancel an async job's task once, if it still runs the body."""
        entry = self._tasks.get(job_id)
        if entry is not None and job_id not in self._cancelled:
            self._cancelled.add(job_id)
            entry[1].cancel()

    async def stoppable(self, job_id: str, body: Awaitable[Decision]) -> Decision:
        """Run an async job's body so that :meth:`stop_job` can cancel it."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks[job_id] = (asyncio.get_running_loop(), task)
        try:
            return await body
        except asyncio.CancelledError:
            if job_id not in self._cancelled:
                raise
            task.uncancel()
            return Decision("stopped", exc=JobStopped(f"job {job_id} was stopped"))
        finally:
            self._tasks.pop(job_id, None)
            self._cancelled.discard(job_id)

    def cancel_job(self, job_id: str) -> bool:
        """Revoke a job and stop it if it runs here; True if it was held by this worker."""
        held = job_id in self.worker._jobs
        self.worker.app.controller.revoke([job_id], terminate=True)
        return held

    def request_for(self, job_id: str) -> str | None:
        return self.requests.get(job_id)
