"""The scheduler ("beat"): fires an app's schedules, each fire time exactly once, from any
number of processes at once.

It runs as a thread of a worker (``dbqueue worker -B``) or on its own (``dbqueue beat``). On
start it registers the app's schedules in ``dbqueue_schedules``. Then it loops: read its
schedules' rows and the database clock, fire what is due, sleep until the earliest next fire
time (at most ``beat_max_loop_interval``, so an operator's enable or a redeploy elsewhere is
noticed). A fire is one transaction: a compare-and-set on the row's version, then the job's
INSERT. There is no leader: a scheduler that loses the race simply reads again.

Catching up (``beat_catch_up``, per schedule ``catch_up=``): a fire time up to
``beat_misfire_grace_time`` seconds late fires normally, one after another if several are.
Later than that the scheduler was down: 'one' fires a single catch-up run for all the missed
fire times, 'skip' fires none; both then continue at the next fire time after now.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING

from dbqueue import signals
from dbqueue.schedules.base import Schedule
from dbqueue.schedules.entries import Definition, ScheduleEntry, collect, define
from dbqueue.storage.base import NewJob
from dbqueue.storage.schedules import Claim, ScheduleState, ScheduleStore
from dbqueue.utils.timeutils import iso

if TYPE_CHECKING:
    from dbqueue.app import DBQueue

logger = logging.getLogger("dbqueue.beat")

#: Seconds added to a sleep until a fire time, so the database clock has passed it on waking.
DUE_MARGIN = 0.002
#: Longest pause between two attempts while the database is unreachable.
MAX_OUTAGE_PAUSE = 30.0
#: Namespace of job ids: uuid5(name@fire time) makes each fire time's job id unique too.
JOB_NAMESPACE = uuid.UUID("4f0e2a56-61b8-4d3c-9a51-6c1d3b9f7e21")


def plan(
    schedule: Schedule, due: float, now: float, catch_up: str, grace: float
) -> tuple[float | None, float]:
    """(fire time to claim, or None to skip; the next cursor) for a schedule due at ``due``."""
    if now - due <= grace:
        return due, schedule.next_after(due)
    return (None if catch_up == "skip" else due), schedule.next_after(now)


def job_id(name: str, fire_at: float) -> str:
    """The id of the job fired for ``name`` at ``fire_at``: the same in every process."""
    return str(uuid.uuid5(JOB_NAMESPACE, f"{name}@{round(fire_at * 1000)}"))


class Beat:
    """Fires an app's schedules: ``Beat(app).run()`` in the foreground, or ``setup()`` then
    ``start()`` for a thread."""

    def __init__(self, app: DBQueue, max_interval: float | None = None, embedded: bool = False):
        self.app = app
        conf = app.conf
        self.max_interval = float(
            max_interval if max_interval is not None else conf.beat_max_loop_interval
        )
        self.grace = float(conf.beat_misfire_grace_time)
        self.embedded = embedded
        self.entries: dict[str, ScheduleEntry] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = 0.0
        self._missing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}

    @property
    def store(self) -> ScheduleStore:
        return ScheduleStore(self.app.storage)

    # -- lifecycle ---------------------------------------------------------------------------

    def setup(self) -> list[Definition]:
        """Check the app's schedules and store them. Raises ScheduleError on a bad one."""
        self.app.finalize()
        definitions = [define(self.app, entry) for entry in collect(self.app)]
        store = self.store
        for definition in definitions:
            outcome = store.register(definition)
            logger.info(
                "Schedule %s (%s, %s): %s",
                definition.name,
                definition.entry.task,
                definition.schedule.expression,
                outcome,
            )
        self.entries = {d.name: d.entry for d in definitions}
        (signals.beat_embedded_init if self.embedded else signals.beat_init).send(self)
        return definitions

    def start(self) -> None:
        """Fire schedules in a background thread (after :meth:`setup`)."""
        self._thread = threading.Thread(target=self.serve, name="dbqueue-beat", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Set up, then fire schedules in this thread until :meth:`stop`."""
        self.setup()
        self.serve()

    def describe(self) -> list[str]:
        """One line per schedule for banners: name, when, task."""
        return [
            f"{name}: {entry.schedule.expression} ({entry.schedule.timezone}) -> {entry.task}"
            for name, entry in sorted(self.entries.items())
        ]

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- the loop ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Fire schedules in this thread until :meth:`stop` (after :meth:`setup`)."""
        while not self._stop.is_set():
            try:
                pause = self.tick()
                self._outage = 0.0
            except Exception as error:
                self._outage = min(max(self._outage * 2, 1.0), MAX_OUTAGE_PAUSE)
                pause = self._outage
                logger.error("Scheduler: %s; trying again in %.0fs", error, pause)
            if pause > 0:
                self._stop.wait(pause)

    def tick(self) -> float:
        """Fire every due schedule; return the seconds to sleep before the next look."""
        if not self.entries:
            return self.max_interval
        states, now = self.store.states(sorted(self.entries))
        self._notice_missing(states)
        pause = self.max_interval
        claims = []
        for state in states:
            if not state.enabled:
                continue
            due = max(state.next_fire_at, self._retry_at.get(state.name, 0.0))
            if due > now:
                pause = min(pause, due - now + DUE_MARGIN)
                continue
            try:
                claims.append(self._claim(state, now))
            except Exception:
                pause = min(pause, self._failed(state.name, now))
        if not claims:
            return pause
        try:
            self._fire(claims)
            return 0.0
        except Exception:
            if len(claims) == 1:
                return min(pause, self._failed(claims[0].state.name, now))
        fired = False
        for claim in claims:  # one at a time, so one broken schedule holds up no other
            try:
                self._fire([claim])
                fired = True
            except Exception:
                pause = min(pause, self._failed(claim.state.name, now))
        return 0.0 if fired else pause

    def _claim(self, state: ScheduleState, now: float) -> Claim:
        """What to write for a due schedule: its fire time (or a skip) and the job."""
        fire_at, next_at = plan(state.schedule, state.next_fire_at, now, state.catch_up, self.grace)
        if now - state.next_fire_at > self.grace:
            logger.warning(
                "Scheduler: %s was due at %s (%.0fs ago): %s",
                state.name,
                iso(state.next_fire_at),
                now - state.next_fire_at,
                "firing one catch-up run" if fire_at is not None else "skipping the missed runs",
            )
        job = self._job(state, fire_at, now) if fire_at is not None else None
        return Claim(state, fire_at, next_at, job)

    def _fire(self, claims: list[Claim]) -> None:
        """Claim in one transaction; announce the jobs this scheduler won."""
        announce = bool(
            signals.before_task_publish.receivers or signals.after_task_publish.receivers
        )
        jobs = {c.job.id: c.state.name for c in claims if c.job is not None}

        def before(job: NewJob) -> None:
            if signals.before_task_publish.receivers:
                entry = self.entries[jobs[job.id]]
                self.app._producer._before(job, entry.args, entry.kwargs, entry.options)

        won = self.store.fire_many(claims, before if announce else None)
        for claim in won:
            name = claim.state.name
            self._retry_at.pop(name, None)
            self._failures.pop(name, None)
            if claim.job is None:
                continue
            logger.info("Scheduler: Sending due task %s (%s)", name, claim.state.task)
            if announce:
                entry = self.entries[name]
                self.app._producer._after(claim.job, entry.args, entry.kwargs)
        for queue in {c.job.queue for c in won if c.job is not None}:
            self.app.wake_local(queue)

    def _failed(self, name: str, now: float) -> float:
        """One schedule could not fire: retry it later, with backoff, without holding the others
        up. Returns the seconds until its retry."""
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        delay = min(2.0 ** (failures - 1), MAX_OUTAGE_PAUSE)
        self._retry_at[name] = now + delay
        logger.exception("Scheduler: could not fire %s (retrying in %.0fs)", name, delay)
        return delay

    def _job(self, state: ScheduleState, fire_at: float, now: float) -> NewJob:
        template = state.job
        expires = template.get("expires")
        return NewJob(
            id=job_id(state.name, fire_at),
            task=state.task,
            queue=state.queue,
            payload=state.payload,
            content_type=state.content_type,
            priority=int(template.get("priority") or 0),
            max_retries=template.get("max_retries"),
            run_at=fire_at + float(template.get("countdown") or 0.0),
            expires_at=now + float(expires) if expires is not None else None,
            unique_key=template.get("unique_key"),
            options=template.get("options"),
        )

    def _notice_missing(self, states: list[ScheduleState]) -> None:
        missing = set(self.entries) - {s.name for s in states} - self._missing
        for name in sorted(missing):
            logger.warning(
                "Scheduler: schedule %s is no longer stored (removed?); it is stored again "
                "when this scheduler restarts",
                name,
            )
        self._missing |= missing


def embedded_beat(app: DBQueue) -> Beat:
    """The scheduler of ``dbqueue worker -B``, its schedules checked and stored (a bad one
    stops the worker before it starts); the worker starts and stops its thread."""
    beat = Beat(app, embedded=True)
    beat.setup()
    return beat
