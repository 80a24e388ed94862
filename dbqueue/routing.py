"""``task_routes``: map a task name to a queue (and priority), the way Celery's router does.

Routes may be a dict (exact names, globs such as ``'feed.*'``, compiled regexes), an ordered
list of ``(pattern, route)`` pairs, a router function ``fn(name, args, kwargs, options,
task=None, **kw)``, a dotted path to one, or a list or tuple of any of these; the first match
wins. Explicit ``apply_async`` options and task attributes
take precedence over routes.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dbqueue.exceptions import ImproperlyConfigured
from dbqueue.utils.imports import symbol_by_name

Route = dict[str, Any]
Router = Callable[..., Any]


def compile_routes(routes: Any) -> list[Router]:
    """Turn the ``task_routes`` setting into a list of router functions."""
    if routes is None:
        return []
    if isinstance(routes, Mapping | str) or callable(routes):
        routes = [routes]
    if not isinstance(routes, list | tuple):
        raise ImproperlyConfigured(f"task_routes must be a dict, list or function, not {routes!r}")
    return [_compile_one(route) for route in routes]


def _compile_one(route: Any) -> Router:
    if isinstance(route, str):
        route = symbol_by_name(route)
    if isinstance(route, Mapping):
        return MapRouter(route.items())
    if isinstance(route, list | tuple) and all(
        isinstance(item, list | tuple) and len(item) == 2 for item in route
    ):
        return MapRouter(route)
    if callable(route):
        return _function_router(route)
    raise ImproperlyConfigured(f"cannot use {route!r} as a task route")


def _function_router(fn: Callable[..., Any]) -> Router:
    """Call a router function with ``task=`` only if its signature takes it."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn
    takes_task = any(p.name == "task" or p.kind is p.VAR_KEYWORD for p in params)
    if takes_task:
        return fn

    def router(name: str, args: Any, kwargs: Any, options: Any, task: Any = None) -> Any:
        return fn(name, args, kwargs, options)

    return router


class MapRouter:
    """Routes from (pattern, route) pairs: exact names first, then globs and regexes in order."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern[str], Any]] = []
        for key, value in items:
            if isinstance(key, re.Pattern):
                self.patterns.append((key, value))
            elif isinstance(key, str) and any(c in key for c in "*?["):
                self.patterns.append((re.compile(fnmatch.translate(key)), value))
            else:
                self.exact[str(key)] = value

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self.exact:
            return self.exact[name]
        for pattern, value in self.patterns:
            if pattern.match(name):
                return value
        return None


def lookup(
    routers: list[Router],
    name: str,
    args: Any,
    kwargs: Any,
    options: dict[str, Any],
    task: Any = None,
) -> Route:
    """The first route matching ``name`` as a dict ({'queue': ..., 'priority': ...}) or {}."""
    for router in routers:
        found = router(name, args, kwargs, options, task=task)
        if found:
            return {"queue": found} if isinstance(found, str) else dict(found)
    return {}
