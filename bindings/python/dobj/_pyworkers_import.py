"""The python_workers compatibility flag's import rules (used by project.py).

``_pyworkers`` holds ``workers``, ``pyodide.ffi``, ``asgi`` and ``js`` (an
error) for Python Workers code.  They are reachable from one project only:

- while ``main`` is imported, the folder is on ``sys.path`` (after the
  project's own folder) and any other module of those names is set aside;
  afterwards the folder leaves ``sys.path`` and the shims leave
  ``sys.modules`` (the ones set aside come back), so other code never sees
  them;
- ``main`` gets builtins of its own whose ``__import__`` answers those names
  from the project's copies, so an import inside a handler of ``main``
  (``from pyodide.ffi import to_js`` in a function) works later too, still
  without anything in ``sys.path`` or ``sys.modules``.
"""
from __future__ import annotations

import builtins
import contextlib
import importlib
import os
import sys
from typing import Any, Dict, Iterator

#: The compatibility flag that gives a project these modules.
FLAG = "python_workers"
FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pyworkers")
NAMES = ("workers", "pyodide", "js", "asgi")


def _ours(name: str) -> bool:
    return name.partition(".")[0] in NAMES


def _from_folder(module: Any) -> bool:
    where = getattr(module, "__file__", None) or getattr(getattr(module, "__spec__", None),
                                                        "origin", None)
    if not where:
        return False
    try:
        return os.path.commonpath([os.path.abspath(where), FOLDER]) == FOLDER
    except ValueError:
        return False


@contextlib.contextmanager
def on_path(cache: Dict[str, Any], index: int = 0) -> Iterator[None]:
    """The shims importable for the duration; those imported meanwhile are
    kept in ``cache`` (name -> module) and leave ``sys.modules``."""
    hidden = {n: sys.modules.pop(n) for n in list(sys.modules) if _ours(n)}
    sys.path.insert(index, FOLDER)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for i, p in enumerate(sys.path):
            if p is FOLDER:
                del sys.path[i]
                break
        for n in [n for n in sys.modules if _ours(n)]:
            m = sys.modules.pop(n)
            if _from_folder(m):
                cache[n] = m
        sys.modules.update(hidden)


def scoped_builtins(cache: Dict[str, Any]) -> Dict[str, Any]:
    """Builtins for ``main`` whose ``__import__`` serves the shims from
    ``cache`` (importing them, the same way as at load time, if needed)."""
    real = builtins.__import__

    def __import__(name: str, globals: Any = None, locals: Any = None,  # noqa: A001,A002
                   fromlist: Any = (), level: int = 0) -> Any:
        if level != 0 or not _ours(name):
            return real(name, globals, locals, fromlist, level)
        module = cache.get(name) if fromlist else cache.get(name.partition(".")[0])
        if module is not None and name in cache and \
                all(hasattr(module, f) for f in fromlist or () if f != "*"):
            return module
        with on_path(cache):
            return real(name, globals, locals, fromlist, level)

    scoped = dict(builtins.__dict__)
    scoped["__import__"] = __import__
    return scoped
