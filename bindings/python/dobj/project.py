"""dobj.Runtime.from_config: run a Workers project (config + entry module).

The config is read by the core (:func:`dobj.load_config`): which file, which
environment, each namespace's unique key and state folder are its rules.
This module only does what is Python's own business: importing ``main`` as a
module, finding the classes in it, and wrapping its entry so that
``await rt.default.fetch(request)`` works for both entry styles of Python
Workers (``class Default(WorkerEntrypoint)`` or a module-level
``async def fetch(request, env, ctx)``).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import itertools
import logging
import os
import sys
import weakref
from typing import Any, Optional

from . import _pyworkers_import
from ._dobj import ConfigError, Error, Runtime
from .config import Config, PathLike, _load

__all__ = ["WorkerEntrypoint", "ExecutionContext", "Entry", "ProjectRuntime"]

_log = logging.getLogger("dobj")
_CLUSTER_KWARGS = ("cluster", "node_addr", "cluster_ttl", "cluster_grace", "cluster_timeout",
                   "cluster_call_timeout", "cluster_snapshot_bytes", "cluster_snapshot_part_bytes")
_module_numbers = itertools.count(1)



class WorkerEntrypoint:
    """Base class of a Worker's ``class Default(WorkerEntrypoint)``: keeps
    ``self.ctx`` (the request's :class:`ExecutionContext`) and ``self.env``.
    A new instance serves each request, as in workerd."""

    def __init__(self, ctx: "ExecutionContext", env: Any) -> None:
        self.ctx = ctx
        self.env = env


class ExecutionContext:
    """The ``ctx`` of one request to the entry: ``wait_until(awaitable)``
    keeps background work running after the response.  The work is the
    core's background work without an object (``dobj/background.h``): a
    failure is logged on the ``dobj`` logger (as workerd logs an uncaught
    rejection), never raised; ``rt.drain()`` and ``rt.drain_background()``
    wait for it."""

    __slots__ = ("_rt",)

    def __init__(self, rt: "weakref.ReferenceType[Any]") -> None:
        self._rt = rt

    def wait_until(self, awaitable: Any) -> None:
        rt = self._rt()
        if rt is None:
            raise Error("the runtime is closed")
        rt._wait_until(awaitable)


class Entry:
    """``rt.default``: the Worker's entry.  ``await entry.fetch(request)``
    calls ``Default(ctx, env).fetch(request)`` or ``fetch(request, env, ctx)``
    with a new ctx per request."""

    __slots__ = ("_cls", "_fn", "_env", "_rt", "name")

    def __init__(self, cls: Optional[type], fn: Any, env: Any,
                 rt: "weakref.ReferenceType[Any]", name: str) -> None:
        self._cls = cls
        self._fn = fn
        self._env = env
        self._rt = rt
        self.name = name

    async def fetch(self, url_or_request: Any, *, method: Optional[str] = None,
                    headers: Any = None, body: Any = None) -> Any:
        from . import _make_request
        return await self._serve(_make_request(url_or_request, method=method, headers=headers,
                                               body=body))

    async def _serve(self, request: Any) -> Any:
        """fetch() for a new :class:`dobj.Request` of the caller's own (the
        ASGI adapter's), which is handed over as it is, without a copy."""
        from . import Response
        ctx = ExecutionContext(self._rt)
        if self._cls is not None:
            handler = getattr(self._cls(ctx, self._env), "fetch", None)
            if handler is None:
                raise Error("Handler does not export a fetch() function.")
            result = handler(request)
        elif self._fn is not None:
            result = self._fn(request, self._env, ctx)
        else:
            raise Error("Handler does not export a fetch() function.")
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Response):
            raise TypeError(f"{self.name}.fetch() returned {type(result).__name__}; "
                            "it must return a dobj.Response")
        return result

    def __repr__(self) -> str:
        return f"<dobj.Entry {self.name}>"


class ProjectRuntime(Runtime):
    """The runtime :meth:`Runtime.from_config` returns: a :class:`Runtime`
    with ``config`` (the :class:`dobj.Config`), ``module`` (the imported
    ``main``) and ``default`` (the :class:`Entry`)."""

    __slots__ = ("config", "module", "default")


def _inside(path: Optional[str], folder: str) -> bool:
    if not path:
        return False
    try:
        return os.path.commonpath([os.path.abspath(path), folder]) == folder
    except ValueError:
        return False


