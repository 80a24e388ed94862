"""Importing by name: dotted paths, and finding the app behind ``-A`` as Celery does."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from dbqueue.exceptions import ImproperlyConfigured


def symbol_by_name(path: str) -> Any:
    """Import ``'pkg.mod:attr'`` or ``'pkg.mod.attr'`` and return the attribute."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImproperlyConfigured(f"{path!r} is not a dotted path to an object")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(f"cannot import {module_name!r} for {path!r}: {exc}") from exc
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ImproperlyConfigured(f"{module_name!r} has no attribute {attr!r}") from None
    return found


def find_app(spec: str) -> Any:
    """Resolve ``-A``: ``proj``, ``proj.app``, ``proj:app`` or ``proj.celery:app``.

    For a module, Celery's order is followed: its ``app`` attribute, then ``celery`` (attribute
    or submodule), then any DBQueue instance it holds.
    """
    from dbqueue.app import DBQueue

    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")
    if ":" in spec:
        found = symbol_by_name(spec)
        return _as_app(found, spec, DBQueue)
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name != spec or "." not in spec:
            raise ImproperlyConfigured(f"cannot import -A {spec!r}: {exc}") from exc
        return _as_app(symbol_by_name(spec), spec, DBQueue)
    except ImportError as exc:
        raise ImproperlyConfigured(f"cannot import -A {spec!r}: {exc}") from exc
    if isinstance(module, DBQueue):
        return module
    for name in ("app", "celery"):
        candidate = getattr(module, name, None)
        if isinstance(candidate, DBQueue):
            return candidate
    if hasattr(module, "__path__"):
        try:
            sub = importlib.import_module(f"{spec}.celery")
        except ModuleNotFoundError:
            sub = None
        found = _first_app(sub, DBQueue) if sub is not None else None
        if found is not None:
            return found
    found = _first_app(module, DBQueue)
    if found is None:
        raise ImproperlyConfigured(
            f"module {spec!r} holds no DBQueue app: name it `app` or pass -A {spec}:<name>"
        )
    return found


def _first_app(module: Any, cls: type) -> Any:
    for value in vars(module).values():
        if isinstance(value, cls):
            return value
    return None


def _as_app(found: Any, spec: str, cls: type) -> Any:
    if isinstance(found, cls):
        return found
    if callable(found):
        made = found()
        if isinstance(made, cls):
            return made
    raise ImproperlyConfigured(f"-A {spec!r} is {found!r}, not a DBQueue app")
