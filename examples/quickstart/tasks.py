"""Tasks for the quickstart: plain, async, retrying and failing, as in a Celery project."""

from __future__ import annotations

import asyncio
import random

from dbqueue import DBQueue

#: No broker given: DBQUEUE_BROKER_URL if set, else the embedded SQLite file dbqueue.db.
app = DBQueue("quickstart")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
async def fetch_title(url: str) -> str:
    """An async task: it runs on the worker's event loop."""
    await asyncio.sleep(0.1)
    return f"Title of {url}"


@app.task(bind=True, max_retries=3, default_retry_delay=0.2)
def flaky_charge(self, order_id: int) -> str:
    """Fails twice, then succeeds: retries are stored in the database between attempts."""
    if self.request.retries < 2:
        raise self.retry(exc=ConnectionError("payment gateway timed out"))
    return f"charged order {order_id} on attempt {self.request.retries + 1}"


@app.task(unique_key="report:{day}")
def daily_report(day: str) -> str:
    """At most one live job per day: a second enqueue returns the first one's result."""
    return f"report for {day}: {random.randint(100, 999)} orders"


@app.task
def divide(x: float, y: float) -> float:
    return x / y
