"""The event stream: what happens to jobs, queues and workers, followed from any process.

``app.events()`` yields :class:`Event` objects published by every process on the same database:
workers (job started, completed, failed, retrying, released, paused; worker paused/resumed),
and any process that pauses, resumes or cancels, or calls ``app.emit_custom_event``. On
PostgreSQL events travel as notifications; elsewhere through ``dbqueue_events``, a short-lived
table subscribers poll (pruned after ``events_retention`` seconds).

Publishing costs nothing while nobody follows: a subscriber registers a row with a heartbeat,
and processes publish only while a live one exists (workers learn it in their control pass,
other processes check at most once a second). Events are batched: one NOTIFY statement or one
multi-row INSERT per flush. The stream is live and best effort: no history before subscribing,
and a consumer that falls more than ``buffer`` events behind loses the excess (``dropped``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from dbqueue import signals
from dbqueue.storage.control import EVENTS_CHANNEL

if TYPE_CHECKING:
    from dbqueue.app import DBQueue

logger = logging.getLogger("dbqueue.events")

# Event types.
JOB_STARTED = "job.started"
JOB_COMPLETED = "job.completed"
JOB_FAILED = "job.failed"
JOB_RETRYING = "job.retrying"
#: A claimed job given back to the queue without using up its attempt (stopped, or a pause
#: landed before it started).
JOB_RELEASED = "job.released"
JOB_PAUSED = "job.paused"
JOB_RESUMED = "job.resumed"
JOB_CANCELLED = "job.cancelled"
QUEUE_PAUSED = "queue.paused"
QUEUE_RESUMED = "queue.resumed"
WORKER_PAUSED = "worker.paused"
WORKER_RESUMED = "worker.resumed"
CHECKPOINT_SAVED = "checkpoint.saved"
CUSTOM = "custom"

#: Seconds between two heartbeats of a subscriber.
SUBSCRIBER_HEARTBEAT = 3.0
#: A subscriber silent this long is presumed gone: workers stop publishing for it.
SUBSCRIBER_AGE = 15.0
#: Longest a process that is not a worker trusts its last look at the subscriber registry.
SUBSCRIBER_CHECK_INTERVAL = 1.0
#: Shortest pause between two flushes of a publisher: bounds the writes (and adds <= 50 ms).
FLUSH_INTERVAL = 0.05
#: Events a consumer may fall behind before the newest are dropped.
DEFAULT_BUFFER = 10_000
#: Seconds between two reads of the event table (databases without notifications).
TABLE_POLL_INTERVAL = 0.1
#: Seconds a reader waits for a missing sequence number (a slower concurrent commit).
GAP_PATIENCE = 2.0
#: Seconds between two prunes of the event table by a subscriber.
PRUNE_INTERVAL = 10.0
#: Longest custom event payload, as JSON.
MAX_CUSTOM_DATA = 4000


#: An event's wire form, a JSON array: (type, timestamp, job_id, task, queue, worker, kind,
#: data). Publishing and reading a batch is then one json.dumps / json.loads call. A row whose
#: job_id is a list stands for one event per id (a worker groups a batch of jobs that share
#: everything else, so a claim or commit of 500 jobs costs little more than one event).
Row = tuple[
    str,
    float,
    str | list[str] | None,
    str | None,
    str | None,
    str | None,
    str | None,
    dict[str, Any],
]


class Event(NamedTuple):
    """One thing that happened. ``type`` is one of the ``JOB_*``, ``QUEUE_*``, ``WORKER_*``
    constants, ``checkpoint.saved`` or ``custom`` (whose ``kind`` is the caller's); ``data``
    holds the details (attempt, error, mode, ...)."""

    type: str
    timestamp: float
    job_id: str | None = None
    task: str | None = None
    queue: str | None = None
    worker: str | None = None
    kind: str | None = None
    data: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as a dict (``dbqueue events --json``)."""
        return {k: v for k, v in self._asdict().items() if v is not None and v != {}}

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Event:
        """An event from its wire form; ValueError/TypeError if it is not one."""
        event = cls._make(row)
        if not isinstance(event.type, str) or not isinstance(event.data, dict):
            raise ValueError(f"not an event: {row!r}")
        return event


def encode(
    type: str,
    job_id: str | None = None,
    *,
    ts: float | None = None,
    task: str | None = None,
    queue: str | None = None,
    worker: str | None = None,
    kind: str | None = None,
    data: dict[str, Any] | None = None,
) -> Row:
    """An event's wire form."""
    stamp = time.time() if ts is None else ts
    return (type, stamp, job_id, task, queue, worker, kind, data or {})


class EventBus:
    """Publishes this process's events for one app, in batches, while someone subscribes."""

    def __init__(self, app: DBQueue) -> None:
        self.app = app
        self._cond = threading.Condition()
        #: Held while a batch is written (taken before ``_cond``): one insert at a time, in
        #: the order batches left ``_pending``, so readers see this process's events in order.
        self._writing = threading.Lock()
        self._pending: list[Row] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        self._managed = False
        self._active = False
        self._checked = -SUBSCRIBER_CHECK_INTERVAL
        self._failures = 0
        _connect_forwarders()

    @property
    def active(self) -> bool:
        """Whether a live subscriber exists (workers are told; others look once a second)."""
        if self._managed:
            return self._active
        now = time.monotonic()
        if now - self._checked >= SUBSCRIBER_CHECK_INTERVAL:
            self._checked = now
            try:
                self._active = self.app.storage.count_subscribers(SUBSCRIBER_AGE) > 0
            except Exception as error:
                logger.debug("Cannot look up event subscribers: %s", error)
                self._active = False
        return self._active

    def set_active(self, active: bool) -> None:
        """A worker's control pass keeps the subscriber flag current: no lookups of our own."""
        self._managed, self._active = True, active

    def unmanage(self) -> None:
        """The worker that kept the flag current stopped: look subscribers up again."""
        self._managed = False
        self._checked = -SUBSCRIBER_CHECK_INTERVAL

    def emit(self, event: Row) -> None:
        """Publish one event (wire form) soon, if anyone subscribes."""
        if self.active:
            self.emit_many([event])

    def emit_many(self, events: list[Row]) -> None:
        """Queue events for the next flush; the caller checked :attr:`active`."""
        if not events:
            return
        with self._cond:
            idle = not self._pending
            self._pending.extend(events)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dbqueue-events", daemon=True
                )
                self._thread.start()
            if idle:  # otherwise the publisher is already waiting for its next flush
                self._cond.notify()

    def publish_now(self, event: Row, fresh: bool = True) -> None:
        """Publish one event before returning (ordered before what the caller does next);
        never raises. ``fresh``: look up subscribers now (rare events: a pause, a resume), so
        one that subscribed a moment ago gets it; else trust :attr:`active`."""
        storage = self.app.storage
        try:
            if fresh and not (self._managed and self._active):
                if storage.count_subscribers(SUBSCRIBER_AGE) == 0:
                    return
            elif not fresh and not self.active:
                return
            with self._writing:
                with self._cond:
                    batch, self._pending = [*self._pending, event], []
                storage.publish_events(batch)
        except Exception as error:
            logger.warning("Could not publish a %s event: %s", event[0], error)

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued, then stop the publisher thread (a later event starts it
        again)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._closing = False
            if self._thread is thread:
                self._thread = None

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                due = last + FLUSH_INTERVAL
                while not self._closing and (wait := due - time.monotonic()) > 0:
                    self._cond.wait(wait)
            with self._writing:
                with self._cond:
                    batch, self._pending = self._pending, []
                last = time.monotonic()
                if batch:  # publish_now may have taken them meanwhile
                    self._publish(batch)

    def _publish(self, batch: list[Row]) -> None:
        try:
            self.app.storage.publish_events(batch)
            self._failures = 0
        except Exception as error:
            self._failures += 1
            if self._failures == 1 or self._failures % 100 == 0:
                logger.warning("Could not publish %d event(s), dropped: %s", len(batch), error)


