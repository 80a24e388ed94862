"""``dbqueue``: the command line, shaped like Celery's (``dbqueue worker -A proj -Q a,b -c 4``).

Every error is one line on stderr with a non-zero exit status; set ``DBQUEUE_TRACEBACK=1``
to see the full traceback of an unexpected one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from dbqueue.exceptions import DBQueueError

_STATUS_COLUMNS = (
    "pending",
    "retrying",
    "running",
    "waiting",
    "paused",
    "completed",
    "failed",
    "cancelled",
)


class _Group(click.Group):
    """Turns exceptions into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        except Exception as error:
            if os.environ.get("DBQUEUE_TRACEBACK"):
                raise
            click.echo(f"Error: {_describe(error)}", err=True)
            raise click.exceptions.Exit(2) from None


def _describe(error: BaseException) -> str:
    if isinstance(error, DBQueueError):
        return str(error)
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _app_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("-A", "--app", "app_spec", help="The app: module, module:attr.")(fn)
    return click.option("-b", "--broker", help="Broker URL (overrides the app's).")(fn)


def _load_app(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    required: bool = False,
    existing: bool = False,
) -> Any:
    """The app named by -A here or before the command; a bare app on the default broker."""
    from dbqueue.app import DBQueue
    from dbqueue.utils.imports import find_app

    root = ctx.find_root().params
    spec = app_spec or root.get("app_spec")
    broker = broker or root.get("broker")
    if spec:
        app = find_app(spec)
    elif required:
        raise click.UsageError("-A/--app is required, e.g. dbqueue worker -A proj")
    else:
        app = DBQueue("dbqueue")
    if broker:
        app._broker_arg = broker
    ctx.meta["app_spec"] = spec
    if existing:
        _refuse_missing_sqlite(app.broker_url())
    return app


def _refuse_missing_sqlite(url_text: str) -> None:
    """Reading commands must not create an empty SQLite file for a mistyped path."""
    from dbqueue.storage.engine import normalize_url

    url = normalize_url(url_text)
    if url.get_backend_name() == "sqlite" and url.database and not os.path.exists(url.database):
        raise click.ClickException(f"no SQLite database at {url.database}")


@click.group(cls=_Group)
@_app_options
@click.option("--workdir", type=click.Path(file_okay=False), help="Change to this directory.")
@click.version_option(package_name="dbqueue")
def main(app_spec: str | None, broker: str | None, workdir: str | None) -> None:
    """dbqueue: a Celery-compatible job queue on your SQL database."""
    if workdir:
        os.chdir(workdir)
    if "" not in sys.path:
        sys.path.insert(0, "")


@main.command()
@_app_options
@click.option("-Q", "--queues", help="Queues to consume, e.g. default,emails:5 (:N = own limit).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Shared pool size.")
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    help="Execution pool for sync tasks.",
)
@click.option("-n", "--hostname", help="Node name, e.g. worker1@%h.")
@click.option("-l", "--loglevel", default="WARNING", show_default=True, help="Log level.")
@click.option("-f", "--logfile", help="Log to this file instead of stderr.")
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Replace a prefork child after this many jobs.",
)
@click.option(
    "--prefetch-multiplier",
    type=click.IntRange(min=0),
    help="Most jobs held per slot while jobs are short (0: no limit but the claim size).",
)
@click.option("--without-banner", is_flag=True, help="Do not print the start-up banner.")
@click.option("-B", "--beat", is_flag=True, help="Also fire the app's schedules (any number may).")
@click.option(
    "-s", "--schedule-filename", hidden=True, help="Ignored: schedules live in the database."
)
@click.option("--scheduler", hidden=True, help="Ignored: dbqueue has one scheduler.")
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    queues: str | None,
    concurrency: int | None,
    pool: str | None,
    hostname: str | None,
    loglevel: str,
    logfile: str | None,
    max_tasks_per_child: int | None,
    prefetch_multiplier: int | None,
    without_banner: bool,
    beat: bool,
    schedule_filename: str | None,
    scheduler: str | None,
) -> None:
    """Start a worker."""
    app = _load_app(ctx, app_spec, broker, required=True)
    app.Worker(
        queues=queues,
        concurrency=concurrency,
        pool=pool,
        hostname=hostname,
        loglevel=loglevel,
        logfile=logfile,
        max_tasks_per_child=max_tasks_per_child,
        app_spec=ctx.meta["app_spec"],
        show_banner=not without_banner,
        prefetch_multiplier=prefetch_multiplier,
        beat=beat,
        freeze_heap=True,
    ).start()


