"""The host contract attacked as a hostile user would: the owner-thread rule
at every entry point, and the runtime's own calls made from places they
cannot work from.  Each case crashed, hung or quietly did the wrong thing."""
import asyncio
import threading

import pytest

import dobj


class Keeps(dobj.DurableObject):
    """Hands its ctx and storage out, as a user might through a global."""
    kept = {}

    async def fetch(self, request):
        Keeps.kept["ctx"] = self.ctx
        Keeps.kept["storage"] = self.ctx.storage
        self.ctx.storage.put("k", 1)
        return dobj.Response("ok")

    async def alarm(self, info):
        pass


def in_another_thread(*fns):
    """Run each fn on another thread; what each raised (None if nothing)."""
    out = []

    def run():
        for fn in fns:
            try:
                fn()
                out.append(None)
            except BaseException as exc:  # noqa: BLE001  (returned)
                out.append(exc)

    th = threading.Thread(target=run)
    th.start()
    th.join(10)
    assert not th.is_alive()
    return out


def is_thread_error(exc):
    return isinstance(exc, dobj.Error) and "thread that created it" in str(exc)


async def test_storage_and_ctx_are_refused_from_another_thread(rt):
    # They used to run: another thread wrote the object's SQLite database and
    # aborted the object under the owner's loop.
    ns = rt.bind("K", Keeps)
    stub = ns.get_by_name("a")
    await stub.fetch("https://k/")
    st, ctx = Keeps.kept.pop("storage"), Keeps.kept.pop("ctx")
    caught = in_another_thread(
        lambda: st.get("k"),
        lambda: st.put("k", 2),
        lambda: st.delete("k"),
        lambda: st.list(),
        lambda: st.delete_all(),
        lambda: st.sql.exec("SELECT 1"),
        lambda: st.get_alarm(),
        lambda: st.set_alarm(rt.now() + 60_000),
        lambda: st.delete_alarm(),
        lambda: st.transaction_sync(lambda txn: None),
        lambda: ctx.abort("from another thread"),
        lambda: ctx.block_concurrency_while(lambda: None),
    )
    assert all(is_thread_error(e) for e in caught), caught
    # Nothing happened to the object: same instance, same data.
    assert st.get("k") == 1
    assert (await stub.fetch("https://k/")).text() == "ok"


async def test_close_and_drain_are_refused_from_another_thread(rt):
    # close() from another thread completed the owner loop's futures there.
    ns = rt.bind("K", Keeps)
    stub = ns.get_by_name("a")
    caught = in_another_thread(rt.close, lambda: asyncio.run(rt.drain()))
    assert all(is_thread_error(e) for e in caught), caught
    assert (await stub.fetch("https://k/")).text() == "ok"


async def test_drain_from_inside_a_handler_raises_instead_of_waiting_for_itself(rt):
    class Drains(dobj.DurableObject):
        async def fetch(self, request):
            await rt.drain()  # waits until no call is left: this one included
            return dobj.Response("never")

    ns = rt.bind("D", Drains)
    with pytest.raises(dobj.Error, match="drain.. cannot be awaited from inside a handler"):
        await asyncio.wait_for(ns.get_by_name("a").fetch("https://d/"), 5)



class RollsBack(dobj.DurableObject):
    """Sets its alarm, then deletes or moves it in a transaction that rolls
    back."""
    fired = []

    async def fetch(self, request):
        st = self.ctx.storage
        what, at = request.url.rsplit("/", 2)[1:]
        if what == "set":
            st.set_alarm(float(at))
        else:
            def change(txn):
                if what == "move":
                    txn.set_alarm(float(at))
                else:
                    txn.delete_alarm()
                raise ValueError("roll back")

            with pytest.raises(ValueError):
                st.transaction_sync(change)
        return dobj.Response(repr(st.get_alarm()))

    async def alarm(self, info):
        RollsBack.fired.append(info.scheduled_time)


@pytest.mark.parametrize("change", ["delete", "move"])
@pytest.mark.parametrize("restart", [False, True])
async def test_an_alarm_change_rolled_back_leaves_the_alarm_scheduled(tmp_path, change, restart):
    # delete_alarm took the alarm off the schedule at once; the rollback
    # brought the object's record back, so get_alarm reported an alarm that
    # never fired, in this runtime or after a restart.
    RollsBack.fired = []
    rt = dobj.Runtime(storage=str(tmp_path), virtual_time=True)
    stub = rt.bind("R", RollsBack).get_by_name("r")
    when = float(int(rt.now()) + 1000)
    assert (await stub.fetch(f"https://r/set/{when}")).text() == repr(when)
    assert (await stub.fetch(f"https://r/{change}/{when + 60_000}")).text() == repr(when)
    if restart:
        rt.close()
        rt = dobj.Runtime(storage=str(tmp_path), virtual_time=True)
        rt.bind("R", RollsBack)
    rt.advance(120)
    assert RollsBack.fired == [when]
    rt.close()


class Crosses(dobj.DurableObject):
    """Each object's block_concurrency_while calls the other object."""

    async def fetch(self, request):
        other = "b" if request.url.endswith("/a") else "a"

        async def section():
            await asyncio.sleep(0)  # both sections hold their gates first
            res = await self.env.X.get_by_name(other).fetch(f"https://x/plain/{other}")
            return res.text()

        if "/plain/" in request.url:
            return dobj.Response("plain")
        return dobj.Response(await self.ctx.block_concurrency_while(section))


async def test_two_blocks_calling_each_other_are_a_deadlock_not_a_hang(rt):
    # a's block waits for a call parked at b's gate, whose block waits for a
    # call parked at a's gate: nothing could ever run again (the 30 s limit
    # was the only way out).
    ns = rt.bind("X", Crosses)
    results = await asyncio.wait_for(asyncio.gather(
        ns.get_by_name("a").fetch("https://x/a"), ns.get_by_name("b").fetch("https://x/b"),
        return_exceptions=True), 5)
    assert [type(r) for r in results] == [dobj.Error, dobj.Error]
    assert all(str(r).startswith("deadlock:") for r in results)
    # Both objects serve later calls.
    assert (await ns.get_by_name("a").fetch("https://x/plain/a")).text() == "plain"
    assert (await ns.get_by_name("b").fetch("https://x/plain/b")).text() == "plain"


class Ticks(dobj.DurableObject):
    """An alarm that always sets the next one."""

    async def fetch(self, request):
        self.ctx.storage.set_alarm(self.env.RT[0].now() + 1000)
        return dobj.Response("armed")

    async def alarm(self, info):
        self.ctx.storage.set_alarm(info.scheduled_time + 1000)


async def test_drain_with_virtual_time_and_a_periodic_alarm_times_out():
    # drain() jumped from alarm to alarm without ever returning to the loop
    # or looking at its timeout: the program hung at 100 % CPU.
    holder = []
    rt = dobj.Runtime(env={"RT": holder}, virtual_time=True)
    holder.append(rt)
    await rt.bind("T", Ticks).get_by_name("t").fetch("https://t/")
    other_ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(other_ran.set)
    with pytest.raises(TimeoutError, match="still pending"):
        await rt.drain(timeout=0.2)
    assert other_ran.is_set()  # the loop ran meanwhile
    rt.close()
