"""What ``fan_out`` returns: one :class:`Result` per child, in input order, and the seed's
helpers (``values``, ``partition``, ``all_succeeded``, ``success_count``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    """One child's outcome: a value when ``ok``, else an error (its exception, rebuilt)."""

    index: int
    value: Any = None
    error: BaseException | None = None
    job_id: str | None = None
    task: str | None = None
    status: str = "completed"
    #: The child's traceback, when it failed.
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> Any:
        """The value, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.value


class Results(list[Result]):
    """Results of a fan-out in input order, with the helpers as methods."""

    def values(self) -> list[Any]:
        return values(self)

    def errors(self) -> list[BaseException]:
        return partition(self)[1]

    def partition(self) -> tuple[list[Any], list[BaseException]]:
        return partition(self)

    def all_succeeded(self) -> bool:
        return all_succeeded(self)

    def success_count(self) -> int:
        return success_count(self)


def values(results: Iterable[Result]) -> list[Any]:
    """The values of the children that succeeded, in input order."""
    return [r.value for r in results if r.ok]


def partition(results: Iterable[Result]) -> tuple[list[Any], list[BaseException]]:
    """(values of the successes, errors of the others), each in input order."""
    good: list[Any] = []
    bad: list[BaseException] = []
    for result in results:
        if result.error is None:
            good.append(result.value)
        else:
            bad.append(result.error)
    return good, bad


def all_succeeded(results: Iterable[Result]) -> bool:
    return all(r.ok for r in results)


def success_count(results: Iterable[Result]) -> int:
    return sum(1 for r in results if r.ok)
