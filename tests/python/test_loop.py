"""How a loop drives a runtime: the fd asyncio watches, Runtime.fileno() for
other loops, drain(); and the rules that came with the host contract: one
owner thread, several handlers awaiting one call, a block_concurrency_while
that calls its own object, and the 30 s limit of a block."""
import asyncio
import os
import selectors
import threading

import pytest

import dobj


class Clock(dobj.DurableObject):
    log = []
    event = None

    async def fetch(self, request):
        self.ctx.storage.set_alarm(float(request.url.rsplit("/", 1)[1]))
        return dobj.Response("set")

    def alarm(self, info):
        Clock.log.append(info.scheduled_time)
        if Clock.event is not None:
            Clock.event.set()


async def test_alarm_fires_through_the_fd_while_the_loop_waits(rt):
    # Nothing pumps meanwhile: only the loop watching the runtime's fd runs it.
    Clock.log, Clock.event = [], asyncio.Event()
    stub = rt.bind("CLOCK", Clock).get_by_name("a")
    await stub.fetch(f"https://c/{rt.now() + 30}")
    await asyncio.wait_for(Clock.event.wait(), 5)
    assert len(Clock.log) == 1 and Clock.log[0] <= rt.now()


def test_fileno_drives_a_runtime_from_a_selector(tmp_path):
    # No asyncio at all: a selector on rt.fileno(), rt.process() when readable.
    Clock.log, Clock.event = [], None
    rt = dobj.Runtime()
    stub = rt.bind("CLOCK", Clock).get_by_name("s")
    call = stub.fetch(f"https://c/{rt.now() + 30}")
    assert call.done and call.result().text() == "set"
    sel = selectors.DefaultSelector()
    sel.register(rt.fileno(), selectors.EVENT_READ)
    waits = 0
    while not Clock.log:
        assert sel.select(timeout=5), "the fd never became readable"
        waits += 1
        rt.process()
    assert waits >= 1 and rt.pending == 0
    sel.close()
    rt.close()


async def test_drain_jumps_the_clock_only_once_no_call_waits_for_the_loop():
    vrt = dobj.Runtime(virtual_time=True)
    order = []
    release = asyncio.Event()

    class Slow(dobj.DurableObject):
        async def fetch(self, request):
            self.ctx.storage.set_alarm(vrt.now() + 3_600_000)
            await release.wait()
            order.append("call done")
            return dobj.Response("ok")

        def alarm(self, info):
            order.append("alarm")

    stub = vrt.bind("SLOW", Slow).get_by_name("x")
    call = asyncio.ensure_future(stub.fetch("https://s/"))
    asyncio.get_running_loop().call_later(0.05, release.set)
    await vrt.drain(timeout=5)
    # The call waited for the loop (a task waiting on the host): drain did not
    # jump an hour ahead meanwhile; only timers were left afterwards.
    assert order == ["call done", "alarm"]
    assert (await call).text() == "ok"
    vrt.close()


async def test_two_handlers_awaiting_one_call_both_wake(rt):
    shared = {}
    release = asyncio.Event()

    class Slow(dobj.DurableObject):
        async def fetch(self, request):
            await release.wait()
            return dobj.Response("slow answer")

    class Caller(dobj.DurableObject):
        async def fetch(self, request):
            if "first" in request.url:
                shared["call"] = self.env.SLOW.get_by_name("s").fetch("https://s/")
            return dobj.Response((await shared["call"]).text())

    rt.bind("SLOW", Slow)
    callers = rt.bind("CALLER", Caller)
    first = asyncio.ensure_future(callers.get_by_name("a").fetch("https://c/first"))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(callers.get_by_name("b").fetch("https://c/second"))
    await asyncio.sleep(0)
    release.set()
    out = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [r.text() for r in out] == ["slow answer", "slow answer"]


