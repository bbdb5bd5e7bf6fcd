"""Alarms: set/get/delete, the handler, retries, never early, persistence."""
import asyncio
import contextlib
import datetime as dt
import gc
import math
import sqlite3
import time

import pytest

import dobj
from storage_util import AlarmBox, Box, run


@pytest.fixture
def vrt():
    runtime = dobj.Runtime(virtual_time=True)
    AlarmBox.log = []
    AlarmBox.on_alarm = None
    yield runtime
    runtime.close()
    gc.collect()


async def test_advance_refuses_an_infinite_or_nan_time(vrt):
    # An alarm that always sets the next one: advance(inf) never ended.
    stub = vrt.bind("A", AlarmBox).get_by_name("a")
    AlarmBox.on_alarm = lambda self, info: self.ctx.storage.set_alarm(vrt.now() + 1000)
    await run(stub, lambda self: self.ctx.storage.set_alarm(vrt.now() + 1000))
    before = vrt.now()
    for bad in (math.inf, math.nan):
        with pytest.raises(dobj.Error, match="a delay must be a finite number"):
            vrt.advance(bad)
    assert vrt.now() == before
    vrt.advance(3.5)
    assert len(AlarmBox.log) == 3


async def test_alarm_fires_once_at_its_time_never_early(vrt):
    stub = vrt.bind("A", AlarmBox).get_by_name("a")
    seen = []
    AlarmBox.on_alarm = lambda self, info: seen.append((vrt.now(), self.ctx.storage.get_alarm()))
    when = vrt.now() + 5000
    await run(stub, lambda self: self.ctx.storage.set_alarm(when))
    assert await run(stub, lambda self: self.ctx.storage.get_alarm()) == when
    vrt.advance(4.999)
    assert AlarmBox.log == []
    vrt.advance(0.002)
    assert len(AlarmBox.log) == 1
    info = AlarmBox.log[0]
    assert (info.scheduled_time, info.retry_count, info.is_retry) == (when, 0, False)
    assert seen[0][0] >= when and seen[0][1] is None  # get_alarm() is None inside the handler
    vrt.advance(100)
    assert len(AlarmBox.log) == 1
    assert await run(stub, lambda self: self.ctx.storage.get_alarm()) is None


async def test_failing_alarm_is_retried_with_backoff_then_dropped(vrt, caplog):
    caplog.set_level("ERROR", logger="dobj")
    stub = vrt.bind("A", AlarmBox).get_by_name("retry")
    times = []

    def fail(self, info):
        times.append(vrt.now())
        raise RuntimeError("alarm failed")

    AlarmBox.on_alarm = fail
    start = vrt.now()
    await run(stub, lambda self: self.ctx.storage.set_alarm(start + 1000))
    await vrt.drain(timeout=5)
    assert [i.retry_count for i in AlarmBox.log] == [0, 1, 2, 3, 4, 5, 6]
    assert [i.is_retry for i in AlarmBox.log] == [False] + [True] * 6
    assert times[0] >= start + 1000
    gaps = [(b - a) / 1000 for a, b in zip(times, times[1:])]
    for gap, base in zip(gaps, [2, 4, 8, 16, 32, 64]):
        assert base <= gap <= base * 1.25 + 0.01, gaps
    vrt.advance(3600)
    assert len(AlarmBox.log) == 7
    # Each failed run is logged on the "dobj" logger (workerd logs each one).
    logged = [r.getMessage() for r in caplog.records if r.name == "dobj"]
    assert logged == [f"alarm() of AlarmBox {stub.id} (run {n} of 7) failed: alarm failed"
                      for n in range(1, 8)]


async def test_alarm_that_succeeds_on_retry_stops(vrt):
    stub = vrt.bind("A", AlarmBox).get_by_name("flaky")

    def flaky(self, info):
        if info.retry_count < 2:
            raise RuntimeError("not yet")

    AlarmBox.on_alarm = flaky
    await run(stub, lambda self: self.ctx.storage.set_alarm(vrt.now() + 10))
    await vrt.drain(timeout=5)
    assert [i.retry_count for i in AlarmBox.log] == [0, 1, 2]


async def test_handler_can_set_the_next_alarm(vrt):
    stub = vrt.bind("A", AlarmBox).get_by_name("again")

    def again(self, info):
        if len(AlarmBox.log) < 3:
            self.ctx.storage.set_alarm(info.scheduled_time + 1000)
            assert self.ctx.storage.get_alarm() == info.scheduled_time + 1000

    AlarmBox.on_alarm = again
    t0 = vrt.now() + 1000
    await run(stub, lambda self: self.ctx.storage.set_alarm(t0))
    await vrt.drain(timeout=5)
    assert [i.scheduled_time for i in AlarmBox.log] == [t0, t0 + 1000, t0 + 2000]


