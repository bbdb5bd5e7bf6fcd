"""Helpers for the storage tests: run a function inside an object's handler.

    result = await run(stub, lambda self: self.ctx.storage.get("k"))

The function gets the instance; it may return an awaitable.  Its result (or
its exception) comes back to the test, after the event's writes committed.
"""
import inspect
import itertools
import math

import dobj

_jobs = {}
_results = {}
_seq = itertools.count()


class Box(dobj.DurableObject):
    """A class whose fetch runs the job the URL names; counts constructions."""

    constructed = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).constructed += 1

    async def fetch(self, request):
        fn = _jobs.pop(request.url)
        r = fn(self)
        if inspect.isawaitable(r):
            r = await r
        _results[request.url] = r
        return dobj.Response("ok")


class AlarmBox(Box):
    """Box with an alarm handler that logs and runs AlarmBox.on_alarm."""

    log = []
    on_alarm = None

    async def alarm(self, info):
        type(self).log.append(info)
        if type(self).on_alarm:
            r = type(self).on_alarm(self, info)
            if inspect.isawaitable(r):
                await r


async def run(stub, fn):
    url = f"https://job/{next(_seq)}"
    _jobs[url] = fn
    try:
        await stub.fetch(url)
    finally:
        _jobs.pop(url, None)
    return _results.pop(url)


def same(a, b, seen=None):
    """Deep equality that also checks types (int vs float, list vs tuple,
    bytes), -0.0, NaN, and that shared objects and cycles are shared alike."""
    if seen is None:
        seen = {}
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple, dict, set, frozenset)):
        if id(a) in seen:
            return seen[id(a)] is b
        seen[id(a)] = b
        if len(a) != len(b):
            return False
        if isinstance(a, (list, tuple)):
            return all(same(x, y, seen) for x, y in zip(a, b))
        if isinstance(a, dict):
            if list(a.keys()) != list(b.keys()) and set(a.keys()) != set(b.keys()):
                return False
            return all(k in b and same(v, b[k], seen) for k, v in a.items())
        return a == b
    if a != b:
        return False
    if hasattr(a, "tzinfo"):
        return a.tzinfo == b.tzinfo
    return True
