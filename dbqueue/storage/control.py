"""Storage operations for pausing, resuming and stopping, and for the cross-process event stream.

Mixed into :class:`~dbqueue.storage.base.Storage`. The SQL lives in ``sql/control.sql`` (and
the dialect files). PostgreSQL also notifies: workers run their control pass at once
(``dbqueue_control``), idle workers claim a resumed queue or job at once (``dbqueue_jobs``), and
events travel as notifications (``dbqueue_events``) instead of rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dbqueue.backoff import RetryConfig

T = TypeVar("T")

#: Channel that makes every worker run its control pass now.
CONTROL_CHANNEL = "dbqueue_control"
#: Channel the event stream travels on (PostgreSQL).
EVENTS_CHANNEL = "dbqueue_events"
#: Statements only PostgreSQL has (the others keep events in dbqueue_events and poll).
POSTGRESQL_ONLY = ("notify_events", "notify_control", "notify_queue", "current_schema")
#: NOTIFY payloads must stay under 8000 bytes.
MAX_NOTIFY_PAYLOAD = 7900
#: Events per row of the event table.
TABLE_BATCH = 1000
#: The values of the ``control`` column.
PAUSE_GRACEFUL = "pause_graceful"
PAUSE_AGGRESSIVE = "pause_aggressive"
TERMINATE = "terminate"


@dataclass
class JobControlState:
    """A job's status as pause and resume see it."""

    status: str
    resume_status: str | None
    control: str | None
    queue: str


@dataclass
class ControlRequests:
    """What a worker's control pass read: one round trip per interval.

    ``jobs`` maps the held jobs that need attention to their control request or, without one,
    their status (cancelled, or taken over).
    """

    found: bool = False
    pause_mode: str | None = None
    jobs: dict[str, str] = field(default_factory=dict)
    paused_queues: frozenset[str] = frozenset()
    subscribers: int = 0


