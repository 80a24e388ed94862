"""A claim whose commit acknowledgement is lost must not strand its jobs.

When the connection drops after the server committed a claim but before the worker heard so
(a server crash, ``pg_ctl restart -m immediate``, a network cut), the jobs are ``running``
under the worker, which retries the claim and never learns about them. Its heartbeat keeps
the reaper away, so unless the worker reconciles, the jobs stay ``running`` for as long as it
lives. ``test_pg_restart`` runs into this now and then; here a proxy makes it happen every time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.acceptance import effects
from tests.acceptance.conftest import FAST
from tests.acceptance.proxy import commit_ack_dropper
from tests.support import wait_until
from tests.support.processes import WorkerProcess

TASKS = """
@app.task(bind=True)
def work(self, n):
    effects.record("run", self.request.id)
    return n
"""


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_jobs_of_a_claim_with_a_lost_commit_ack_still_run(
    db_url_for: Callable[[str], str],
    load_tasks: Callable[..., Any],
    start_worker: Callable[..., WorkerProcess],
    backend: str,
) -> None:
    url = db_url_for(backend)
    tasks = load_tasks("lostack_tasks", TASKS, url, **FAST)
    result = tasks.work.delay(7)  # waiting before the worker's first claim
    real = make_url(url)
    autocommit_claim = backend == "postgresql"  # its claims commit on their own
    with commit_ack_dropper(real.host or "127.0.0.1", real.port or 0, autocommit_claim) as proxy:
        proxied = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        worker = start_worker("lostack_tasks", proxied, "-P", "threads", "-c", "2")
        assert proxy.dropped.wait(20), "the proxy never saw the claim's COMMIT"
        row = effects.job(url, result.id)
        assert row["status"] == "running" and row["attempt"] == 1, row  # the claim committed

        # Correct behaviour: the worker (or the reaper) gets the job going again, quickly.
        wait_until(
            lambda: effects.job(url, result.id)["status"] == "completed",
            timeout=10,
            message="the job of the claim whose acknowledgement was lost completed",
        )
        assert worker.is_running()
        assert effects.count(url, "run") == 1
