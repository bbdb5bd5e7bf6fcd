"""The dobj pytest plugin (entry point ``pytest11``: active when dobj is
installed; ``-p no:dobj`` turns it off).  See docs/testing.md.

Fixtures: ``dobj_runtime`` (a fresh :class:`dobj.testing.TestRuntime` per
test), ``dobj_project`` (the project of the nearest wrangler config, or
``--dobj-config``, with ``--dobj-env``), ``dobj_env`` (the project's env).
Each test gets its own storage folder (or memory), virtual time, and a leak
check when it ends.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Iterator, Optional

import pytest

from . import testing

CONFIG_NAMES = ("wrangler.json", "wrangler.jsonc", "wrangler.toml")


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("dobj", "dobj (Durable Objects)")
    group.addoption("--dobj-config", default=None, metavar="PATH",
                    help="wrangler config (or its folder) of dobj_project; default: the "
                         "nearest one above the test file")
    group.addoption("--dobj-env", default=None, metavar="NAME",
                    help="wrangler environment of dobj_project (as wrangler --env)")
    group.addoption("--dobj-storage", default=None, choices=("disk", "memory"),
                    help="dobj_runtime's storage: a temporary folder per test (disk, the "
                         "default) or memory")
    parser.addini("dobj_storage", "dobj_runtime's storage: disk (default) or memory",
                  default="disk")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "dobj(storage='disk'|'memory', env=None, id_seed=None, idle_timeout=None, "
        "leak_check=True, config=None, wrangler_env=None): options of the dobj fixtures "
        "for one test")


def _options(request: Any) -> dict:
    marker = request.node.get_closest_marker("dobj")
    opts = dict(marker.kwargs) if marker else {}
    unknown = set(opts) - {"storage", "env", "id_seed", "idle_timeout", "leak_check",
                           "config", "wrangler_env"}
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.dobj: unknown option(s) {sorted(unknown)}")
    return opts


def _storage_mode(request: Any, opts: dict) -> str:
    mode = (opts.get("storage") or request.config.getoption("dobj_storage")
            or request.config.getini("dobj_storage") or "disk")
    if mode not in ("disk", "memory"):
        raise pytest.UsageError(f"dobj storage must be 'disk' or 'memory', got {mode!r}")
    return mode


def _finish(request: Any, harness: testing.Harness, opts: dict) -> None:
    """Close the harness; report leaks unless the test itself failed (its
    own failure is the one to read) or the test opted out."""
    call = getattr(request.node, "_dobj_call_report", None)
    failed = call is not None and call.failed
    check = opts.get("leak_check", True) and not failed
    try:
        harness.close(check=check)
    except testing.LeakError as e:
        pytest.fail(f"dobj: {e}", pytrace=False)


@pytest.fixture
def dobj_runtime(request: Any, tmp_path_factory: Any) -> Iterator[testing.TestRuntime]:
    """A fresh runtime per test: virtual time, its own temporary storage
    folder (or memory), closed after the test with a leak check."""
    opts = _options(request)
    storage = None
    if _storage_mode(request, opts) == "disk":
        storage = str(tmp_path_factory.mktemp("dobj-storage"))
    kwargs: dict = {"storage": storage, "virtual_time": True}
    for name in ("env", "id_seed", "idle_timeout"):
        if opts.get(name) is not None:
            kwargs[name] = opts[name]
    env = kwargs.pop("env", None)
    harness = testing.Harness(lambda: testing.TestRuntime(env, **kwargs))
    with _entered(harness):
        yield harness.rt  # type: ignore[misc]
        _finish(request, harness, opts)


def _nearest_config(start: str) -> Optional[str]:
    folder = os.path.abspath(start)
    while True:
        for name in CONFIG_NAMES:
            if os.path.isfile(os.path.join(folder, name)):
                return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


@pytest.fixture
def dobj_project(request: Any, tmp_path_factory: Any) -> Iterator[testing.TestProjectRuntime]:
    """The project of the nearest wrangler config (``--dobj-config``,
    ``--dobj-env``), with ``env``, ``default`` and ``fetch``; its state in a
    temporary folder per test, virtual time, a leak check at the end."""
    opts = _options(request)
    path = opts.get("config") or request.config.getoption("dobj_config")
    if path is None:
        path = _nearest_config(os.path.dirname(str(request.node.path)))
        if path is None:
            path = _nearest_config(os.getcwd())
        if path is None:
            raise pytest.UsageError(
                f"dobj_project: no {'/'.join(CONFIG_NAMES)} above {request.node.path} "
                "(give --dobj-config PATH)")
    elif not os.path.isabs(path):
        path = os.path.join(str(request.config.rootpath), path)
    env = opts.get("wrangler_env") or request.config.getoption("dobj_env")
    persist = str(tmp_path_factory.mktemp("dobj-state"))
    kwargs: dict = {"virtual_time": True}
    for name in ("id_seed", "idle_timeout"):
        if opts.get(name) is not None:
            kwargs[name] = opts[name]
    harness = testing.Harness(lambda: testing.TestProjectRuntime.from_config(
        path, env=env, persist_to=persist, **kwargs))
    with _entered(harness):
        yield harness.rt  # type: ignore[misc]
        _finish(request, harness, opts)


@pytest.fixture
def dobj_env(dobj_project: testing.TestProjectRuntime) -> Any:
    """The project's env: its Durable Object namespaces and vars."""
    return dobj_project.env


class _entered:
    """Make the harness current for the test; close it whatever happens
    (without a leak check after an error), so nothing carries over."""

    def __init__(self, harness: testing.Harness) -> None:
        self.harness = harness

    def __enter__(self) -> testing.Harness:
        return self.harness.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if not self.harness.closed:
            self.harness.close(check=False)


_FIXTURES = ("dobj_runtime", "dobj_project", "dobj_env")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: Any) -> Iterator[None]:
    """An async test runs with the test runtime's virtual clock on its loop:
    the test function is wrapped so that it attaches the clock once the
    loop (pytest-asyncio's or anyio's) runs it."""
    fn = getattr(item, "obj", None)
    uses = any(name in getattr(item, "fixturenames", ()) for name in _FIXTURES)
    if uses and fn is not None and inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def with_virtual_clock(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            h = testing._current
            if h is not None and not h.closed:
                import asyncio
                h.clock.attach(asyncio.get_running_loop())
            return await fn(*args, **kwargs)

        item.obj = with_virtual_clock
        try:
            yield
        finally:
            item.obj = fn
    else:
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item._dobj_call_report = rep
    if rep.failed and call.excinfo is not None:
        where = _object_of(call.excinfo.value)
        if where:
            rep.sections.append(("dobj", where))


def _object_of(exc: Optional[BaseException]) -> Optional[str]:
    """"raised in Durable Object <id>" for an error that came from an
    object (its traceback above shows the object's frames)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        oid = getattr(exc, "durable_object_id", None)
        if oid:
            kind = "raised in" if getattr(exc, "remote", False) else "on the way to"
            return f"{type(exc).__name__} {kind} Durable Object {oid}"
        exc = exc.__cause__ or exc.__context__
    return None
