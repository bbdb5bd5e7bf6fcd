"""ctx: block_concurrency_while, abort, wait_until."""
import asyncio
import gc
import sys
import warnings

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


async def test_failed_block_in_constructor_resets_and_a_new_stub_retries(rt):
    attempts = []

    class Loader(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            attempts.append(self)
            ctx.block_concurrency_while(self.load)  # not awaited: the gate closes at once

        async def load(self):
            await asyncio.sleep(0)
            if len(attempts) == 1:
                raise OSError("disk on fire")

        def fetch(self, request):
            return dobj.Response(f"attempt {len(attempts)}")

    ns = rt.bind("LOADER", Loader)
    stub = ns.get_by_name("l")
    first = [stub.fetch("https://l/") for _ in range(3)]  # all wait behind the block
    for call in first:
        with pytest.raises(OSError, match="disk on fire") as info:
            await call
        assert info.value.remote is True
        assert info.value.durable_object_id == str(ns.id_from_name("l"))
    assert (await ns.get_by_name("l").fetch("https://l/")).text() == "attempt 2"


async def test_nothing_interleaves_while_a_block_awaits(rt):
    log = []

    class Guarded(dobj.DurableObject):
        async def fetch(self, request):
            tag = request.url.rsplit("/", 1)[1]
            if tag == "a":
                async def critical():
                    log.append("a-start")
                    for _ in range(3):
                        await asyncio.sleep(0.001)  # suspends, yet nothing else is delivered
                    log.append("a-end")
                    return "done"
                result = await self.ctx.block_concurrency_while(critical)
                log.append(f"a-{result}")
            else:
                log.append(tag)
            return dobj.Response(tag)

    stub = rt.bind("GUARDED", Guarded).get_by_name("g")
    await asyncio.gather(stub.fetch("https://g/a"), stub.fetch("https://g/b"), stub.fetch("https://g/c"))
    assert log == ["a-start", "a-end", "a-done", "b", "c"]


async def test_abort_in_constructor_fails_the_first_call(rt):
    made = []

    class Refuser(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            made.append(self)
            if len(made) == 1:
                ctx.abort("not today")

        def fetch(self, request):
            return dobj.Response("ok")

    ns = rt.bind("REFUSER", Refuser)
    with pytest.raises(dobj.Error, match="not today"):
        await ns.get_by_name("r").fetch("https://r/")
    assert (await ns.get_by_name("r").fetch("https://r/")).text() == "ok"


async def test_ctx_and_env_given_to_the_constructor(rt):
    seen = {}

    class Probe(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            seen.update(ctx=ctx, env=env, id=ctx.id)

        def fetch(self, request):
            assert self.ctx is seen["ctx"] and self.env is seen["env"]
            return dobj.Response("ok")

    ns = rt.bind("PROBE", Probe)
    stub = ns.get_by_name("p")
    await stub.fetch("https://p/")
    assert seen["env"] is rt.env  # the very env of the runtime
    assert seen["id"] == stub.id and seen["id"].name == "p"
    unique = ns.new_unique_id()
    await ns.get(unique).fetch("https://p/")
    assert seen["id"] == unique and seen["id"].name is None


async def test_wait_until_errors_are_logged_and_do_not_break_the_object(rt, caplog):
    class Background(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            self.n = 0

        async def fetch(self, request):
            async def fail():
                await asyncio.sleep(0)
                raise RuntimeError("background failure")
            self.ctx.wait_until(fail())
            self.n += 1
            return dobj.Response(str(self.n))

    stub = rt.bind("BACKGROUND", Background).get_by_name("b")
    with caplog.at_level("ERROR", logger="dobj"):
        assert (await stub.fetch("https://b/")).text() == "1"
        await rt.drain(timeout=5)
    # Reported once on the "dobj" logger, with the exception and its traceback.
    [record] = [r for r in caplog.records if r.name == "dobj"]
    assert record.levelname == "ERROR"
    assert record.getMessage() == (
        f"ctx.wait_until() of Background {stub.id} failed: background failure")
    assert isinstance(record.exc_info[1], RuntimeError)
    assert record.exc_info[2] is not None
    assert (await stub.fetch("https://b/")).text() == "2"


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("end", ["abort", "close"])
async def test_wait_until_work_that_never_started_is_closed_not_left_unawaited(end):
    """A wait_until coroutine whose task never ran (the object reset at once,
    or the runtime closed first) is closed: none of its code runs and Python
    does not warn "coroutine ... was never awaited" (the stress test saw it)."""
    ran = []

    async def later():
        ran.append("later")

    class Background(dobj.DurableObject):
        def fetch(self, request):
            self.ctx.wait_until(later())
            if end == "abort":
                self.ctx.abort("reset before the work started")
            return dobj.Response("replied")

    rt = dobj.Runtime()
    stub = rt.bind("BACKGROUND", Background).get_by_name("b")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if end == "abort":
            with pytest.raises(dobj.Error, match="reset before the work started"):
                await stub.fetch("https://b/")
        else:
            # Closed from inside the handler: the background task is queued
            # behind it and never runs.
            class Closer(dobj.DurableObject):
                def fetch(self, request):
                    self.ctx.wait_until(later())
                    rt.close()
                    return dobj.Response("closed")

            with pytest.raises(dobj.Error):
                await rt.bind("CLOSER", Closer).get_by_name("c").fetch("https://c/")
        rt.close()
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert ran == []


async def test_abort_from_outside_a_handler_while_callers_wait(rt):
    """ctx.abort() called from plain asyncio code (no handler running) fails the
    calls waiting on the object, including calls made by other objects, whose
    handlers' finally blocks may call stubs again (ASan found a use-after-free
    here: the core's abort loop must not run Python code)."""
    log = []
    ctxs = {}

    class Target(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            ctxs[ctx.id.name] = ctx

        async def fetch(self, request):
            if request.url.endswith("/wait"):
                try:
                    await asyncio.get_running_loop().create_future()
                finally:
                    log.append(self.env.TARGET.get_by_name("other").fetch("https://t/quick").done)
            return dobj.Response("quick")

    class Caller(dobj.DurableObject):
        async def fetch(self, request):
            return await self.env.TARGET.get_by_name("t").fetch("https://t/wait")

    rt.bind("TARGET", Target)
    callers = rt.bind("CALLER", Caller)
    for _ in range(3):
        calls = [callers.get_by_name(f"c{i}").fetch("https://c/") for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(KeyError):
            ctxs["t"].abort(KeyError("stop"))
        for call in calls:
            with pytest.raises(KeyError, match="stop"):
                await asyncio.wait_for(call, 2)
    gc.collect()
    assert log and all(log)  # the finally blocks ran and their calls completed


async def test_abort_from_outside_wakes_the_objects_waiting_on_it(rt):
    """A awaits a call to B; plain asyncio code aborts B through its ctx: A must
    be resumed (with B's abort error) without anything else pumping the runtime."""
    ctxs = {}

    class B(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            ctxs["b"] = ctx

        async def fetch(self, request):
            await asyncio.get_running_loop().create_future()  # never resolves

    class A(dobj.DurableObject):
        async def fetch(self, request):
            try:
                await self.env.B.get_by_name("b").fetch("https://b/")
            except KeyError as e:
                return dobj.Response(f"A saw {e.args[0]}")
            return dobj.Response("not aborted?")

    rt.bind("B", B)
    call = rt.bind("A", A).get_by_name("a").fetch("https://a/")
    await asyncio.sleep(0.005)
    assert not call.done
    with pytest.raises(KeyError):
        ctxs["b"].abort(KeyError("stop"))
    assert (await asyncio.wait_for(call, 2)).text() == "A saw stop"


async def test_abort_cannot_be_caught_by_the_handler(rt):
    """Cloudflare: the abort cannot be caught. `except Exception` lets dobj.Aborted
    through; a handler that catches it anyway cannot answer its caller."""
    log = []

    class A(dobj.DurableObject):
        async def fetch(self, request):
            try:
                self.ctx.abort("bye")
            except Exception:  # noqa: BLE001  (what a handler typically writes)
                log.append("caught by except Exception")
                return dobj.Response("caught")

        async def stubborn(self):
            try:
                self.ctx.abort(KeyError("k"))
            except BaseException as e:  # noqa: BLE001
                log.append(type(e).__name__)
                assert isinstance(e.__cause__, KeyError)
            log.append("after")
            await asyncio.sleep(0)
            log.append("after an await")  # never: the coroutine is closed
            return "ignored"

    ns = rt.bind("A", A)
    with pytest.raises(dobj.Error, match="^bye$") as info:
        await ns.get_by_name("x").fetch("https://a/")
    assert info.value.remote is True
    with pytest.raises(KeyError):
        await ns.get_by_name("y").stubborn()
    await asyncio.sleep(0.01)
    assert log == ["Aborted", "after"]


async def test_remote_is_false_when_the_runtime_closes_under_a_call(rt):
    """The core's rule (dobj_task_remote): what fails a delivered call is remote,
    except the caller's runtime closing under it."""
    started = asyncio.Event()

    class Slow(dobj.DurableObject):
        async def fetch(self, request):
            started.set()
            await asyncio.get_running_loop().create_future()  # never done

    stub = rt.bind("SLOW", Slow).get_by_name("s")
    call = asyncio.ensure_future(stub.fetch("https://s/"))
    await started.wait()
    rt.close()
    with pytest.raises(dobj.Error, match="^the runtime is closed$") as info:
        await call
    assert info.value.remote is False
