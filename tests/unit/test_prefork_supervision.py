"""The prefork parent's bookkeeping when a child's exit is seen before its last messages."""

from __future__ import annotations

import multiprocessing
from typing import Any

from dbqueue import DBQueue
from dbqueue.storage import ClaimedJob, Outcome
from dbqueue.worker.completer import Receipt
from dbqueue.worker.prefork import PreforkPool, _Child


class _GoneProcess:
    """A child process that already exited cleanly."""

    pid = 4242
    exitcode = 0
    sentinel = -1

    def join(self, timeout: float | None = None) -> None:
        return None

    def is_alive(self) -> bool:
        return False

    def kill(self) -> None:
        return None


class _FreshProcess(_GoneProcess):
    exitcode = None  # type: ignore[assignment]

    def is_alive(self) -> bool:
        return True


def _job(job_id: str) -> ClaimedJob:
    return ClaimedJob(
        job_id, "t", "q", 0, b"[[], {}]", "application/json", 1, 3, 0.0, None, 0.0, None, None
    )


def test_retiring_childs_last_messages_are_read_before_its_exit_is_settled(tmp_path) -> None:
    """A child sends its outcome and "done, retiring", then exits; the parent may see the exit
    first. The job waiting in the backlog must go to the replacement, not to the dead child."""
    app = DBQueue("prefork-unit", broker=f"sqlite:///{tmp_path / 'q.db'}")
    app.task(name="t")(lambda: None)
    done: list[str] = []
    committed: list[Outcome] = []

    def commit(outcome: Outcome, wait: bool) -> Receipt:
        committed.append(outcome)
        return Receipt.resolved(True)

    pool = PreforkPool(2, app, None, "host", "worker", commit, done.append, 5, 30)
    parent_end, child_end = multiprocessing.Pipe()
    dead = _Child(_GoneProcess(), parent_end, job=_job("ran"))
    child_end.send(("outcome", Outcome("complete", "ran"), False))
    child_end.send(("done", "ran", True))
    child_end.close()
    sent: list[Any] = []
    replacement_end, replacement_child_end = multiprocessing.Pipe()
    replacement = _Child(_FreshProcess(), replacement_end)
    pool._spawn = lambda: replacement  # type: ignore[method-assign]
    pool._children = [dead]
    pool._backlog = [_job("waiting")]

    pool._receive(dead)  # the outcome was read; the exit is seen before "done"
    pool._reap_child(dead)

    assert [o.job_id for o in committed] == ["ran"]
    assert done == ["ran"]
    assert dead.job is None
    assert replacement.job is not None and replacement.job.id == "waiting"
    assert pool._children == [replacement]
    assert pool._backlog == []
    sent.append(replacement_child_end.recv())
    assert sent[0][0] == "job" and sent[0][1].id == "waiting"
