"""``app.conf``: settings under Celery's names, with Celery's old uppercase names accepted too.

Settings Celery has keep Celery's name and default; settings that only dbqueue has take their
name from the seed library (``stale_lock_age``, ``storage_retry``, ...).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from dbqueue.backoff import RetryConfig
from dbqueue.exceptions import ImproperlyConfigured

#: Environment variable that supplies the broker URL when the app is not given one.
BROKER_URL_ENV = "DBQUEUE_BROKER_URL"

#: The embedded default: a SQLite file in the working directory.
DEFAULT_BROKER_URL = "sqlite:///dbqueue.db"

DEFAULTS: dict[str, Any] = {
    # Celery's settings, by Celery's names. Defaults are Celery's except where dbqueue works
    # differently: jobs are always acknowledged late (the row stays until the job finishes),
    # always tracked as started, and prefetched (up to the multiplier) only while jobs are short.
    "broker_url": None,
    "result_backend": None,
    "broker_transport_options": {},
    "database_engine_options": {},
    "task_default_queue": "celery",
    "task_default_priority": None,
    "task_routes": None,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": None,
    "result_expires": dt.timedelta(days=1),
    "timezone": None,
    "enable_utc": True,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    "task_ignore_result": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_acks_late": True,
    "task_track_started": True,
    "task_create_missing_queues": True,
    "imports": (),
    "include": (),
    "worker_concurrency": None,
    "worker_pool": "prefork",
    "worker_max_tasks_per_child": None,
    "worker_prefetch_multiplier": 4,
    "worker_hijack_root_logger": True,
    "worker_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    "worker_task_log_format": (
        "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
    ),
    "beat_schedule": {},
    #: Longest sleep of a scheduler between two reads of its schedules, in seconds (it wakes
    #: at each fire time anyway; this bounds how long an operator's enable takes to act).
    "beat_max_loop_interval": 10.0,
    # dbqueue's own settings.
    #: Create or upgrade the tables on first use (``dbqueue db upgrade`` does it explicitly).
    "database_auto_upgrade": True,
    #: Connection pool preset: default, high_concurrency, low_latency, resource_constrained.
    "broker_pool_preset": "default",
    #: Individual pool options overriding the preset (max_open_conns, max_idle_conns,
    #: conn_max_lifetime, conn_max_idle_time).
    "broker_pool_options": {},
    #: Retry policy for every database call (the seed's WithStorageRetry).
    "storage_retry": RetryConfig(),
    #: Retry policy for the worker's claim query (the seed's WithDequeueRetry).
    "dequeue_retry": RetryConfig(
        max_attempts=3, initial_backoff=0.5, max_backoff=10.0, multiplier=2.0, jitter=0.2
    ),
    #: Longest pause between two polls of an idle worker, in seconds (the seed's WithPollInterval).
    "worker_poll_interval": 1.0,
    #: Shortest pause between polls right after the queue drained, in seconds.
    "worker_poll_interval_min": 0.005,
    #: Seconds between two heartbeats of a worker (one statement per worker).
    "worker_heartbeat_interval": 2.0,
    #: Seconds between two runs of the stale-lock reaper; 0 disables it.
    "stale_lock_interval": 5.0,
    #: A running job whose worker has not heartbeated for this many seconds is reclaimed.
    "stale_lock_age": 15.0,
    #: Seconds a warm shutdown waits for running jobs before releasing them.
    "worker_shutdown_timeout": 30.0,
    #: Seconds between two prunes of finished jobs older than ``result_expires``.
    "result_prune_interval": 60.0,
    #: Wake idle workers with LISTEN/NOTIFY on PostgreSQL.
    "broker_notify": True,
    #: Seconds between two control passes of a worker (one read: pause requests, terminations,
    #: paused queues, event subscribers). PostgreSQL notifies workers at once besides.
    "worker_control_interval": 1.0,
    #: Seconds a stopped job (aggressive pause, terminate) gets to stop before its prefork
    #: child is killed and replaced.
    "worker_stop_timeout": 5.0,
    #: Seconds events stay in the event table (databases without LISTEN/NOTIFY).
    "events_retention": 60.0,
    #: After scheduler downtime: 'one' catch-up run per schedule, or 'skip' the missed runs.
    "beat_catch_up": "one",
    #: A fire time this many seconds late still fires as usual (a slow scheduler catches up
    #: one fire time after another); later than that counts as downtime (see beat_catch_up).
    "beat_misfire_grace_time": 10.0,
}

#: Celery 3 uppercase names and the current names they map to.
OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_DEFAULT_PRIORITY": "task_default_priority",
    "CELERY_ROUTES": "task_routes",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_RESULT_EXPIRES": "result_expires",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_CREATE_MISSING_QUEUES": "task_create_missing_queues",
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_POOL": "worker_pool",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYD_HIJACK_ROOT_LOGGER": "worker_hijack_root_logger",
    "CELERYD_LOG_FORMAT": "worker_log_format",
    "CELERYD_TASK_LOG_FORMAT": "worker_task_log_format",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERYBEAT_MAX_LOOP_INTERVAL": "beat_max_loop_interval",
}


class Settings(dict[str, Any]):
    """A dict of settings that also reads and writes as attributes (``conf.broker_url``)."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        super().__init__({k: _copy_default(v) for k, v in DEFAULTS.items()})
        if values:
            self.update(values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting named {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(OLD_NAMES.get(key, key), value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        values = dict(*args, **kwargs)
        _refuse_mixed_names(values)
        for key, value in values.items():
            self[key] = value

    def changes(self) -> dict[str, Any]:
        """The settings that differ from their defaults (shown in the worker banner)."""
        return {k: v for k, v in self.items() if k not in DEFAULTS or DEFAULTS[k] != v}

    @property
    def result_expires_seconds(self) -> float | None:
        """``result_expires`` as seconds, or None when finished jobs are kept forever."""
        value = self.get("result_expires")
        if value in (None, 0):
            return None
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
        return float(value)


def _copy_default(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def _refuse_mixed_names(values: Mapping[str, Any]) -> None:
    old = sorted(k for k in values if k in OLD_NAMES)
    new = sorted(k for k in values if k in DEFAULTS)
    if old and new:
        raise ImproperlyConfigured(
            "configuration mixes Celery's old uppercase setting names "
            f"({', '.join(old[:3])}) with new ones ({', '.join(new[:3])}); use one style"
        )


def load_object(obj: Any) -> Any:
    """Resolve ``'pkg.module'`` or ``'pkg.module:attr'`` (Celery's form) to the object itself."""
    if not isinstance(obj, str):
        return obj
    module_name, _, attr = obj.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(f"cannot import configuration module {module_name!r}: {exc}")
    return getattr(module, attr) if attr else module


def settings_from_object(obj: Any, namespace: str | None = None) -> dict[str, Any]:
    """Read settings from a module, class, object or mapping, as ``config_from_object`` does.

    With ``namespace='CELERY'`` only names starting with ``CELERY_`` are read and the prefix is
    dropped (Django's ``CELERY_BROKER_URL`` becomes ``broker_url``).
    """
    source = load_object(obj)
    if isinstance(source, Mapping):
        items: Iterable[tuple[str, Any]] = source.items()
    else:
        items = (
            (name, getattr(source, name))
            for name in dir(source)
            if not name.startswith("_") and not isinstance(getattr(source, name), ModuleType)
        )
    prefix = f"{namespace.upper()}_" if namespace else None
    found: dict[str, Any] = {}
    for name, value in items:
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix) :].lower()
        elif name not in OLD_NAMES and not name.islower():
            continue
        found[name] = value
    return found


def broker_url_from_env() -> str | None:
    """The broker URL from ``DBQUEUE_BROKER_URL``, if set and not empty."""
    return os.environ.get(BROKER_URL_ENV) or None