async def test_set_alarm_arguments(vrt):
    stub = vrt.bind("A", AlarmBox).get_by_name("args")

    def body(self):
        s = self.ctx.storage
        d = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
        s.set_alarm(d)
        got = s.get_alarm()
        with pytest.raises(ValueError, match=r"alarm time <= 0"):
            s.set_alarm(0)
        # Beyond int64 ns (2262): refused as workerd does (it was accepted,
        # reported by get_alarm, then dropped on restart).
        for late in (8.64e15, dt.datetime(2300, 1, 1, tzinfo=dt.timezone.utc)):
            with pytest.raises(ValueError, match="doesn't support dates after 2189"):
                s.set_alarm(late)
        for nonfinite in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(ValueError, match="not a valid Date"):
                s.set_alarm(nonfinite)
        assert s.get_alarm() == got
        with pytest.raises(TypeError, match="ms since the epoch or a datetime"):
            s.set_alarm("soon")
        with pytest.raises(TypeError):
            s.set_alarm(True)
        s.delete_alarm()
        return got, s.get_alarm()

    got, after = await run(stub, body)
    assert got == 4102444800000.0 and after is None


async def test_past_alarm_fires_as_soon_as_possible(vrt):
    stub = vrt.bind("A", AlarmBox).get_by_name("past")
    await run(stub, lambda self: self.ctx.storage.set_alarm(1000))
    # As workerd: the time is kept as given (not moved up to now), and a step
    # that runs before the handler has begun still reads it; the handler gets
    # it as scheduled_time, and once it succeeded the alarm is gone.
    assert await run(stub, lambda self: (len(AlarmBox.log), self.ctx.storage.get_alarm())) == \
        (0, 1000.0)
    vrt.advance(0)
    assert [(i.scheduled_time, i.retry_count) for i in AlarmBox.log] == [(1000.0, 0)]
    assert await run(stub, lambda self: self.ctx.storage.get_alarm()) is None


async def test_delete_alarm_cancels(vrt):
    stub = vrt.bind("A", AlarmBox).get_by_name("cancel")
    await run(stub, lambda self: self.ctx.storage.set_alarm(vrt.now() + 1000))
    await run(stub, lambda self: self.ctx.storage.delete_alarm())
    vrt.advance(10)
    assert AlarmBox.log == []


@pytest.mark.parametrize("change", ["delete", "move"])
async def test_alarm_changed_after_it_came_due_before_its_handler_began(vrt, change):
    # The alarm comes due while block_concurrency_while holds the gate; the
    # block then deletes or moves it.  workerd skips the queued handler (its
    # time changed); a moved alarm runs once, at its new time.
    stub = vrt.bind("A", AlarmBox).get_by_name("queued")
    held, go = asyncio.Event(), asyncio.Event()
    moved = []

    async def body(self):
        async def hold():
            self.ctx.storage.set_alarm(vrt.now() + 10)
            held.set()
            await go.wait()
            if change == "delete":
                self.ctx.storage.delete_alarm()
            else:
                moved.append(vrt.now() + 1000)
                self.ctx.storage.set_alarm(moved[0])
        await self.ctx.block_concurrency_while(hold)

    job = asyncio.ensure_future(run(stub, body))
    await held.wait()
    vrt.advance(0.05)  # due: its call waits behind the gate
    assert AlarmBox.log == []
    go.set()
    await job
    vrt.advance(10)
    assert [i.scheduled_time for i in AlarmBox.log] == moved


async def test_set_alarm_needs_an_alarm_handler(rt):
    stub = rt.bind("B", Box).get_by_name("no-handler")

    def body(self):
        with pytest.raises(ValueError) as info:
            self.ctx.storage.set_alarm(rt.now() + 1000)
        return str(info.value)

    assert await run(stub, body) == (
        "Your Durable Object class must have an alarm() handler in order to call setAlarm()")


async def test_alarms_fire_while_the_loop_runs(rt):
    AlarmBox.log = []
    AlarmBox.on_alarm = None
    fired = asyncio.get_running_loop().create_future()
    # The wall clock when the handler runs: never before the scheduled time.
    AlarmBox.on_alarm = lambda self, info: fired.done() or fired.set_result(rt.now())
    stub = rt.bind("A", AlarmBox).get_by_name("real")
    when = rt.now() + 30
    await run(stub, lambda self: self.ctx.storage.set_alarm(when))
    # Only the event loop runs the runtime meanwhile (no drain, no pump); the
    # timeout only keeps a broken runtime from hanging the suite.
    ran_at = await asyncio.wait_for(fired, 60)
    assert len(AlarmBox.log) == 1
    assert AlarmBox.log[0].scheduled_time == when
    assert ran_at >= when


