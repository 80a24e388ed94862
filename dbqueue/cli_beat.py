"""``dbqueue beat`` (the scheduler on its own) and ``dbqueue schedules`` (list, enable,
disable, remove the stored schedules). Wired into :mod:`dbqueue.cli`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
from typing import Any
from zoneinfo import ZoneInfo

import click

from dbqueue.cli import _app_options, _Group, _load_app

#: Celery's scheduler classes: accepted on the command line, and meaningless here.
_CELERY_SCHEDULERS = ("celery.beat:PersistentScheduler", "persistent", "")


@click.command()
@_app_options
@click.option("-l", "--loglevel", default="WARNING", show_default=True, help="Log level.")
@click.option("-f", "--logfile", help="Log to this file instead of stderr.")
@click.option(
    "--max-interval",
    type=click.FloatRange(min=0.01),
    help="Longest sleep between two reads of the schedules (default: beat_max_loop_interval).",
)
@click.option(
    "-s",
    "--schedule",
    "schedule_file",
    hidden=True,
    help="Ignored: schedules live in the database.",
)
@click.option("-S", "--scheduler", hidden=True, help="Ignored: dbqueue has one scheduler.")
@click.pass_context
def beat(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    loglevel: str,
    logfile: str | None,
    max_interval: float | None,
    schedule_file: str | None,
    scheduler: str | None,
) -> None:
    """Fire the app's schedules. Run as many as you like: each fire time enqueues one job."""
    from dbqueue.storage.engine import mask_password
    from dbqueue.worker.banner import parse_loglevel, setup_logging
    from dbqueue.worker.beat import Beat

    app = _load_app(ctx, app_spec, broker, required=True)
    level = parse_loglevel(loglevel)
    if app.conf.worker_hijack_root_logger:
        setup_logging(level, logfile, app.conf.worker_log_format)
    log = logging.getLogger("dbqueue.beat")
    if scheduler and scheduler not in _CELERY_SCHEDULERS:
        log.warning("Ignoring --scheduler %s: dbqueue stores schedules in the database", scheduler)
    service = Beat(app, max_interval)
    service.setup()

    def stop(signum: int, frame: Any) -> None:
        log.warning("beat: %s received, stopping", signal.Signals(signum).name)
        service.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    from dbqueue import __version__

    lines = [
        f"dbqueue beat v{__version__} is starting.",
        f"  . broker -> {mask_password(app.broker_url())}",
        f"  . schedules -> {len(service.entries)} (stored in dbqueue_schedules)",
        *(f"      . {line}" for line in service.describe()),
        f"  . maxinterval -> {service.max_interval:g}s",
        f"  . logfile -> {logfile or '[stderr]'}@{logging.getLevelName(level)}",
    ]
    click.echo("\n".join(lines))
    click.echo("dbqueue beat ready.", err=True)
    try:
        service.serve()
    finally:
        app.close()


@click.group(cls=_Group, invoke_without_command=True)
@_app_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def schedules(ctx: click.Context, app_spec: str | None, broker: str | None, as_json: bool) -> None:
    """List the stored schedules (see also: enable, disable, remove)."""
    if ctx.invoked_subcommand is not None:
        return
    from dbqueue.storage.schedules import ScheduleStore

    app = _load_app(ctx, app_spec, broker, existing=True)
    rows = ScheduleStore(app.storage).all()
    if as_json:
        for row in rows:
            for column in ("next_fire_at", "last_fire_at", "created_at", "updated_at"):
                row[column] = _iso(row[column], row["timezone"])
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("No schedules stored: they are stored when a scheduler starts")
        click.echo("(dbqueue worker -B or dbqueue beat).")
        return
    table = [("NAME", "ENABLED", "WHEN", "TIMEZONE", "NEXT", "LAST", "RUNS", "TASK")]
    for row in rows:
        table.append(
            (
                row["name"],
                "yes" if row["enabled"] else "no",
                row["expression"],
                row["timezone"],
                _iso(row["next_fire_at"], row["timezone"]) if row["enabled"] else "-",
                _iso(row["last_fire_at"], row["timezone"]) or "never",
                str(row["total_run_count"]),
                row["task"],
            )
        )
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    for line in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


@schedules.command()
@_app_options
@click.argument("name")
@click.pass_context
def enable(ctx: click.Context, app_spec: str | None, broker: str | None, name: str) -> None:
    """Turn schedule NAME back on; it fires next at its first fire time from now."""
    from dbqueue.storage.schedules import ScheduleStore

    app = _load_app(ctx, app_spec, broker, existing=True)
    store = ScheduleStore(app.storage)
    before = store.set_enabled(name, True)
    row = next(r for r in store.all() if r["name"] == name)
    state = "was already enabled" if before["enabled"] else "enabled"
    click.echo(f"Schedule {name} {state}; next fire {_iso(row['next_fire_at'], row['timezone'])}.")


@schedules.command()
@_app_options
@click.argument("name")
@click.pass_context
def disable(ctx: click.Context, app_spec: str | None, broker: str | None, name: str) -> None:
    """Stop schedule NAME everywhere (survives redeploys) until `dbqueue schedules enable`."""
    from dbqueue.storage.schedules import ScheduleStore

    app = _load_app(ctx, app_spec, broker, existing=True)
    before = ScheduleStore(app.storage).set_enabled(name, False)
    state = "was already disabled" if not before["enabled"] else "disabled"
    click.echo(f"Schedule {name} {state}: no scheduler fires it until it is enabled again.")


@schedules.command()
@_app_options
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, app_spec: str | None, broker: str | None, name: str) -> None:
    """Delete schedule NAME from the database (a scheduler whose code defines it stores it
    again when it starts: remove it from the code too)."""
    from dbqueue.storage.schedules import ScheduleStore

    app = _load_app(ctx, app_spec, broker, existing=True)
    ScheduleStore(app.storage).remove(name)
    click.echo(f"Schedule {name} removed.")


def _iso(epoch: float | None, timezone: str) -> str:
    if epoch is None:
        return ""
    moment = dt.datetime.fromtimestamp(epoch, ZoneInfo(timezone))
    return moment.isoformat(sep=" ", timespec="seconds")


__all__ = ["beat", "schedules"]
