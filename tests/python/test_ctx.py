"""ctx: block_concurrency_while, abort, wait_until."""
import asyncio

import pytest

import dobj


async def test_block_in_constructor_holds_the_first_event(rt):
    log = []

    class Loader(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            self.value = None
            ctx.block_concurrency_while(self.load)

        async def load(self):
            log.append("load-start")
            await asyncio.sleep(0.005)
            self.value = 42
            log.append("load-end")

        def fetch(self, request):
            log.append("fetch")
            return dobj.Response(str(self.value))

    stub = rt.bind("LOADER", Loader).get_by_name("l")
    out = await asyncio.gather(stub.fetch("https://l/"), stub.fetch("https://l/"))
    assert [r.text() for r in out] == ["42", "42"]
    assert log == ["load-start", "load-end", "fetch", "fetch"]


async def test_block_in_handler_returns_fn_result_and_keeps_others_out(rt):
    log = []

    class Gate(dobj.DurableObject):
        async def fetch(self, request):
            tag = request.url.rsplit("/", 1)[1]
            if tag == "block":
                async def critical():
                    log.append("block-start")
                    await asyncio.sleep(0.005)
                    log.append("block-end")
                    return "result"
                got = await self.ctx.block_concurrency_while(critical)
                log.append("after-" + got)
            else:
                log.append(tag)
            return dobj.Response(tag)

    stub = rt.bind("GATE", Gate).get_by_name("g")
    first = asyncio.ensure_future(stub.fetch("https://g/block"))
    await asyncio.sleep(0)
    await asyncio.gather(first, stub.fetch("https://g/other"))
    # Nothing ran during the block; the waiter continued before the held event.
    assert log == ["block-start", "block-end", "after-result", "other"]


async def test_block_with_a_plain_function(rt):
    class Plain(dobj.DurableObject):
        async def fetch(self, request):
            return dobj.Response(str(await self.ctx.block_concurrency_while(lambda: 7)))

    assert (await rt.bind("P", Plain).get_by_name("p").fetch("https://p/")).text() == "7"


async def test_failed_block_resets_the_object(rt):
    made = []

    class Flaky(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            made.append(self)
            self.n = 0

        async def fetch(self, request):
            self.n += 1
            if request.url.endswith("/fail"):
                async def bad():
                    raise RuntimeError("load failed")
                await self.ctx.block_concurrency_while(bad)
            return dobj.Response(str(self.n))

    ns = rt.bind("FLAKY", Flaky)
    stub = ns.get_by_name("f")
    assert (await stub.fetch("https://f/")).text() == "1"
    with pytest.raises(RuntimeError, match="load failed"):
        await stub.fetch("https://f/fail")
    with pytest.raises(RuntimeError, match="load failed"):  # the stub is broken
        await stub.fetch("https://f/")
    assert (await ns.get_by_name("f").fetch("https://f/")).text() == "1"  # fresh instance
    assert len(made) == 2


async def test_abort_fails_the_call_breaks_the_stub_and_resets(rt):
    made = []

    class Abortable(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            made.append(self)
            self.n = 0

        async def fetch(self, request):
            self.n += 1
            if request.url.endswith("/sleep"):
                await asyncio.sleep(0.01)
            if request.url.endswith("/abort"):
                self.ctx.abort("going away")
                raise AssertionError("not reached")
            return dobj.Response(str(self.n))

    ns = rt.bind("AB", Abortable)
    stub = ns.get_by_name("a")
    assert (await stub.fetch("https://a/")).text() == "1"
    sleeping = asyncio.ensure_future(stub.fetch("https://a/sleep"))
    await asyncio.sleep(0)
    with pytest.raises(dobj.Error, match="^going away$") as info:
        await stub.fetch("https://a/abort")
    assert info.value.remote is True
    with pytest.raises(dobj.Error, match="going away"):
        await sleeping  # the call in progress fails too
    with pytest.raises(dobj.Error, match="going away"):
        await stub.fetch("https://a/")
    fresh = ns.get(stub.id)
    assert (await fresh.fetch("https://a/")).text() == "1"
    assert len(made) == 2
    with pytest.raises(dobj.Error, match="reset"):
        made[0].ctx.abort()  # an old ctx is finished


async def test_abort_with_an_exception_keeps_its_type(rt):
    class Custom(Exception):
        pass

    class A(dobj.DurableObject):
        def fetch(self, request):
            self.ctx.abort(Custom("bye"))

    with pytest.raises(Custom, match="bye"):
        await rt.bind("A", A).get_by_name("a").fetch("https://a/")


async def test_wait_until_keeps_background_work(rt):
    done = asyncio.Event()
    log = []

    class Bg(dobj.DurableObject):
        def fetch(self, request):
            async def later():
                await asyncio.sleep(0.005)
                log.append("background done")
                done.set()
            self.ctx.wait_until(later())
            return dobj.Response("replied")

    r = await rt.bind("BG", Bg).get_by_name("b").fetch("https://b/")
    assert r.text() == "replied" and log == []
    await asyncio.wait_for(done.wait(), 2)
    assert log == ["background done"]
    with pytest.raises(TypeError):
        class Bad(dobj.DurableObject):
            def fetch(self, request):
                self.ctx.wait_until(42)
        await rt.bind("BAD", Bad).get_by_name("x").fetch("https://x/")
