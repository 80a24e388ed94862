"""``task_routes``: map a task name to a queue (and priority), the way Celery's router does.

Routes may be a dict (exact names, globs such as ``'feed.*'``, compiled regexes), a router
function ``fn(name, args, kwargs, options, task=None, **kw)``, a dotted path to one, or a list
of any of these; the first match wins. Explicit ``apply_async`` options and task attributes
take precedence over routes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
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
        return _MapRouter(route)
    if callable(route):
        return route
    raise ImproperlyConfigured(f"cannot use {route!r} as a task route")


class _MapRouter:
    """Routes from a mapping: exact names first, then globs and regexes in order."""

    def __init__(self, mapping: Mapping[Any, Any]) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern[str], Any]] = []
        for key, value in mapping.items():
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
        try:
            found = router(name, args, kwargs, options, task=task)
        except TypeError:
            found = router(name, args, kwargs, options)
        if found:
            return {"queue": found} if isinstance(found, str) else dict(found)
    return {}
