"""Test-written Python modules (task modules for workers), importable in-process and by workers."""

from __future__ import annotations

import importlib
import shutil
import sys
import textwrap
from pathlib import Path


def write_module_file(directory: Path, name: str, source: str) -> Path:
    """Write dedented ``source`` as module ``name`` under ``directory``; return the file.

    A dotted name (``proj.tasks``) creates the package directories with ``__init__.py``.
    """
    *packages, leaf = name.split(".")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for package in packages:
        folder = folder / package
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").touch()
    path = folder / f"{leaf}.py"
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    importlib.invalidate_caches()
    return path


class ModuleWriter:
    """Writes modules and makes them importable in this process until :meth:`cleanup`.

    Call it as ``write_module(tmp_path, "proj_tasks", source)``; it returns the module name, which
    is also what a worker's ``-A`` takes when the worker runs with ``cwd=tmp_path``.
    """

    def __init__(self) -> None:
        self.directories: list[Path] = []

    def __call__(self, directory: Path, name: str, source: str) -> str:
        """Write the module, put ``directory`` on sys.path, forget any stale import of it."""
        directory = Path(directory).resolve()
        write_module_file(directory, name, source)
        if directory not in self.directories:
            self.directories.append(directory)
            sys.path.insert(0, str(directory))
        self._forget_modules()
        return name

    def cleanup(self) -> None:
        """Remove the directories from sys.path and their modules from sys.modules."""
        self._forget_modules()
        for directory in self.directories:
            while str(directory) in sys.path:
                sys.path.remove(str(directory))
        self.directories.clear()
        importlib.invalidate_caches()

    def _forget_modules(self) -> None:
        """Drop imported modules whose file lives in one of our directories."""
        for name, module in list(sys.modules.items()):
            location = getattr(module, "__file__", None)
            if location and any(Path(location).is_relative_to(d) for d in self.directories):
                del sys.modules[name]
