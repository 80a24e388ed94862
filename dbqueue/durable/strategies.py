"""How a fan-out decides: ``FailFast()``, ``CollectAll()``, ``Threshold(ratio)``.

The rules themselves live with the counting, in ``dbqueue/storage/fanouts.py`` (``decide``),
because they run inside the transaction that finishes each child.
"""

from __future__ import annotations

from dbqueue.storage.fanouts import needed_for


class Strategy:
    """Base of the fan-out strategies; ``name`` is what the fan-out row stores."""

    name = ""
    threshold: float | None = None

    def needed(self, total: int) -> int:
        """How many children must complete for the fan-out to succeed."""
        return needed_for(self.name, total, self.threshold)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Strategy)
            and other.name == self.name
            and other.threshold == self.threshold
        )

    def __hash__(self) -> int:
        return hash((self.name, self.threshold))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FailFast(Strategy):
    """Fail as soon as one child fails or is cancelled, cancelling the unfinished ones."""

    name = "fail_fast"


class CollectAll(Strategy):
    """Wait for every child; the parent gets each one's value or error."""

    name = "collect_all"


class Threshold(Strategy):
    """Succeed as soon as ``ratio`` of the children completed; fail as soon as that can no
    longer happen. The children still unfinished then are cancelled."""

    name = "threshold"

    def __init__(self, ratio: float) -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise ValueError(
                f"Threshold takes the share of children that must complete, 0 < ratio <= 1 "
                f"(e.g. 0.8), got {ratio!r}"
            )
        self.threshold = float(ratio)

    def __repr__(self) -> str:
        return f"Threshold({self.threshold!r})"
