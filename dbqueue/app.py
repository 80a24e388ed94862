"""``DBQueue``: the one entry point. Configuration, task registry, producer and results.

It is shaped like ``celery.Celery`` so that ``app = Celery('proj', broker=...)`` becomes
``app = DBQueue('proj', broker=...)`` and everything else in a task module stays the same.
"""

from __future__ import annotations

import importlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dbqueue import signals
from dbqueue.config import (
    DEFAULT_BROKER_URL,
    Settings,
    broker_url_from_env,
    settings_from_object,
)
from dbqueue.control import GRACEFUL, Controller, PausedJob
from dbqueue.events import EventBus, EventStream, bus_for
from dbqueue.exceptions import ImproperlyConfigured, NotRegistered
from dbqueue.producer import Producer
from dbqueue.result import AsyncResult, ResultWaiter
from dbqueue.serialization import accepted_types
from dbqueue.storage import Storage, open_storage
from dbqueue.task import Task, make_task
from dbqueue.utils.imports import symbol_by_name

_current: DBQueue | None = None
_shared_tasks: list[tuple[Callable[..., Any], dict[str, Any]]] = []


def current_app() -> DBQueue:
    """The most recently created app (Celery's ``current_app``)."""
    if _current is None:
        return DBQueue("default")
    return _current


class TaskRegistry(dict[str, Task]):
    """Registered tasks by name; a missing name raises NotRegistered naming it."""

    def __missing__(self, name: str) -> Task:
        raise NotRegistered(f"task {name!r} is not registered")