class EventStream:
    """``app.events()``: the live events of every process on the database, as an iterator.

    Use it as ``for event in app.events(): ...`` or ``with app.events() as stream:``, with
    :meth:`get` for a timeout. ``types`` keeps only those event types. Close it (or leave the
    ``with`` block) to unsubscribe; workers stop publishing once no subscriber is left.
    """

    def __init__(
        self,
        app: DBQueue,
        types: Iterable[str] | None = None,
        buffer: int = DEFAULT_BUFFER,
    ) -> None:
        self.app = app
        self.id = str(uuid.uuid4())
        self.types = frozenset(types) if types else None
        self.dropped = 0
        self._buffer: deque[Event] = deque()
        self._capacity = buffer
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._listener: Any = None
        storage = app.storage
        self._table = not storage.notifies
        self._scope = storage.event_scope
        self._tracker = _SeqTracker(storage.last_event_seq() if self._table else 0)
        storage.forget_dead_subscribers(SUBSCRIBER_AGE)
        if not self._table:
            ready = threading.Event()
            self._listener = storage.listener([EVENTS_CHANNEL], self._notified, ready.set)
            if not ready.wait(15.0):
                self._listener.stop()
                raise ConnectionError("could not LISTEN for events within 15 s")
        storage.register_subscriber(self.id)
        self._thread = threading.Thread(target=self._run, name="dbqueue-event-stream", daemon=True)
        self._thread.start()

    # -- consuming ----------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self._buffer.popleft()
            except IndexError:
                pass
            self._ready.clear()
            if self._buffer:
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._ready.wait(remaining)

    def __iter__(self) -> Iterator[Event]:
        while not self._stop.is_set():
            event = self.get(timeout=0.5)
            if event is not None:
                yield event

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Unsubscribe and stop reading."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._listener is not None:
            self._listener.stop()
        self._thread.join(5.0)
        try:
            self.app.storage.unregister_subscriber(self.id)
        except Exception as error:
            logger.warning("Could not unsubscribe from events: %s", error)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- receiving ----------------------------------------------------------------------------

    def _deliver(self, rows: Sequence[Any]) -> None:
        """Buffer a batch of events (wire rows); beyond ``buffer`` waiting, new ones drop."""
        events: list[Event] = []
        types, make = self.types, Event._make
        for row in rows:
            try:
                if types is not None and row[0] not in types:
                    continue
                ids = row[2]
                if not isinstance(ids, list):
                    events.append(Event.from_row(row))
                    continue
                kind, stamp, _, task, queue, worker, custom, data = Event.from_row(row)
                events.extend(
                    [make((kind, stamp, i, task, queue, worker, custom, data)) for i in ids]
                )
            except (TypeError, ValueError, IndexError):
                logger.debug("Ignoring a malformed event: %r", row)
        room = max(self._capacity - len(self._buffer), 0)
        if len(events) > room:
            self.dropped += len(events) - room
            events = events[:room]
        if events:
            self._buffer.extend(events)
            self._ready.set()

    def _notified(self, channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message.get("scope") != self._scope:
                return  # an app in another schema of the same database
            rows = list(message["events"])
        except (ValueError, AttributeError, KeyError, TypeError):
            return
        self._deliver(rows)

    def _run(self) -> None:
        """Heartbeat the subscription; read the event table where there are no notifications."""
        storage = self.app.storage
        beat = time.monotonic()
        pruned = 0.0
        interval = TABLE_POLL_INTERVAL if self._table else SUBSCRIBER_HEARTBEAT
        while not self._stop.wait(interval):
            now = time.monotonic()
            try:
                if self._table:
                    self._read_table()
                    if now - pruned >= PRUNE_INTERVAL:
                        pruned = now
                        storage.prune_events(float(self.app.conf.events_retention))
                if now - beat >= SUBSCRIBER_HEARTBEAT:
                    beat = now
                    if not storage.subscriber_heartbeat(self.id):
                        storage.register_subscriber(self.id)
            except Exception as error:
                logger.warning("Event stream: %s", error)

    def _read_table(self) -> None:
        tracker = self._tracker
        for seq, body in self.app.storage.read_events(tracker.low, limit=1000):
            if tracker.accept(seq):
                try:
                    rows = json.loads(body)
                except ValueError:
                    continue
                if isinstance(rows, list):
                    self._deliver(rows)
        tracker.advance(time.monotonic())


class _SeqTracker:
    """Reads a sequence in order while tolerating late commits: a number skipped by a reader
    may still appear (a concurrent insert that committed later), so the reader keeps asking
    from the last contiguous number for up to GAP_PATIENCE seconds and never yields twice."""

    def __init__(self, start: int) -> None:
        self.low = start
        self.seen: set[int] = set()
        self._gap_since: float | None = None

    def accept(self, seq: int) -> bool:
        if seq <= self.low or seq in self.seen:
            return False
        self.seen.add(seq)
        return True

    def advance(self, now: float) -> None:
        while self.low + 1 in self.seen:
            self.low += 1
            self.seen.discard(self.low)
        if not self.seen:
            self._gap_since = None
            return
        if self._gap_since is None:
            self._gap_since = now
        elif now - self._gap_since >= GAP_PATIENCE:
            self.low = min(self.seen) - 1
            self._gap_since = None
            self.advance(now)


def custom_event(job_id: str | None, kind: str, data: dict[str, Any] | None) -> Row:
    """A custom event's wire form; a clear error for a bad kind or data."""
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError(f"a custom event needs a non-empty kind (a string), got {kind!r}")
    payload = dict(data or {})
    try:
        size = len(json.dumps(payload))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"custom event {kind!r}: data must be JSON-serializable ({error})"
        ) from None
    if size > MAX_CUSTOM_DATA:
        raise ValueError(
            f"custom event {kind!r}: data is {size} bytes as JSON, the limit is "
            f"{MAX_CUSTOM_DATA}; publish a reference (an id, a URL) instead"
        )
    return encode(CUSTOM, job_id, kind=kind, data=payload, worker=_hostname())


