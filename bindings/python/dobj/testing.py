"""dobj.testing: helpers for testing Durable Objects (the pytest plugin's
fixtures use them; they work without pytest too).

The rules (which IDs are listed, when an object may be evicted, what reset
drops, the leak report) are the core's (``dobj/testkit.h``); this module
translates values and drives asyncio.

Sync or async: the helpers that must wait (``run_in_durable_object``,
``run_durable_object_alarm``, ``advance``, ``fetch``, ``run``) return an
awaitable when called with an event loop running (``await`` them in an async
test) and run to completion on the harness's own loop otherwise (call them
in a plain ``def`` test).  The others act at once in both.

Virtual time: a :class:`Harness` makes its runtime's virtual clock the
asyncio loop's clock (:class:`VirtualClock`): ``loop.time()`` reads it, and
when the loop would wait for a timer with nothing else to do, the clock
jumps to the next timer instead (the core's alarms and eviction, the loop's
``asyncio.sleep``, whichever comes first), so a test takes no wall-clock
time and everything fires in time order.  ``advance(seconds)`` moves it by
hand.  asyncio's own selector loops only: on another loop (uvloop) the
helpers work, but only the core's timers follow virtual time.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable, Dict, List, Optional

from . import _dobj
from ._dobj import Error, Runtime
from .project import ProjectRuntime

__all__ = [
    "Harness", "TestRuntime", "TestProjectRuntime", "VirtualClock", "LeakError",
    "run_in_durable_object", "run_durable_object_alarm", "list_durable_object_ids",
    "evict", "evict_all", "abort_all", "reset", "advance", "fetch", "run", "leaks",
    "current",
]

#: Base URL of ``fetch("/path")`` to a project's entry.
BASE_URL = "https://example.com"


class LeakError(Error, AssertionError):
    """What was still open (calls in flight, pending alarms) when a test's
    runtime was closed; the message is the core's report."""


