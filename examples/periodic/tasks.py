"""Tasks and schedules for the periodic example, in both the seed's and Celery's forms."""

from __future__ import annotations

import datetime as dt

from dbqueue import DBQueue, crontab, daily, every

app = DBQueue("periodic")
app.conf.timezone = "Europe/Berlin"

#: Celery's form: works unchanged.
app.conf.beat_schedule = {
    "cleanup": {"task": "tasks.cleanup", "schedule": crontab(minute=0, hour="*/6")},
}


@app.task
def heartbeat(source: str) -> str:
    return f"{source}: alive at {dt.datetime.now():%H:%M:%S}"


@app.task
def cleanup() -> str:
    return "cleaned"


@app.task
def report(kind: str) -> str:
    return f"{kind} report"


# The seed's form.
app.schedule(heartbeat, every(dt.timedelta(seconds=1)), args=("beat",), name="heartbeat")
app.schedule(report, daily(9, 30), args=("morning",), name="morning-report", expires=3600)


@app.on_after_configure.connect
def more_schedules(sender: DBQueue, **_: object) -> None:
    weekdays = crontab(hour=7, minute=30, day_of_week="mon-fri")
    sender.add_periodic_task(weekdays, report, args=("weekday",), name="weekday-report")
