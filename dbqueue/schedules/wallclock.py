"""Wall-clock times in a time zone mapped to instants, correct across daylight-saving changes.

A cron expression names wall-clock times ("02:30 every day"). Twice a year that mapping is not
one to one, and this module decides what happens:

* Spring forward (a gap: 02:00-03:00 does not exist). A schedule at fixed hours fires the same
  distance after the change (02:30 becomes 03:30 new time), so the day still gets its run. A
  schedule that fires every hour has no wall times in the missing hour: its rhythm in real time
  is unchanged, nothing is skipped.
* Fall back (a fold: 02:00-03:00 happens twice). A schedule at fixed hours fires once, in the
  first pass. A schedule that fires every hour fires in both passes, so it stays hourly.

A zone's UTC offset is constant between two transitions. :func:`next_instant` walks those
segments and asks the cron matcher for the first matching wall time inside each. Everything is
integer seconds: instants since the epoch, and wall times as seconds since 1970-01-01 00:00 on
the local clock (instant + offset).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

#: Seconds between two offset probes when looking for the next transition; no zone changes its
#: offset twice within this span.
PROBE = 6 * 3600
#: How far back a transition can still shape the next fire time (longer than any DST shift).
LOOKBACK = 12 * 3600

#: The first matching wall time at or after a wall time, or None if there is none.
FirstWall = Callable[[int], int | None]


class ZoneClock:
    """UTC offsets of one time zone, and the instants where they change."""

    def __init__(self, tz: dt.tzinfo) -> None:
        self.tz = tz

    def offset(self, instant: int) -> int:
        """The zone's UTC offset in seconds at ``instant``."""
        delta = dt.datetime.fromtimestamp(instant, self.tz).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    def transition_after(self, start: int, end: int) -> int | None:
        """The first instant in (start, end] whose offset differs from ``start``'s."""
        base = self.offset(start)
        low = start
        while low < end:
            high = min(low + PROBE, end)
            if self.offset(high) != base:
                while high - low > 1:
                    middle = (low + high) // 2
                    if self.offset(middle) != base:
                        high = middle
                    else:
                        low = middle
                return high
            low = high
        return None

    def transition_before(self, instant: int) -> int | None:
        """The last transition in (instant - LOOKBACK, instant], if any."""
        start = instant - LOOKBACK
        if self.offset(start) == self.offset(instant):
            return None
        return self.transition_after(start, instant)


def next_instant(
    clock: ZoneClock, first_wall: FirstWall, after: int, every_hour: bool
) -> int | None:
    """The first fire instant strictly after ``after``, or None if the schedule never fires.

    ``every_hour`` selects the rule for the gap and the fold (see the module docstring).
    """
    low = after + 1
    offset = clock.offset(low)
    start = clock.transition_before(low)
    previous = clock.offset(start - 1) if start is not None else offset
    while True:
        best: int | None = None
        floor = low + offset
        if start is not None and not every_hour and offset < previous:
            floor = max(floor, start + previous)  # wall times of the fold's second pass
        wall = first_wall(floor)
        if wall is not None:
            best = wall - offset
        if start is not None and not every_hour and offset > previous:
            gap = first_wall(max(low + previous, start + previous))
            if gap is not None and gap < start + offset:  # a wall time the gap swallowed
                shifted = gap - previous
                best = shifted if best is None else min(best, shifted)
        if best is None:
            return None
        change = clock.transition_after(low, best)
        if change is None:
            return best
        low, start, previous = change, change, offset
        offset = clock.offset(change)