class VirtualClock:
    """Makes asyncio loops follow a runtime's virtual clock (see the module
    documentation).  ``attach(loop)`` / ``detach(loop)``."""

    def __init__(self, rt: Runtime) -> None:
        if not rt.virtual_time:
            raise Error("VirtualClock needs a runtime made with virtual_time=True")
        self.rt = rt
        self._saved: Dict[int, Any] = {}

    def attached(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Does ``loop`` follow the virtual clock?  (False for loops other
        than asyncio's selector loops, such as uvloop's: there ``advance``
        moves the core's timers only.)"""
        return id(loop) in self._saved

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.attached(loop):
            return
        rt = self.rt
        clock = _dobj._tk_clock
        base = loop.time() - clock(rt)

        def time() -> float:
            # No jump at attach: the loop's timers keep their meaning.
            return base + clock(rt)

        selector = getattr(loop, "_selector", None)
        if not isinstance(loop, asyncio.BaseEventLoop) or selector is None:
            return  # not asyncio's own selector loop (uvloop...): core timers only
        loop.time = time  # type: ignore[method-assign]
        self._saved[id(loop)] = (loop, selector)
        loop._selector = _JumpingSelector(selector, loop, self)  # type: ignore[attr-defined]

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        saved = self._saved.pop(id(loop), None)
        if saved is None:
            return
        try:
            del loop.time
        except AttributeError:
            pass
        loop._selector = saved[1]  # type: ignore[attr-defined]

    def detach_all(self) -> None:
        for loop, _ in list(self._saved.values()):
            self.detach(loop)

    def jump(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Move the clock to the next timer (the loop's or the core's);
        False if there is none."""
        rt = self.rt
        delays = []
        scheduled = getattr(loop, "_scheduled", None)
        if scheduled:
            delays.append(scheduled[0].when() - loop.time())
        core = rt._next_timer()  # the core's own delay: no rounding through loop.time()
        if core is not None:
            delays.append(core)
        if not delays:
            return False
        try:
            Runtime.advance(rt, max(0.0, min(delays)))  # the core's, not the helper
        except Error:  # closed meanwhile: the loop waits as usual
            return False
        return True


    def nudge(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop's next timer is due (a zero wait) but asyncio will not
        run it: it runs a timer only once ``when < time() + resolution``,
        and far from the epoch (a test that advanced a billion seconds)
        the resolution is below the clock's own, so a jump that lands
        exactly on ``when`` left the loop spinning.  Move one step on."""
        scheduled = getattr(loop, "_scheduled", None)
        if not scheduled:
            return
        when = scheduled[0].when()
        if when < loop.time() + getattr(loop, "_clock_resolution", 0.0):
            return  # asyncio runs it in this turn
        try:
            Runtime.advance(self.rt, max(when - loop.time(), 1e-9))  # the core moves at least a step
        except Error:
            pass


class _JumpingSelector:
    """The loop's selector, except that a wait for a timer with nothing
    ready becomes a jump of the virtual clock.  A wait with no timer at all
    (real I/O only) still blocks."""

    def __init__(self, selector: Any, loop: asyncio.AbstractEventLoop, clock: VirtualClock) -> None:
        self._selector = selector
        self._loop = loop
        self._clock = clock

    def select(self, timeout: Optional[float] = None) -> List[Any]:
        if timeout is not None and timeout <= 0:
            events = self._selector.select(timeout)
            if not events and not self._loop._ready:  # type: ignore[attr-defined]
                self._clock.nudge(self._loop)
            return events
        events = self._selector.select(0)
        if events:
            return events
        if self._clock.jump(self._loop):
            return []
        return self._selector.select(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _settle(rt: Runtime) -> None:
    """Let the loop run what is ready (callbacks woken by the last timers,
    handlers they resume) before the test looks."""
    loop = asyncio.get_running_loop()
    for _ in range(100000):
        rt._pump()
        if not getattr(loop, "_ready", None):
            return
        await asyncio.sleep(0)


class Harness:
    """A runtime made for one test: virtual time on, its own storage folder
    (or in memory), an asyncio loop for plain ``def`` tests, and a close that
    reports what leaked.  ``make_runtime(cls, **options)`` builds the runtime
    (``cls`` is :class:`TestRuntime` or :class:`TestProjectRuntime`)."""

    def __init__(self, make_runtime: Callable[..., Runtime]) -> None:
        self.rt = make_runtime()
        self.rt._harness = self
        self.clock = VirtualClock(self.rt)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop plain ``def`` tests run on (made on first use)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self.clock.attach(self._loop)
        return self._loop

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run an awaitable to completion on the harness's loop (plain
        ``def`` tests)."""
        __tracebackhide__ = True
        if _running_loop() is not None:
            raise Error("run() is for plain def tests; in an async test, await the call")

        async def main() -> Any:
            return await awaitable

        return self.loop.run_until_complete(main())

    def _maybe_run(self, coro: Any) -> Any:
        __tracebackhide__ = True
        loop = _running_loop()
        if loop is None:
            return self.loop.run_until_complete(coro)
        self.clock.attach(loop)  # a loop the plugin did not see start (a fixture's)
        return coro

    def leaks(self) -> Optional[str]:
        """The core's report of what is open (None when nothing is)."""
        if self.closed:
            return None
        if _running_loop() is None and self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(_settle(self.rt))
        else:
            self.rt._pump()
        return _dobj._tk_leaks(self.rt)

    def close(self, check: bool = True) -> None:
        """Close the runtime (and the loop); with ``check``, raise
        :class:`LeakError` if calls or alarms were still open."""
        if self.closed:
            return
        report = None
        try:
            if check:
                report = self.leaks()
        finally:
            self.closed = True
            global _current
            if _current is self:
                _current = None
            try:
                self.rt.close()
            finally:
                self.clock.detach_all()
                if self._loop is not None:
                    loop, self._loop = self._loop, None
                    try:
                        loop.run_until_complete(loop.shutdown_asyncgens())
                    finally:
                        loop.close()
        if report:
            raise LeakError(report + "\n(finish them, or delete the alarms, before the test "
                            "ends; reset() drops everything)")

    def __enter__(self) -> "Harness":
        global _current
        _current = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(check=exc[0] is None)


class _Helpers:
    """The helpers as methods of a test runtime (the fixtures' values)."""

    __slots__ = ()

    def run_in_durable_object(self, stub: Any, fn: Callable[[Any, Any], Any]) -> Any:
        __tracebackhide__ = True
        return _harness_of(self)._maybe_run(_run_in(stub, fn))

    def run_durable_object_alarm(self, stub: Any) -> Any:
        __tracebackhide__ = True
        return _harness_of(self)._maybe_run(_run_alarm(stub))

    def list_durable_object_ids(self, namespace: Any) -> List[Any]:
        return _dobj._tk_list_ids(namespace)

    def evict(self, stub: Any) -> bool:
        return _dobj._tk_evict(stub)

    def evict_all(self) -> int:
        return _dobj._tk_evict_all(self)

    def abort_all(self, reason: Any = None) -> int:
        return _dobj._tk_abort_all(self, reason)

    def reset(self) -> None:
        _dobj._tk_reset(self)

    def advance(self, seconds: float) -> Any:
        __tracebackhide__ = True
        h = _harness_of(self)
        return h._maybe_run(_advance(h, seconds))

    def run(self, awaitable: Awaitable[Any]) -> Any:
        __tracebackhide__ = True
        return _harness_of(self).run(awaitable)

    def leaks(self) -> Optional[str]:
        return _harness_of(self).leaks()


class TestRuntime(_Helpers, Runtime):
    """The ``dobj_runtime`` fixture's value: a :class:`dobj.Runtime` with the
    helpers as methods."""

    __test__ = False  # not a test class for pytest
    __slots__ = ("_harness",)

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        raise Error("fetch() needs a project (the dobj_project fixture); "
                    "use stub.fetch() for an object")


class TestProjectRuntime(_Helpers, ProjectRuntime):
    """The ``dobj_project`` fixture's value: a :class:`dobj.ProjectRuntime`
    (``env``, ``default``, ``config``) with the helpers as methods."""

    __test__ = False
    __slots__ = ("_harness",)

    def fetch(self, path_or_url: Any, *, method: Optional[str] = None, headers: Any = None,
              body: Any = None) -> Any:
        """Send a request to the project's entry without a server; a path
        (``"/x"``) is joined to :data:`BASE_URL`."""
        __tracebackhide__ = True
        return _harness_of(self)._maybe_run(
            _fetch(self, path_or_url, method=method, headers=headers, body=body))


def _harness_of(rt: Any) -> Harness:
    h = getattr(rt, "_harness", None)
    if h is None or h.closed:
        raise Error("this runtime has no test harness (or it was closed)")
    return h


async def _run_in(stub: Any, fn: Callable[[Any, Any], Any]) -> Any:
    __tracebackhide__ = True
    return await _dobj._tk_run_in(stub, fn)


async def _run_alarm(stub: Any) -> bool:
    __tracebackhide__ = True
    call = _dobj._tk_run_alarm(stub)
    if call is None:
        return False
    await call
    return True


async def _advance(h: Harness, seconds: float) -> None:
    __tracebackhide__ = True
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise ValueError(f"advance() needs a number of seconds >= 0, got {seconds!r}")
    loop = asyncio.get_running_loop()
    rt = h.rt
    if h.clock.attached(loop) and math.isfinite(seconds):
        # The loop jumps from timer to timer (core and asyncio alike, in
        # time order) until this sleep ends at now + seconds.
        await asyncio.sleep(seconds)
    else:
        Runtime.advance(rt, seconds)  # the core refuses infinities and NaN (dobj.Error)
    await _settle(rt)


async def _fetch(rt: Any, path_or_url: Any, **kwargs: Any) -> Any:
    __tracebackhide__ = True
    if isinstance(path_or_url, str) and path_or_url.startswith("/"):
        path_or_url = BASE_URL + path_or_url
    return await rt.default.fetch(path_or_url, **kwargs)


# ----------------------------------------------------- module-level helpers

_current: Optional[Harness] = None


def current() -> Harness:
    """The harness of the running test (the plugin's fixtures set it)."""
    if _current is None or _current.closed:
        raise Error("no dobj test runtime: use the dobj_runtime or dobj_project fixture "
                    "(or a dobj.testing.Harness)")
    return _current


def run_in_durable_object(stub: Any, fn: Callable[[Any, Any], Any]) -> Any:
    """Run ``fn(instance, ctx)`` inside the object, in its input gate (after
    the events queued before it, before those after), and return its result
    (awaited if it is awaitable).  Its exception propagates with the
    object's ID (``durable_object_id``)."""
    __tracebackhide__ = True
    loop = _running_loop()
    if loop is not None:
        if _current is not None and not _current.closed:
            _current.clock.attach(loop)
        return _run_in(stub, fn)
    return current().loop.run_until_complete(_run_in(stub, fn))


def run_durable_object_alarm(stub: Any) -> Any:
    """Run the object's alarm now, whatever its time: True if one ran, False
    if none was scheduled.  A failing handler raises here, and is retried on
    the usual schedule (2, 4, 8... s of virtual time)."""
    __tracebackhide__ = True
    loop = _running_loop()
    if loop is not None:
        return _run_alarm(stub)
    return current().loop.run_until_complete(_run_alarm(stub))


def list_durable_object_ids(namespace: Any) -> List[Any]:
    """IDs of the namespace that have storage or are live, sorted."""
    return _dobj._tk_list_ids(namespace)


def evict(stub: Any) -> bool:
    """Evict the object as idle eviction does (data and alarm stay; the
    next call constructs a new instance).  False if it was not live;
    ``dobj.Error`` if an event is in flight on it."""
    return _dobj._tk_evict(stub)


def evict_all(rt: Optional[Runtime] = None) -> int:
    """Evict every live object (``dobj.Error`` and nothing evicted if one is busy)."""
    return _dobj._tk_evict_all(rt if rt is not None else current().rt)


def abort_all(reason: Any = None, rt: Optional[Runtime] = None) -> int:
    """Abort every live object as ``ctx.abort(reason)`` does: calls in
    flight fail, stubs break, data stays."""
    return _dobj._tk_abort_all(rt if rt is not None else current().rt, reason)


def reset(rt: Optional[Runtime] = None) -> None:
    """Drop every object, its storage and its alarms (busy objects are
    aborted, idle ones evicted: stubs keep working on fresh, empty objects)."""
    _dobj._tk_reset(rt if rt is not None else current().rt)


def advance(seconds: float) -> Any:
    """Move virtual time by ``seconds``: alarms (and their retries), idle
    eviction and ``asyncio.sleep`` inside objects fire in time order."""
    __tracebackhide__ = True
    return _Helpers.advance(current().rt, seconds)


def fetch(path_or_url: Any, **kwargs: Any) -> Any:
    """Send a request to the project's entry (the ``dobj_project`` fixture)."""
    __tracebackhide__ = True
    rt = current().rt
    if not isinstance(rt, TestProjectRuntime):
        raise Error("fetch() needs a project (the dobj_project fixture)")
    return rt.fetch(path_or_url, **kwargs)


def run(awaitable: Awaitable[Any]) -> Any:
    """Run an awaitable on the test's loop (plain ``def`` tests)."""
    __tracebackhide__ = True
    return current().run(awaitable)


def leaks() -> Optional[str]:
    """What is still open in the test's runtime (None if nothing)."""
    return current().leaks()