@main.group(cls=_Group)
def db() -> None:
    """Database schema commands."""


@db.command()
@_app_options
@click.pass_context
def upgrade(ctx: click.Context, app_spec: str | None, broker: str | None) -> None:
    """Create or upgrade dbqueue's tables (safe to run any number of times)."""
    from dbqueue.storage.engine import mask_password

    app = _load_app(ctx, app_spec, broker)
    applied = app.upgrade_db()
    target = mask_password(app.broker_url())
    if applied:
        click.echo(f"Applied {', '.join(applied)} to {target}")
    else:
        click.echo(f"{target} is up to date")


@main.command()
@_app_options
@click.argument("name")
@click.option("-a", "--args", "args_json", default="[]", help="Positional arguments, JSON list.")
@click.option("-k", "--kwargs", "kwargs_json", default="{}", help="Keyword arguments, JSON object.")
@click.option("-Q", "--queue", help="Queue to send to.")
@click.option("--countdown", type=float, help="Run no sooner than this many seconds from now.")
@click.option("--eta", help="Run no sooner than this ISO 8601 time.")
@click.option("--expires", type=float, help="Revoke if not started within this many seconds.")
@click.option("--priority", type=int, help="Higher runs first.")
@click.pass_context
def call(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    name: str,
    args_json: str,
    kwargs_json: str,
    queue: str | None,
    countdown: float | None,
    eta: str | None,
    expires: float | None,
    priority: int | None,
) -> None:
    """Enqueue task NAME and print its id."""
    args = _parse_json(args_json, list, "--args", "a JSON list, e.g. '[1, 2]'")
    kwargs = _parse_json(kwargs_json, dict, "--kwargs", "a JSON object, e.g. '{\"x\": 1}'")
    app = _load_app(ctx, app_spec, broker)
    eta_value = None
    if eta:
        try:
            eta_value = dt.datetime.fromisoformat(eta)
        except ValueError:
            raise click.BadParameter(f"not an ISO 8601 time: {eta!r}", param_hint="--eta")
    result = app.send_task(
        name,
        args,
        kwargs,
        queue=queue,
        countdown=countdown,
        eta=eta_value,
        expires=expires,
        priority=priority,
    )
    click.echo(result.id)