class Control:
    """``app.control``: the subset of Celery's remote control a SQL broker answers directly."""

    def __init__(self, app: DBQueue) -> None:
        self.app = app

    def revoke(
        self, task_id: str | Sequence[str], terminate: bool = False, signal: Any = None, **_: Any
    ) -> int:
        """Cancel jobs that have not finished; returns how many were cancelled.

        With ``terminate=True`` the workers running them also stop them (``signal`` is
        accepted for Celery's signature; prefork children always get SIGUSR2, then SIGKILL).
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        return self.app.controller.revoke(ids, terminate)

    def purge(self, queues: Sequence[str] | None = None) -> int:
        """Delete every job waiting to run (in ``queues`` only, when given)."""
        return self.app.storage.purge(queues)


class DBQueue:
    """A job queue app: ``DBQueue('proj', broker='postgresql+psycopg://...')``.

    Without a broker it reads ``DBQUEUE_BROKER_URL``, then ``conf.broker_url``, and falls back
    to a SQLite file, ``dbqueue.db``, in the working directory.
    """

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        include: Iterable[str] | None = None,
        config_source: Any = None,
        task_cls: type[Task] | str | None = None,
        set_as_current: bool = True,
        namespace: str | None = None,
        **settings: Any,
    ) -> None:
        global _current
        self.main = main
        self.conf = Settings()
        self._broker_arg = broker
        self.namespace = namespace
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        if settings:
            self.conf.update(settings)
        if include:
            self.conf.include = tuple(include)
        base = symbol_by_name(task_cls) if isinstance(task_cls, str) else task_cls
        self.task_cls: type[Task] = base or Task
        self.tasks = TaskRegistry()
        self.control = Control(self)
        self.controller = Controller(self)
        self._buses: dict[int, EventBus] = {}
        self.on_after_configure = signals.Signal("on_after_configure")
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self._lock = threading.RLock()
        self._storage: Storage | None = None
        self._storage_key: tuple[int, str] | None = None
        self._waiter: ResultWaiter | None = None
        self._producer = Producer(self)
        self._finalized = False
        self._autodiscover: list[tuple[Any, str]] = []
        self._local_wakers: list[Callable[[str], None]] = []
        for fun, options in _shared_tasks:
            self._register_function(fun, dict(options))
        if set_as_current:
            _current = self

    # -- configuration ------------------------------------------------------------------------

    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Load settings from a module path, module, class or mapping (Celery's signature)."""
        try:
            values = settings_from_object(obj, namespace or self.namespace)
        except ImproperlyConfigured:
            if silent:
                return
            raise
        self.conf.update(values)

    def config_from_envvar(
        self, variable_name: str, silent: bool = False, force: bool = False
    ) -> None:
        """Load settings from the module named by an environment variable."""
        module = os.environ.get(variable_name)
        if not module:
            if silent:
                return
            raise ImproperlyConfigured(f"environment variable {variable_name!r} is not set")
        self.config_from_object(module, silent=silent)

    def broker_url(self) -> str:
        """The broker in effect: the constructor's, ``DBQUEUE_BROKER_URL``, the setting, SQLite."""
        return (
            self._broker_arg
            or broker_url_from_env()
            or self.conf.get("broker_url")
            or DEFAULT_BROKER_URL
        )

    @property
    def accept(self) -> set[str]:
        return accepted_types(self.conf.accept_content)

    @property
    def result_accept(self) -> set[str]:
        return accepted_types(self.conf.result_accept_content or self.conf.accept_content)

    # -- storage --------------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """This process's Storage, created (and the schema checked) on first use."""
        key = (os.getpid(), self.broker_url())
        storage = self._storage
        if storage is not None and self._storage_key == key:
            return storage
        with self._lock:
            if self._storage is not None and self._storage_key == key:
                return self._storage
            if self._storage is not None and self._storage_key and self._storage_key[0] != key[0]:
                self._storage.dispose()
            storage = open_storage(key[1], self.conf)
            if self.conf.database_auto_upgrade:
                storage.upgrade()
            else:
                storage.check_schema()
            self._storage, self._storage_key = storage, key
            self._waiter = None
            return storage

    @property
    def result_waiter(self) -> ResultWaiter:
        storage = self.storage
        with self._lock:
            if self._waiter is None or self._waiter.app.storage is not storage:
                self._waiter = ResultWaiter(self)
            return self._waiter

    def upgrade_db(self) -> list[str]:
        """Create or upgrade dbqueue's tables; returns the names of migrations applied."""
        storage = open_storage(self.broker_url(), self.conf)
        try:
            return [f"{m.version:04d}_{m.name}" for m in storage.upgrade()]
        finally:
            storage.close()

    def close(self) -> None:
        """Publish queued events, release database connections and the result listener."""
        for bus in list(self._buses.values()):
            bus.close()
        with self._lock:
            if self._waiter is not None:
                self._waiter.close()
                self._waiter = None
            if self._storage is not None:
                self._storage.close()
                self._storage = None

    # -- tasks ------------------------------------------------------------------------------------

    def task(self, *args: Any, **options: Any) -> Any:
        """Decorator turning a function into a task: bare ``@app.task`` or ``@app.task(...)``."""
        if args and callable(args[0]) and not options and len(args) == 1:
            return self._register_function(args[0], {})

        def decorator(fun: Callable[..., Any]) -> Task:
            return self._register_function(fun, dict(options))

        return decorator

    def _register_function(self, fun: Callable[..., Any], options: dict[str, Any]) -> Task:
        base = options.pop("base", None) or self.task_cls
        name = options.pop("name", None) or self.gen_task_name(fun.__name__, fun.__module__)
        options.pop("shared", None)
        task = make_task(self, fun, base, options, name)
        self.tasks[name] = task
        return task

    def register_task(self, task: Task | type[Task]) -> Task:
        """Register a class-based task (``class MyTask(Task): def run(...)``)."""
        instance = task() if isinstance(task, type) else task
        if not instance.name:
            cls = type(instance)
            instance.name = self.gen_task_name(cls.__name__, cls.__module__)
        instance.app = self
        self.tasks[instance.name] = instance
        return instance

    def gen_task_name(self, name: str, module: str) -> str:
        """``module.function``; a module run as ``__main__`` takes the app's main name."""
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.tasks`` for each package (Django's INSTALLED_APPS by default)."""
        self._autodiscover.append((packages, related_name))
        if force or self._finalized:
            self._run_autodiscover()

    def _run_autodiscover(self) -> None:
        pending, self._autodiscover = self._autodiscover, []
        for packages, related_name in pending:
            if packages is None:
                packages = _django_apps()
            elif callable(packages):
                packages = packages()
            for package in packages:
                module = f"{package}.{related_name}"
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    if exc.name not in (module, package):
                        raise

    def finalize(self) -> None:
        """Import ``include``/``imports`` and autodiscovered modules; fire the app signals."""
        with self._lock:
            if self._finalized:
                return
            self._finalized = True
        self.on_after_configure.send(self, source=self.conf)
        for module in (*self.conf.imports, *self.conf.include):
            importlib.import_module(module)
        self._run_autodiscover()
        signals.import_modules.send(self)
        self.on_after_finalize.send(self)

    # -- producing ------------------------------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue a task by name; the task need not be registered in this process."""
        task = self.tasks.get(name)
        return self._producer.publish(task, name, tuple(args or ()), dict(kwargs or {}), options)

    def publish(
        self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any
    ) -> AsyncResult:
        """Enqueue one call of ``task`` (``Task.apply_async`` ends here)."""
        return self._producer.publish(task, task.name, args, kwargs, options)

    def build_job(
        self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Any:
        """Check a call's options and build its row without enqueuing it (eager mode)."""
        return self._producer.build(task, task.name, args, kwargs, options)

    def publish_many(
        self, task: Task, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], **options: Any
    ) -> list[AsyncResult]:
        """Enqueue many calls of ``task`` in one round trip (``Task.delay_many`` ends here)."""
        return self._producer.publish_many(task, calls, options)

    @property
    def producer(self) -> Producer:
        """Builds and inserts job rows (the fan-out builds its children with it)."""
        return self._producer

    def add_local_waker(self, waker: Callable[[str], None]) -> None:
        """A worker in this process asks to be woken when this process enqueues a job."""
        self._local_wakers.append(waker)

    def remove_local_waker(self, waker: Callable[[str], None]) -> None:
        if waker in self._local_wakers:
            self._local_wakers.remove(waker)

    def wake_local(self, queue: str) -> None:
        for waker in list(self._local_wakers):
            waker(queue)

    # -- pause, resume, cancel (dbqueue/control.py) ---------------------------------------------

    def pause_job(self, job_id: str, mode: str = GRACEFUL) -> bool:
        """Pause a job: a pending, retrying or waiting one at once (True); a running one when
        its run ends, a retry held (``"graceful"``), or at once without using up an attempt
        (``"aggressive"``), returning False as the pause lands later."""
        return self.controller.pause_job(job_id, mode)

    def resume_job(self, job_id: str) -> bool:
        """Resume a paused job in the status it was paused in; False if it was not paused."""
        return self.controller.resume_job(job_id)

    def is_job_paused(self, job_id: str) -> bool:
        return self.controller.is_job_paused(job_id)

    def paused_jobs(self, queue: str | None = None) -> list[PausedJob]:
        """Paused jobs (of one queue), oldest first."""
        return self.controller.paused_jobs(queue)

    def pause_queue(self, name: str) -> None:
        """Pause a queue for every worker on the database; running jobs finish, enqueue works."""
        self.controller.pause_queue(name)

    def resume_queue(self, name: str) -> None:
        self.controller.resume_queue(name)

    def is_queue_paused(self, name: str) -> bool:
        return self.controller.is_queue_paused(name)

    def paused_queues(self) -> list[str]:
        return self.controller.paused_queues()

    def pause_worker(self, name: str, mode: str = GRACEFUL) -> int:
        """Pause the workers with this name or id, in any process or host; how many."""
        return self.controller.pause_worker(name, mode)

    def resume_worker(self, name: str) -> int:
        return self.controller.resume_worker(name)

    # -- events (dbqueue/events.py) ---------------------------------------------------------------

    @property
    def event_bus(self) -> EventBus:
        """This process's event publisher."""
        return bus_for(self, self._buses)

    def events(self, types: Iterable[str] | None = None, buffer: int = 10_000) -> EventStream:
        """Follow the live events of every worker and process on this database.

        ``for event in app.events(): ...``; close it (or use ``with``) to stop following.
        """
        return EventStream(self, types, buffer)

    def emit_custom_event(
        self, job_id: str | None, kind: str, data: dict[str, Any] | None = None
    ) -> None:
        """Publish a custom event to every follower; from a job, ``job_id=None`` means its own."""
        self.controller.emit_custom_event(job_id, kind, data)

    # -- periodic jobs --------------------------------------------------------------------------

    def schedule(
        self,
        task: Task | str,
        schedule: Any,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        catch_up: str | None = None,
        **options: Any,
    ) -> str:
        """Run ``task`` periodically: ``app.schedule(report, daily(9, 0), args=(...,))``.

        ``schedule`` is every/daily/weekly/cron, Celery's crontab/schedule, seconds or a
        timedelta; ``options`` are apply_async's. Schedulers (``dbqueue worker -B``,
        ``dbqueue beat``) fire it; returns the schedule's name. Errors are raised here.
        """
        from dbqueue.schedules.entries import add_entry

        return add_entry(self, task, schedule, args, kwargs, name, catch_up, options)

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Any,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Celery's form, usually called from ``on_after_configure``; returns the name."""
        from dbqueue.schedules.entries import add_periodic_task

        return add_periodic_task(self, schedule, sig, args, kwargs, name, opts)

    # -- results and workers --------------------------------------------------------------------

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> AsyncResult:
        """The result handle of a job id."""
        return AsyncResult(task_id, app=self, task_name=task_name)

    def Worker(self, **options: Any) -> Any:
        """A worker for this app (``dbqueue worker`` builds one); call ``start()`` to run it."""
        from dbqueue.worker import Worker

        return Worker(self, **options)

    def uuid(self) -> str:
        return str(uuid.uuid4())

    def __repr__(self) -> str:
        return f"<DBQueue {self.main or '__main__'} at {id(self):#x}>"


def shared_task(*args: Any, **options: Any) -> Any:
    """``@shared_task``: register the task with every app, existing and future."""

    def register(fun: Callable[..., Any]) -> Any:
        _shared_tasks.append((fun, dict(options)))
        app = current_app()
        if options.get("name") not in app.tasks:
            task = app._register_function(fun, dict(options))
        else:
            task = app.tasks[options["name"]]
        return task

    if args and callable(args[0]) and len(args) == 1 and not options:
        return register(args[0])
    return register


def _django_apps() -> list[str]:
    try:
        from django.conf import settings

        return list(settings.INSTALLED_APPS)
    except Exception:
        return []