async def test_alarms_persist_across_runtimes_and_due_ones_fire_at_start(tmp_path):
    AlarmBox.log = []
    AlarmBox.on_alarm = None
    # Virtual time starts at the wall clock and never moves here: rt1 cannot
    # fire "soon" however slowly it runs; only rt2 (real time) does.
    rt1 = dobj.Runtime(storage=str(tmp_path), virtual_time=True)
    ns = rt1.bind("A", AlarmBox, unique_key="alarm-key")
    now = rt1.now()
    await run(ns.get_by_name("soon"), lambda self: self.ctx.storage.set_alarm(now + 300))
    await run(ns.get_by_name("later"), lambda self: self.ctx.storage.set_alarm(now + 3_600_000))
    rt1.close()
    del ns, rt1
    gc.collect()
    assert AlarmBox.log == []
    assert (tmp_path / "alarm-key" / "metadata.sqlite").exists()
    await asyncio.sleep(max(0.0, (now + 300) / 1000 - time.time()) + 0.05)  # "soon" is overdue

    fired = asyncio.get_running_loop().create_future()
    AlarmBox.on_alarm = lambda self, info: fired.done() or fired.set_result(None)
    rt2 = dobj.Runtime(storage=str(tmp_path))
    ns2 = rt2.bind("A", AlarmBox, unique_key="alarm-key")
    await asyncio.wait_for(fired, 60)  # the loop runs: the overdue alarm fires
    # Times are stored as whole nanoseconds, finer than a double's ulp for any
    # date after 1970-04: a reloaded time is the very double that was set.
    assert len(AlarmBox.log) == 1
    assert AlarmBox.log[0].scheduled_time == now + 300
    assert await run(ns2.get_by_name("later"), lambda self: self.ctx.storage.get_alarm()) == \
        now + 3_600_000
    assert await run(ns2.get_by_name("soon"), lambda self: self.ctx.storage.get_alarm()) is None
    rt2.close()


def test_due_alarm_fires_when_a_runtime_made_outside_the_loop_is_drained(tmp_path):
    AlarmBox.log = []
    AlarmBox.on_alarm = None
    rt1 = dobj.Runtime(storage=str(tmp_path))
    stub = rt1.bind("A", AlarmBox).get_by_name("x")
    # Far enough ahead that rt1 (slow under the sanitizers) closes before it is
    # due; a fractional ms (now() is), which the stored int64 ns gives back
    # exactly (a store in ms * 1e6 floating point was off by up to 0.0003 ms).
    when = rt1.now() + 500.123456
    assert when != math.floor(when)

    async def setup():
        await run(stub, lambda self: self.ctx.storage.set_alarm(when))
    asyncio.run(setup())
    rt1.close()
    time.sleep(max(0.0, when / 1000 - time.time()) + 0.05)

    # Made outside any loop: nothing can arm a timer until a loop runs drain().
    rt2 = dobj.Runtime(storage=str(tmp_path))
    rt2.bind("A", AlarmBox)
    assert AlarmBox.log == []
    asyncio.run(rt2.drain(timeout=5))
    assert len(AlarmBox.log) == 1 and AlarmBox.log[0].scheduled_time == when
    rt2.close()


async def test_alarm_only_in_the_objects_record_fires_once_the_object_runs(tmp_path):
    # An older tool deleted the schedule's row (metadata.sqlite, _cf_ALARM)
    # and left the object's record (_cf_METADATA in its own file).  As in
    # workerd, the record is the truth: get_alarm reports it, so it must also
    # fire; the object's first storage use puts it back on the schedule.
    AlarmBox.log = []
    AlarmBox.on_alarm = None
    rt1 = dobj.Runtime(storage=str(tmp_path), virtual_time=True)
    when = rt1.now() + 60_000
    await run(rt1.bind("A", AlarmBox, unique_key="k").get_by_name("x"),
              lambda self: self.ctx.storage.set_alarm(when))
    rt1.close()
    del rt1
    gc.collect()
    meta = str(tmp_path / "k" / "metadata.sqlite")
    with contextlib.closing(sqlite3.connect(meta)) as db, db:
        db.execute("DELETE FROM _cf_ALARM")

    rt2 = dobj.Runtime(storage=str(tmp_path), virtual_time=True)
    stub = rt2.bind("A", AlarmBox, unique_key="k").get_by_name("x")
    assert await run(stub, lambda self: self.ctx.storage.get_alarm()) == when
    with contextlib.closing(sqlite3.connect(meta)) as db:
        (ns,), = db.execute("SELECT scheduled_time FROM _cf_ALARM").fetchall()
    assert ns // 1_000_000 == int(when)
    rt2.advance(61)
    assert [i.scheduled_time for i in AlarmBox.log] == [when]
    rt2.close()
