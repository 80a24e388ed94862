"""The schedules table: registering schedules, claiming fire times, operator commands.

Exactly once per fire time: a scheduler claims a fire time with a compare-and-set on the row's
``version`` (``schedule_fire``) and inserts the job in the same transaction (schedules due at
the same time share it). Another scheduler
that read the same version updates no row and inserts nothing; a failed insert rolls the claim
back, so the fire time is tried again. No leader, no lock held between fires.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from dbqueue.exceptions import ScheduleError
from dbqueue.schedules.base import Schedule, from_spec
from dbqueue.storage.base import NewJob, Storage

if TYPE_CHECKING:
    from dbqueue.schedules.entries import Definition

#: Columns registration compares to decide whether a stored schedule needs an update.
_DEFINITION_COLUMNS = (
    "task",
    "queue",
    "kind",
    "expression",
    "timezone",
    "spec",
    "args",
    "kwargs",
    "options",
    "payload",
    "content_type",
    "job",
    "catch_up",
)


#: Schedules rebuilt from their stored spec, by spec text.
_rebuilt: dict[str, Schedule] = {}


@dataclass
class ScheduleState:
    """A schedule as a scheduler reads it before firing: cursor, version and job template."""

    name: str
    task: str
    queue: str
    spec: str
    payload: bytes
    content_type: str
    job: dict[str, Any]
    catch_up: str
    enabled: bool
    next_fire_at: float
    version: int

    @property
    def schedule(self) -> Schedule:
        """The schedule the stored spec describes (every scheduler rebuilds the same one)."""
        found = _rebuilt.get(self.spec)
        if found is None:
            found = _rebuilt[self.spec] = from_spec(json.loads(self.spec))
        return found


@dataclass
class Claim:
    """What a scheduler wants to write for a due schedule: the fire time it claims (None to skip
    the missed ones), the cursor after it, and the job (None when skipping)."""

    state: ScheduleState
    fire_at: float | None
    next_fire_at: float
    job: NewJob | None

    def params(self) -> dict[str, Any]:
        return {
            "name": self.state.name,
            "version": self.state.version,
            "next_fire_at": self.next_fire_at,
            "fire_at": self.fire_at,
            "job_id": self.job.id if self.job is not None else None,
            "fired": 1 if self.job is not None else 0,
        }


class ScheduleStore:
    """Schedule rows of one Storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def register(self, definition: Definition) -> str:
        """Insert or update a schedule as the code defines it: 'created', 'updated', 'unchanged'.

        The fire cursor only moves when the timing changed (then to the first fire time after
        now: nothing fires on boot unless due), and ``enabled`` is never touched.
        """
        values = definition.row()
        storage = self.storage

        def run(conn: Connection) -> str:
            now = float(storage.run(conn, "now").scalar())
            first = definition.schedule.next_after(now)
            lock = {"name": definition.name}
            row = storage.run(conn, "schedule_lock", lock).first()
            created = row is None
            if created:  # a registration racing ours may insert it first: then this does nothing
                insert = {**values, "enabled": True, "next_fire_at": first}
                storage.run(conn, "schedule_insert", insert)
                row = storage.run(conn, "schedule_lock", lock).one()
            stored = dict(row._mapping)
            stored["payload"] = bytes(stored["payload"])
            if all(stored[c] == values[c] for c in _DEFINITION_COLUMNS):
                return "created" if created else "unchanged"
            timing = stored["spec"] != values["spec"]
            cursor = first if timing else float(stored["next_fire_at"])
            storage.run(conn, "schedule_update", {**values, "next_fire_at": cursor})
            return "updated"

        return storage.write(run, f"registering schedule {definition.name!r}")

    def states(self, names: Sequence[str]) -> tuple[list[ScheduleState], float]:
        """The rows of ``names`` (those stored) and the database clock."""
        storage = self.storage

        def run(conn: Connection) -> tuple[list[ScheduleState], float]:
            now = float(storage.run(conn, "now").scalar())
            rows = list(storage.run(conn, "schedule_states", {"names": list(names)}))
            return [_state(row) for row in rows], now

        return storage.read(run, "reading schedules")

    def fire(
        self,
        state: ScheduleState,
        fire_at: float | None,
        next_fire_at: float,
        job: NewJob | None,
        before_insert: Callable[[NewJob], None] | None = None,
    ) -> bool:
        """Claim ``fire_at`` (or skip to ``next_fire_at`` when None) and insert ``job``.

        False when another scheduler claimed it first, or the schedule was disabled.
        """
        claim = Claim(state, fire_at, next_fire_at, job)
        return bool(self.fire_many([claim], before_insert))

    def fire_many(
        self, claims: Sequence[Claim], before_insert: Callable[[NewJob], None] | None = None
    ) -> list[Claim]:
        """Claim several fire times and insert the winners' jobs, in one transaction (one
        commit however many schedules are due at once). Returns the claims won."""
        storage = self.storage

        def run(conn: Connection) -> list[Claim]:
            won = [c for c in claims if storage.run(conn, "schedule_fire", c.params()).rowcount]
            jobs = [c.job for c in won if c.job is not None]
            if before_insert is not None:
                for job in jobs:
                    before_insert(job)
            if jobs:
                storage._insert_many(conn, jobs)
            return won

        names = ", ".join(repr(c.state.name) for c in claims[:3])
        more = f" and {len(claims) - 3} more" if len(claims) > 3 else ""
        return storage.write(run, f"firing schedule(s) {names}{more}")

    def all(self) -> list[dict[str, Any]]:
        """Every stored schedule, by name, with JSON columns decoded."""
        rows = self.storage.read(
            lambda c: list(self.storage.run(c, "schedule_list")), "listing schedules"
        )
        found = []
        for row in rows:
            item = dict(row._mapping)
            for column in ("args", "kwargs", "options"):
                item[column] = json.loads(item[column])
            item["enabled"] = bool(item["enabled"])
            found.append(item)
        return found

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable a schedule; returns its row. Enabling resumes at the next fire
        time after now."""
        storage = self.storage

        def run(conn: Connection) -> dict[str, Any]:
            row = storage.run(conn, "schedule_lock", {"name": name}).first()
            if row is None:
                raise ScheduleError(_unknown(name, self._names(conn)))
            if enabled:
                now = float(storage.run(conn, "now").scalar())
                upcoming = from_spec(json.loads(row.spec)).next_after(now)
                if not row.enabled:
                    storage.run(
                        conn,
                        "schedule_enable",
                        {"name": name, "enabled": True, "next_fire_at": upcoming},
                    )
            elif row.enabled:
                storage.run(conn, "schedule_disable", {"name": name, "enabled": False})
            return {**row._mapping, "enabled": bool(row.enabled)}

        return storage.write(run, f"{'enabling' if enabled else 'disabling'} schedule {name!r}")

    def remove(self, name: str) -> None:
        """Delete a stored schedule; ScheduleError if there is none by that name."""
        storage = self.storage

        def run(conn: Connection) -> None:
            if storage.run(conn, "schedule_delete", {"name": name}).rowcount != 1:
                raise ScheduleError(_unknown(name, self._names(conn)))

        storage.write(run, f"removing schedule {name!r}")

    def _names(self, conn: Connection) -> list[str]:
        return [row.name for row in self.storage.run(conn, "schedule_list")]


def _state(row: Any) -> ScheduleState:
    return ScheduleState(
        name=row.name,
        task=row.task,
        queue=row.queue,
        spec=row.spec,
        payload=bytes(row.payload),
        content_type=row.content_type,
        job=json.loads(row.job),
        catch_up=row.catch_up,
        enabled=bool(row.enabled),
        next_fire_at=float(row.next_fire_at),
        version=int(row.version),
    )


def _unknown(name: str, names: list[str]) -> str:
    known = ", ".join(repr(n) for n in names[:20]) or "none are stored yet"
    return f"no schedule named {name!r} (stored schedules: {known})"