def _parse_json(text: str, kind: type, option: str, expected: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise click.BadParameter(
            f"invalid JSON ({error.msg}); expected {expected}", param_hint=option
        )
    if not isinstance(value, kind):
        raise click.BadParameter(
            f"expected {expected}, got {type(value).__name__}", param_hint=option
        )
    return value


@main.command()
@_app_options
@click.argument("task_id")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show a failure's traceback.")
@click.option("--timeout", type=float, help="Wait up to this many seconds for the job to finish.")
@click.pass_context
def result(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    task_id: str,
    show_traceback: bool,
    timeout: float | None,
) -> None:
    """Print the state and result of job TASK_ID."""
    from dbqueue.exceptions import TaskNotFound

    app = _load_app(ctx, app_spec, broker, existing=True)
    handle = app.AsyncResult(task_id)
    if timeout is not None:
        handle.get(timeout=timeout, propagate=False)
    if not handle.exists():
        raise TaskNotFound(f"no job with id {task_id!r}: never enqueued, or its result expired")
    state = handle.state
    value = handle.result
    if state == "SUCCESS":
        click.echo(_render(value))
        return
    click.echo(f"{state}: {value!r}" if value is not None else state)
    if show_traceback and handle.traceback:
        click.echo(handle.traceback)
    if state in ("FAILURE", "REVOKED", "REJECTED"):
        raise click.exceptions.Exit(1)


def _render(value: Any) -> str:
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


@main.command()
@_app_options
@click.option("-Q", "--queues", help="Only these queues (comma separated).")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(
    ctx: click.Context, app_spec: str | None, broker: str | None, queues: str | None, force: bool
) -> None:
    """Delete every job waiting to run (not running or finished ones)."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    where = f"queue(s) {', '.join(names)}" if names else "all queues"
    if not force:
        click.confirm(
            f"This deletes every job waiting in {where}; there is no undo. Continue?", abort=True
        )
    count = app.control.purge(names)
    click.echo(f"Purged {count} job(s) from {where}.")


@main.command()
@_app_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, app_spec: str | None, broker: str | None, as_json: bool) -> None:
    """Queues with their jobs counted by status, and the workers online."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    storage = app.storage
    counts = storage.queue_counts()
    paused = set(storage.paused_queues())
    for queue in paused:
        counts.setdefault(queue, {})
    workers = storage.live_workers(_worker_age(app))
    now = storage.now()
    if as_json:
        document = {"queues": counts, "paused_queues": sorted(paused), "workers": workers}
        click.echo(json.dumps(document, default=str, indent=2))
        return
    click.echo("Queues:" if counts else "Queues: none")
    if counts:
        header = f"  {'queue':<24}" + "".join(f"{c:>11}" for c in _STATUS_COLUMNS)
        click.echo(header)
        for queue in sorted(counts):
            row = counts[queue]
            name = f"{queue} (paused)" if queue in paused else queue
            click.echo(f"  {name:<24}" + "".join(f"{row.get(c, 0):>11}" for c in _STATUS_COLUMNS))
    click.echo(f"Workers: {len(workers)} online")
    for w in workers:
        queues = ",".join(f"{q}:{n}" if n else q for q, n in w["queues"].items())
        state = f"  paused ({w['pause_mode']})" if w.get("pause_mode") else ""
        click.echo(
            f"  {w['name']}  pid {w['pid']}  {w['pool']} x{w['concurrency']}  "
            f"running {w['running']}  queues {queues}  "
            f"heartbeat {now - w['heartbeat_at']:.1f}s ago{state}"
        )


def _worker_age(app: Any) -> float:
    """Silence after which a registered worker is no longer listed as online."""
    return max(float(app.conf.stale_lock_age), 3 * float(app.conf.worker_heartbeat_interval))


# -- pause, resume, cancel, events -------------------------------------------------------------

_aggressive = click.option(
    "--aggressive",
    is_flag=True,
    help="Stop running jobs now instead of letting them finish their current run.",
)


@main.group(cls=_Group)
def pause() -> None:
    """Pause a worker, a queue or a job (graceful unless --aggressive)."""


@main.group(cls=_Group)
def resume() -> None:
    """Resume a paused worker, queue or job."""


@pause.command("worker")
@_app_options
@click.argument("name")
@_aggressive
@click.pass_context
def pause_worker(
    ctx: click.Context, app_spec: str | None, broker: str | None, name: str, aggressive: bool
) -> None:
    """Pause the workers named NAME (or with id NAME), on any host."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    mode = "aggressive" if aggressive else "graceful"
    count = app.pause_worker(name, mode)
    what = (
        "running jobs are stopped and go back to the queue" if aggressive else "running jobs finish"
    )
    click.echo(f"Pausing {count} worker(s) named {name} ({mode}): no new jobs, {what}.")


@resume.command("worker")
@_app_options
@click.argument("name")
@click.pass_context
def resume_worker(ctx: click.Context, app_spec: str | None, broker: str | None, name: str) -> None:
    """Resume the workers named NAME (or with id NAME)."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    count = app.resume_worker(name)
    click.echo(f"Resuming {count} worker(s) named {name}.")


@pause.command("queue")
@_app_options
@click.argument("name")
@click.pass_context
def pause_queue(ctx: click.Context, app_spec: str | None, broker: str | None, name: str) -> None:
    """Pause queue NAME for every worker; running jobs finish, enqueueing still works."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    app.pause_queue(name)
    click.echo(f"Queue {name} paused: no worker claims its jobs; running ones finish.")


@resume.command("queue")
@_app_options
@click.argument("name")
@click.pass_context
def resume_queue(ctx: click.Context, app_spec: str | None, broker: str | None, name: str) -> None:
    """Resume queue NAME."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    app.resume_queue(name)
    click.echo(f"Queue {name} resumed.")


@pause.command("job")
@_app_options
@click.argument("job_id")
@_aggressive
@click.pass_context
def pause_job(
    ctx: click.Context, app_spec: str | None, broker: str | None, job_id: str, aggressive: bool
) -> None:
    """Pause job JOB_ID (a running one: when its run ends, or at once with --aggressive)."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    if app.pause_job(job_id, "aggressive" if aggressive else "graceful"):
        click.echo(f"Job {job_id} paused.")
    elif aggressive:
        click.echo(f"Job {job_id} is running: its worker stops it now and it pauses.")
    else:
        click.echo(f"Job {job_id} is running: it pauses when its current run ends.")


@resume.command("job")
@_app_options
@click.argument("job_id")
@click.pass_context
def resume_job(ctx: click.Context, app_spec: str | None, broker: str | None, job_id: str) -> None:
    """Resume job JOB_ID in the status it was paused in."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    if app.resume_job(job_id):
        click.echo(f"Job {job_id} resumed.")
        return
    state = app.storage.job_control_state(job_id)
    click.echo(f"Job {job_id} is not paused ({state.status if state else 'gone'}).")


@main.command()
@_app_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def paused(ctx: click.Context, app_spec: str | None, broker: str | None, as_json: bool) -> None:
    """Paused queues, workers and jobs."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    queues = app.paused_queues()
    workers = [w for w in app.storage.live_workers(_worker_age(app)) if w.get("pause_mode")]
    jobs = app.paused_jobs()
    if as_json:
        document = {
            "queues": queues,
            "workers": [
                {"name": w["name"], "id": w["id"], "mode": w["pause_mode"]} for w in workers
            ],
            "jobs": [
                {
                    "id": j.id,
                    "task": j.task,
                    "queue": j.queue,
                    "resume_status": j.resume_status,
                    "mode": j.mode,
                }
                for j in jobs
            ],
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"Queues: {', '.join(queues) if queues else 'none'}")
    click.echo(f"Workers: {'' if workers else 'none'}".rstrip())
    for w in workers:
        click.echo(f"  {w['name']}  pid {w['pid']}  {w['pause_mode']}")
    click.echo(f"Jobs: {len(jobs) if jobs else 'none'}")
    for j in jobs:
        click.echo(f"  {j.id}  {j.task}  queue {j.queue}  resumes {j.resume_status}  ({j.mode})")


@main.command()
@_app_options
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Also stop the ones that are running.")
@click.pass_context
def revoke(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    job_ids: tuple[str, ...],
    terminate: bool,
) -> None:
    """Cancel jobs that have not finished (paused ones too)."""
    app = _load_app(ctx, app_spec, broker, existing=True)
    count = app.control.revoke(list(job_ids), terminate=terminate)
    suffix = "; running ones are being stopped" if terminate and count else ""
    click.echo(f"Revoked {count} of {len(job_ids)} job(s){suffix}.")


@main.command()
@_app_options
@click.option("-t", "--type", "types", multiple=True, help="Only this event type (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("-n", "--count", type=click.IntRange(min=1), help="Exit after this many events.")
@click.option("--timeout", type=float, help="Exit after this many seconds.")
@click.pass_context
def events(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    types: tuple[str, ...],
    as_json: bool,
    count: int | None,
    timeout: float | None,
) -> None:
    """Follow the live events of every worker on the database (Ctrl-C to stop)."""
    import time

    app = _load_app(ctx, app_spec, broker, existing=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    with app.events(types=types or None) as stream:
        while count is None or seen < count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            event = stream.get(timeout=0.5 if remaining is None else min(0.5, remaining))
            if event is None:
                continue
            seen += 1
            click.echo(json.dumps(event.to_dict()) if as_json else _event_line(event))


def _event_line(event: Any) -> str:
    stamp = dt.datetime.fromtimestamp(event.timestamp).isoformat(timespec="milliseconds")
    parts = [stamp, event.type]
    for label, value in (
        ("job", event.job_id),
        ("task", event.task),
        ("queue", event.queue),
        ("worker", event.worker),
        ("kind", event.kind),
    ):
        if value:
            parts.append(f"{label}={value}")
    if event.data:
        parts.append(json.dumps(event.data))
    return "  ".join(parts)


from dbqueue.cli_beat import beat, schedules  # noqa: E402 - the commands import the helpers above

main.add_command(beat)
main.add_command(schedules)
