"""Event consumer subprocess for ``benchmarks/events.py``: follows ``app.events()`` and counts.

Usage: ``python -m benchmarks.events_consumer OUTPUT``

Subscribes (the driver waits for the subscriber row before starting workers), counts every
event by type until SIGTERM, then writes ``{"counts": {type: n}, "dropped": n}`` to OUTPUT.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.systems.dbqueue_tasks import app


def main() -> int:
    output = Path(sys.argv[1])
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    counts: Counter[str] = Counter()
    with app.events(buffer=1_000_000) as stream:
        while not stop:
            event = stream.get(timeout=0.2)
            if event is not None:
                counts[event.type] += 1
        while (event := stream.get(timeout=0.5)) is not None:
            counts[event.type] += 1
        dropped = stream.dropped
    output.write_text(json.dumps({"counts": dict(counts), "dropped": dropped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