async def test_block_concurrency_while_calling_its_own_object_fails_instead_of_hanging(rt):
    class Selfish(dobj.DurableObject):
        async def fetch(self, request):
            if request.url.endswith("/count"):
                return dobj.Response("counted")
            me = self.env.SELFISH.get(self.ctx.id)

            async def section():
                return (await me.fetch("https://s/count")).text()
            return dobj.Response(await self.ctx.block_concurrency_while(section))

    ns = rt.bind("SELFISH", Selfish)
    # The call inside the section fails at once; the failed section resets
    # the object (as any failing block does), and the caller hears why.
    with pytest.raises(dobj.Error, match="^deadlock: this call waits for the object's "
                       "block_concurrency_while, which waits for this call$"):
        await asyncio.wait_for(ns.get_by_name("s").fetch("https://s/self"), 5)
    # Later callers are not stuck behind the gate.
    assert (await asyncio.wait_for(ns.get_by_name("s").fetch("https://s/count"), 5)).text() == "counted"


async def test_block_concurrency_while_longer_than_30s_resets_the_object():
    vrt = dobj.Runtime(virtual_time=True)
    never = asyncio.get_running_loop().create_future()

    class Stuck(dobj.DurableObject):
        async def fetch(self, request):
            if request.url.endswith("/stuck"):
                await self.ctx.block_concurrency_while(lambda: never)
            return dobj.Response("fine")

    ns = vrt.bind("STUCK", Stuck)
    call = ns.get_by_name("s").fetch("https://s/stuck")
    vrt.advance(29.999)
    assert not call.done
    vrt.advance(0.001)
    with pytest.raises(dobj.Error, match=r"^A call to blockConcurrencyWhile\(\) in a Durable Object "
                       r"waited for too long\. The call was canceled and the Durable Object was reset\.$"):
        await call
    assert (await ns.get_by_name("s").fetch("https://s/ok")).text() == "fine"
    vrt.close()


def test_a_runtime_is_refused_from_another_thread(rt, counter):
    stub = counter.get_by_name("t")
    caught = []

    def other():
        try:
            asyncio.run(stub.fetch("https://t/"))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            caught.append(exc)
        try:
            rt.bind("OTHER", dobj.DurableObject)
        except BaseException as exc:  # noqa: BLE001
            caught.append(exc)

    th = threading.Thread(target=other)
    th.start()
    th.join(10)
    assert not th.is_alive()
    assert [type(e) for e in caught] == [dobj.Error, dobj.Error]
    assert all("thread that created it" in str(e) for e in caught)
    # The owning thread goes on as before.
    assert asyncio.run(stub.fetch("https://t/")).text() == "0"


def test_drain_after_a_timed_out_drain_in_another_loop():
    # A drain() that timed out leaves its wait behind; a drain() in the next
    # asyncio.run must wait on a future of its own loop.
    kept = {}

    class Waits(dobj.DurableObject):
        async def fetch(self, request):
            if request.url.endswith("/stuck"):
                kept["ctx"] = self.ctx
                await asyncio.get_running_loop().create_future()  # never set
            await asyncio.sleep(0.02)
            return dobj.Response("ok")

    rt = dobj.Runtime()
    ns = rt.bind("W", Waits)

    async def first():
        ns.get_by_name("a").fetch("https://w/stuck")
        with pytest.raises(TimeoutError):
            await rt.drain(timeout=0.05)

    async def second():
        with pytest.raises(dobj.Error):  # abort() raises to its caller
            kept.pop("ctx").abort()      # the stuck call of the closed loop fails
        call = ns.get_by_name("b").fetch("https://w/b")
        await rt.drain(timeout=5)
        assert call.result().text() == "ok"

    asyncio.run(first())
    asyncio.run(second())
    rt.close()


async def test_closing_a_watched_runtime_closes_its_fd():
    rt = dobj.Runtime()
    stub = rt.bind("CLOCK", Clock).get_by_name("z")
    await stub.fetch(f"https://c/{rt.now() + 3_600_000}")  # the loop watches the fd now
    fd = rt.fileno()
    rt.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(dobj.Error):
        rt.fileno()
    await asyncio.sleep(0)  # the loop goes on without it
