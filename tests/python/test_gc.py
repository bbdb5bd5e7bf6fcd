"""Runtimes, objects and stubs are collected, cycles included."""
import asyncio
import gc
import weakref

import dobj


class Holder(dobj.DurableObject):
    alive = weakref.WeakSet()

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).alive.add(self)
        self.me = env.HOLDER.get(ctx.id)  # instance -> stub -> namespace -> runtime -> instance

    async def fetch(self, request):
        return dobj.Response("ok")


def make_cycle():
    rt = dobj.Runtime(env={"big": bytearray(1 << 20)})
    ns = rt.bind("HOLDER", Holder)

    async def go():
        stub = ns.get_by_name("h")
        assert (await stub.fetch("https://h/")).text() == "ok"
        return stub

    asyncio.run(go())
    return weakref.ref(rt)


def test_runtime_cycles_are_collected():
    Holder.alive = weakref.WeakSet()
    rt_ref = make_cycle()
    gc.collect()
    assert rt_ref() is None
    assert len(Holder.alive) == 0


def test_many_runtimes_do_not_leak():
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(50):
        make_cycle()
    gc.collect()
    after = len(gc.get_objects())
    assert after - before < 500


def test_pending_call_on_a_dropped_runtime_fails_cleanly():
    class Never(dobj.DurableObject):
        async def fetch(self, request):
            await asyncio.get_running_loop().create_future()  # never resolves

    async def go():
        rt = dobj.Runtime()
        call = rt.bind("N", Never).get_by_name("n").fetch("https://n/")
        rt.close()
        try:
            await call
        except dobj.Error as e:
            return str(e)

    assert asyncio.run(go()) == "the runtime is closed"