def _hostname() -> str | None:
    from dbqueue.request import current_request

    request = current_request()
    return request.hostname if request is not None else None


_forwarded: set[int] = set()
_forward_lock = threading.Lock()


def _connect_forwarders() -> None:
    """Forward signals defined elsewhere (the durable layer's ``checkpoint_saved``: sender the
    task; job_id, call_index, call_type) to the stream, once per process, if they exist."""
    with _forward_lock:
        saved = getattr(signals, "checkpoint_saved", None)
        if saved is not None and id(saved) not in _forwarded:
            saved.connect(_on_checkpoint_saved, weak=False)
            _forwarded.add(id(saved))


def _on_checkpoint_saved(sender: Any, **kwargs: Any) -> None:
    app = getattr(sender, "app", None)
    bus = getattr(app, "event_bus", None) if app is not None else None
    if bus is None or not bus.active:
        return
    kwargs.pop("signal", None)
    job_id = kwargs.pop("job_id", None)
    data = {k: v for k, v in kwargs.items() if isinstance(v, str | int | float | bool)}
    task = getattr(sender, "name", None)
    bus.emit(encode(CHECKPOINT_SAVED, job_id, task=task, data=data, worker=_hostname()))


def bus_for(app: DBQueue, cache: dict[int, EventBus]) -> EventBus:
    """This process's bus for ``app`` (a forked child makes its own)."""
    pid = os.getpid()
    bus = cache.get(pid)
    if bus is None:
        cache.clear()
        bus = cache[pid] = EventBus(app)
    return bus