def _import_main(cfg: Config) -> Any:
    """Import ``cfg.main`` under a name of its own (``_dobj_main_<n>_<stem>``),
    with its folder first on ``sys.path`` while it runs (so ``import helper``
    finds ``src/helper.py``, as in Python Workers).  Afterwards the folder is
    taken off ``sys.path`` again, and the module and every module imported
    from that folder are taken out of ``sys.modules``: two projects with a
    ``helper.py`` each never see each other's.  With the ``python_workers``
    compatibility flag, Python Workers' modules are there for this project
    only (see :mod:`dobj._pyworkers_import`)."""
    where = cfg.config_path
    if cfg.main is None:
        raise ConfigError(f"{where}: main is not set: it names the Worker's entry module "
                          "(e.g. main = \"src/entry.py\")")
    main = cfg.main
    if not main.endswith(".py"):
        raise ConfigError(f"{where}: main {main} is not a Python module (.py)")
    if not os.path.isfile(main):
        raise ConfigError(f"{where}: main {main} does not exist")
    folder = os.path.dirname(main)
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in os.path.basename(main)[:-3])
    name = f"_dobj_main_{next(_module_numbers)}_{stem}"
    spec = importlib.util.spec_from_file_location(name, main)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: main {main} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    # Python Workers code (the python_workers flag): `workers`, `pyodide.ffi`,
    # `asgi` and `js` (an error) for this project only (_pyworkers_import).
    shims = contextlib.nullcontext()
    if _pyworkers_import.FLAG in cfg.compatibility_flags:
        cache: dict = {}
        module.__dict__["__builtins__"] = _pyworkers_import.scoped_builtins(cache)
        shims = _pyworkers_import.on_path(cache, index=1)
    before = set(sys.modules)
    sys.path.insert(0, folder)
    importlib.invalidate_caches()
    sys.modules[name] = module
    try:
        with shims:
            spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(f"{where}: main {main} failed to import: "
                          f"{type(exc).__name__}: {exc}") from exc
    finally:
        for i, p in enumerate(sys.path):
            if p is folder:
                del sys.path[i]
                break
        for n in set(sys.modules) - before:
            m = sys.modules.get(n)
            spec_n = getattr(m, "__spec__", None)
            if n == name or _inside(getattr(m, "__file__", None), folder) or \
                    _inside(getattr(spec_n, "origin", None), folder):
                sys.modules.pop(n, None)
    return module


def _entry(cfg: Config, module: Any, env: Any, background: "weakref.ReferenceType[Any]") -> Entry:
    where = f"{cfg.config_path}: main {cfg.main}"
    default = getattr(module, "Default", None)
    if default is not None:
        if not inspect.isclass(default):
            raise ConfigError(f"{where}: Default must be a class (class Default(WorkerEntrypoint)), "
                              f"got {type(default).__name__}")
        return Entry(default, None, env, background, "Default")
    fn = getattr(module, "fetch", None)
    if _pyworkers_import.FLAG in cfg.compatibility_flags:
        from . import workers
        if fn is workers.fetch:  # `from workers import fetch` (outbound HTTP)
            fn = None
        on_fetch = getattr(module, "on_fetch", None)
        if fn is None and callable(on_fetch):  # Python Workers' handler style
            return Entry(None, workers._entry_function(on_fetch), env, background, "on_fetch")
        if callable(fn):  # it sees the same names as on_fetch would
            return Entry(None, workers._entry_function(fn), env, background, "fetch")
    if fn is not None and not callable(fn):
        raise ConfigError(f"{where}: fetch must be a function (async def fetch(request, env, ctx)), "
                          f"got {type(fn).__name__}")
    return Entry(None, fn, env, background, "fetch")


def from_config(cls: type, path: Optional[PathLike] = None, *, env: Optional[str] = None,
                persist_to: Optional[PathLike] = None, **runtime_options: Any) -> ProjectRuntime:
    """Load a Workers project: see :meth:`dobj.Runtime.from_config`."""
    if "storage" in runtime_options:
        raise TypeError("from_config() keeps state where the config says (use persist_to=)")
    # Cluster settings given here win over the environment's and the
    # config's (the core resolves them: dobj_config.cluster).
    given = tuple(runtime_options.pop(k, None) for k in _CLUSTER_KWARGS)
    cfg = _load(path, env, persist_to, True, given if any(v is not None for v in given) else None)
    if cfg.cluster is not None:
        c = cfg.cluster
        runtime_options.update(cluster=c.url, node_addr=c.node_addr, cluster_ttl=c.ttl,
                               cluster_grace=c.grace, cluster_timeout=c.timeout,
                               cluster_call_timeout=c.call_timeout,
                               cluster_snapshot_bytes=c.snapshot_bytes,
                               cluster_snapshot_part_bytes=c.snapshot_part_bytes)
    for warning in cfg.warnings:
        _log.warning("%s", warning)
    module = _import_main(cfg)
    classes = []
    for b in cfg.bindings:
        found = getattr(module, b.class_name, None)
        if found is None:
            raise ConfigError(f"{cfg.config_path}: durable_objects binding {b.binding}: "
                              f"class {b.class_name} is not defined in main {cfg.main}")
        if not inspect.isclass(found):
            raise ConfigError(f"{cfg.config_path}: durable_objects binding {b.binding}: "
                              f"{b.class_name} in main {cfg.main} is a "
                              f"{type(found).__name__}, not a class")
        classes.append((b, found))
    target = cls if cls is not Runtime else ProjectRuntime
    rt = target(dict(cfg.vars), storage=cfg.state_dir, **runtime_options)
    try:
        for b, found in classes:
            rt.bind(b.binding, found, unique_key=b.unique_key, id_key=b.id_key)
        rt.config = cfg
        rt.module = module
        rt.default = _entry(cfg, module, rt.env, weakref.ref(rt))
    except BaseException:
        rt.close()
        raise
    return rt
