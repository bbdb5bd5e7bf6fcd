"""How handlers are driven from asyncio: the fast path, giving way to the loop,
cancellation, and errors that reach many callers."""
import asyncio

import pytest

import dobj


class Echo(dobj.DurableObject):
    def fetch(self, request):
        return dobj.Response(request.url)


async def test_synchronous_handler_is_done_before_await(rt):
    stub = rt.bind("ECHO", Echo).get_by_name("e")
    call = stub.fetch("https://e/now")
    assert call.done  # the handler already ran: awaiting never touches the loop
    assert (await call).text() == "https://e/now"


async def test_polling_handler_gives_way_to_the_loop(rt):
    """A handler that polls with asyncio.sleep(0) for work only the event loop
    can finish must not spin inside the runtime for ever."""

    class Poller(dobj.DurableObject):
        async def fetch(self, request):
            task = asyncio.get_running_loop().create_task(asyncio.sleep(0.005, "slept"))
            while not task.done():
                await asyncio.sleep(0)
            return dobj.Response(task.result())

    stub = rt.bind("POLLER", Poller).get_by_name("p")
    resp = await asyncio.wait_for(stub.fetch("https://p/"), 5)
    assert resp.text() == "slept"


async def test_caller_cancellation_leaves_the_object_usable(rt):
    started, finished = asyncio.Event(), asyncio.Event()

    class Slow(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            self.finished = 0

        async def fetch(self, request):
            if request.url.endswith("/slow"):
                started.set()
                await asyncio.sleep(0.05)
                self.finished += 1
                finished.set()
            return dobj.Response(str(self.finished))

    stub = rt.bind("SLOW", Slow).get_by_name("s")
    task = asyncio.ensure_future(stub.fetch("https://s/slow"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(finished.wait(), 60)  # the handler itself was not cancelled: it finishes
    assert (await stub.fetch("https://s/")).text() == "1"


async def test_error_reaching_many_callers_keeps_its_traceback_short(rt):
    class Aborter(dobj.DurableObject):
        async def fetch(self, request):
            self.ctx.abort(KeyError("gone"))

    stub = rt.bind("ABORTER", Aborter).get_by_name("a")
    errors = []
    for _ in range(50):
        with pytest.raises(KeyError) as info:
            await stub.fetch("https://a/")
        errors.append(info.value)
    # One abort error, delivered to every caller as itself (same type, message, attributes).
    assert all(type(e) is KeyError and e.args == ("gone",) and e.remote for e in errors)

    def depth(tb):
        n = 0
        while tb:
            n, tb = n + 1, tb.tb_next
        return n

    assert depth(errors[-1].__traceback__) < 10  # not one frame per earlier call


async def test_handler_can_await_asyncio_tasks_and_gather(rt):
    class Fan(dobj.DurableObject):
        async def fetch(self, request):
            loop = asyncio.get_running_loop()
            a = loop.create_task(asyncio.sleep(0.001, 1))
            b, c = await asyncio.gather(asyncio.sleep(0, 2), asyncio.sleep(0.002, 3))
            return dobj.Response(str(await a + b + c))

    assert (await rt.bind("FAN", Fan).get_by_name("f").fetch("https://f/")).text() == "6"


async def test_gather_of_calls_to_many_objects(rt):
    class Named(dobj.DurableObject):
        async def fetch(self, request):
            await asyncio.sleep(0)
            return dobj.Response(self.ctx.id.name)

    ns = rt.bind("NAMED", Named)
    names = [f"n{i}" for i in range(50)]
    results = await asyncio.gather(*(ns.get_by_name(n).fetch("https://n/") for n in names))
    assert [r.text() for r in results] == names
    assert rt.live_objects("NAMED") == 50  # one instance per name


def test_calls_work_without_an_event_loop_when_handlers_do_not_suspend():
    rt = dobj.Runtime()
    stub = rt.bind("ECHO", Echo).get_by_name("e")
    call = stub.fetch("https://e/sync")
    assert call.done
    # Drive the awaitable by hand: no loop is needed when the result is ready.
    with pytest.raises(StopIteration) as info:
        call.__await__().send(None)
    assert info.value.value.text() == "https://e/sync"
    rt.close()