class ControlStorage:
    """Pause/resume/stop and event-stream operations (a mixin of ``Storage``)."""

    family: str
    notify: bool
    q: dict[str, Any]

    if TYPE_CHECKING:

        def write(
            self,
            fn: Callable[[Connection], T],
            what: str,
            retry: RetryConfig | None = None,
            on_retry: Callable[[BaseException], None] | None = None,
        ) -> T: ...

        def read(self, fn: Callable[[Connection], T], what: str) -> T: ...

        def run(self, conn: Connection, name: str, params: Any = None) -> Any: ...

        def raw_many(self, conn: Connection, name: str, params: list[dict[str, Any]]) -> int: ...

    @property
    def notifies(self) -> bool:
        """Whether this database carries notifications (PostgreSQL with broker_notify on)."""
        return self.family == "postgresql" and self.notify

    @property
    def event_scope(self) -> str:
        """What tells this app's notified events from those of an app in another schema of the
        same PostgreSQL database (channels are database-wide): the schema's name."""
        scope: str | None = getattr(self, "_event_scope", None)
        if scope is None:
            scope = ""
            if self.notifies:
                scope = str(self.read(lambda c: self.run(c, "current_schema").scalar(), "schema"))
            self._event_scope = scope
        return scope

    def _announce(self, conn: Connection, payload: str) -> None:
        """Workers: run your control pass now (PostgreSQL); elsewhere they poll."""
        if self.notifies:
            self.run(conn, "notify_control", {"payload": payload})

    def _wake_queue(self, conn: Connection, queue: str) -> None:
        """Idle workers of ``queue``: claim now (PostgreSQL); elsewhere they poll."""
        if self.notifies:
            self.run(conn, "notify_queue", {"queue": queue})

    # -- jobs -------------------------------------------------------------------------------

    def job_control_state(self, job_id: str) -> JobControlState | None:
        row = self.read(
            lambda c: self.run(c, "job_control_state", {"id": job_id}).first(), "job lookup"
        )
        return None if row is None else JobControlState(*row)

    def pause_job(self, job_id: str, control: str) -> tuple[str, JobControlState | None]:
        """Pause a job. Returns ("paused", state) when it is paused now, ("requested", state)
        when it is running and its worker was asked to pause it, ("unchanged", state) else."""

        def run(conn: Connection) -> tuple[str, JobControlState | None]:
            params = {"id": job_id, "control": control}
            if self.run(conn, "pause_job", params).rowcount:
                outcome = "paused"
            elif self.run(conn, "request_pause", params).rowcount:
                outcome = "requested"
                self._announce(conn, f"job:{job_id}")
            else:
                outcome = "unchanged"
            row = self.run(conn, "job_control_state", {"id": job_id}).first()
            return outcome, None if row is None else JobControlState(*row)

        return self.write(run, "pause job")

    def resume_job(self, job_id: str) -> tuple[str, JobControlState | None]:
        """Resume a paused job. Returns ("resumed", state), ("withdrawn", state) when a pause
        requested on a running job had not landed yet, or ("unchanged", state)."""

        def run(conn: Connection) -> tuple[str, JobControlState | None]:
            if self.run(conn, "resume_job", {"id": job_id}).rowcount:
                outcome = "resumed"
            elif self.run(conn, "withdraw_pause", {"id": job_id}).rowcount:
                outcome = "withdrawn"
            else:
                outcome = "unchanged"
            row = self.run(conn, "job_control_state", {"id": job_id}).first()
            state = None if row is None else JobControlState(*row)
            if outcome == "resumed" and state is not None:
                self._wake_queue(conn, state.queue)
            return outcome, state

        return self.write(run, "resume job")

    def paused_jobs(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Paused jobs (of one queue), oldest first: id, task, queue, resume_status, control."""

        def run(conn: Connection) -> list[dict[str, Any]]:
            if queue is None:
                rows = self.run(conn, "paused_jobs")
            else:
                rows = self.run(conn, "paused_jobs_in", {"queue": queue})
            return [dict(row._mapping) for row in rows]

        return self.read(run, "paused jobs")

    def landed_pauses(self, ids: Sequence[str]) -> dict[str, str | None]:
        """Of these jobs, those now paused, with the control value (mode) they paused with."""
        return self.read(
            lambda c: {r.id: r.control for r in self.run(c, "landed_pauses", {"ids": list(ids)})},
            "paused jobs lookup",
        )

    # -- queues -----------------------------------------------------------------------------

    def pause_queue(self, name: str) -> None:
        def run(conn: Connection) -> None:
            self.run(conn, "pause_queue", {"name": name})
            self._announce(conn, f"queue:{name}")

        self.write(run, "pause queue")

    def resume_queue(self, name: str) -> None:
        def run(conn: Connection) -> None:
            self.run(conn, "resume_queue", {"name": name})
            self._announce(conn, f"queue:{name}")
            self._wake_queue(conn, name)

        self.write(run, "resume queue")

    def queue_is_paused(self, name: str) -> bool:
        return self.read(
            lambda c: self.run(c, "queue_is_paused", {"name": name}).first() is not None,
            "queue state",
        )

    def paused_queues(self) -> list[str]:
        return self.read(lambda c: [r.name for r in self.run(c, "paused_queues")], "paused queues")

    # -- workers ----------------------------------------------------------------------------

    def pause_worker(self, name: str, mode: str | None) -> int:
        """Set the pause mode (None: resume) of the workers with this name or id; how many."""

        def run(conn: Connection) -> int:
            count = int(self.run(conn, "pause_worker", {"name": name, "mode": mode}).rowcount)
            if count:
                self._announce(conn, f"worker:{name}")
            return count

        return self.write(run, "pause worker")

    def control_requests(
        self, worker: str, held: Sequence[str], subscriber_age: float
    ) -> ControlRequests:
        """A worker's control pass: see :class:`ControlRequests`."""
        # An empty list would compile to an untyped empty set that PostgreSQL refuses.
        params = {"worker": worker, "ids": list(held) or [""], "age": subscriber_age}
        rows = self.read(
            lambda c: list(self.run(c, "control_requests", params)), "worker control pass"
        )
        found = ControlRequests()
        queues = []
        for kind, name, value in rows:
            if kind == "job":
                found.jobs[name] = value
            elif kind == "worker":
                found.found, found.pause_mode = True, value
            elif kind == "queue":
                queues.append(name)
            else:
                found.subscribers += 1
        found.paused_queues = frozenset(queues)
        return found

    # -- the event stream -------------------------------------------------------------------

    def register_subscriber(self, subscriber: str) -> None:
        def run(conn: Connection) -> None:
            self.run(conn, "register_subscriber", {"id": subscriber})
            self._announce(conn, "subscriber")

        self.write(run, "event subscription")

    def subscriber_heartbeat(self, subscriber: str) -> bool:
        """Keep a subscription alive; False if its row was gone (register again)."""
        return bool(
            self.write(
                lambda c: self.run(c, "subscriber_heartbeat", {"id": subscriber}).rowcount,
                "event subscription heartbeat",
            )
        )

    def unregister_subscriber(self, subscriber: str) -> None:
        self.write(
            lambda c: self.run(c, "unregister_subscriber", {"id": subscriber}),
            "event unsubscription",
        )

    def forget_dead_subscribers(self, age: float) -> None:
        self.write(
            lambda c: self.run(c, "forget_dead_subscribers", {"age": age}), "subscriber cleanup"
        )

    def count_subscribers(self, age: float) -> int:
        return int(
            self.read(
                lambda c: self.run(c, "count_subscribers", {"age": age}).scalar(),
                "subscriber count",
            )
        )

    def publish_events(self, events: Sequence[Sequence[Any]]) -> None:
        """Publish a batch of events (wire rows) in one statement: NOTIFY payloads of JSON
        arrays, or a multi-row INSERT of JSON arrays of up to TABLE_BATCH events each."""
        if not events:
            return
        if self.notifies:
            payloads = [{"payload": p} for p in _chunks(events, self.event_scope)]
            if payloads:
                self.write(lambda c: self.raw_many(c, "notify_events", payloads), "publish events")
            return
        rows = [
            {"body": json.dumps(events[i : i + TABLE_BATCH], separators=(",", ":"))}
            for i in range(0, len(events), TABLE_BATCH)
        ]
        self.write(lambda c: self.run(c, "insert_event", rows), "publish events")

    def read_events(self, after: int, limit: int = 1000) -> list[tuple[int, str]]:
        return self.read(
            lambda c: [
                (int(r.seq), str(r.body))
                for r in self.run(c, "read_events", {"after": after, "limit": limit})
            ],
            "read events",
        )

    def last_event_seq(self) -> int:
        return int(self.read(lambda c: self.run(c, "last_event_seq").scalar() or 0, "events"))

    def prune_events(self, age: float) -> None:
        self.write(lambda c: self.run(c, "prune_events", {"age": age}), "prune events")


def _chunks(events: Sequence[Sequence[Any]], scope: str) -> list[str]:
    """``{"scope": ..., "events": [...]}`` payloads in order, each under MAX_NOTIFY_PAYLOAD:
    each row is serialized once and rows are packed greedily; a grouped row too large for one
    payload is split (a single event too large on its own is dropped: custom events are capped
    well below)."""
    head = '{"scope":' + json.dumps(scope) + ',"events":['
    budget = MAX_NOTIFY_PAYLOAD - len(head) - 2
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    pending = list(reversed(events))
    while pending:
        row = pending.pop()
        text = json.dumps(row, separators=(",", ":"))
        if len(text) > budget:
            halves = _split_group(row)
            if len(halves) > 1:
                pending.extend(reversed(halves))
            continue
        if current and size + len(text) + 1 > budget:
            payloads.append(head + ",".join(current) + "]}")
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    if current:
        payloads.append(head + ",".join(current) + "]}")
    return payloads


def _split_group(row: Sequence[Any]) -> list[Sequence[Any]]:
    """A grouped row (a list of job ids) as two rows with half the ids each; else as is."""
    ids = row[2]
    if not isinstance(ids, list) or len(ids) < 2:
        return [row]
    half = len(ids) // 2
    return [(row[0], row[1], ids[:half], *row[3:]), (row[0], row[1], ids[half:], *row[3:])]
