"""Nothing leaks when runtimes, namespaces, stubs, calls, tasks, storage,
SQL cursors and WebSockets are made, used and dropped over and over, with
and without cycles through user objects: after a warm-up, the dobj objects
alive, the memory Python allocated (tracemalloc) and the process's resident
memory (what the core allocates) stay flat."""
import asyncio
import gc
import os
import sys
import tracemalloc
import weakref

import pytest

import dobj

UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _live():
    """How many objects of each dobj type are alive.  Every instance of a
    heap type holds a reference to its type, so the type's reference count
    counts its instances, without walking the collector's lists."""
    return {name: sys.getrefcount(t) for name, t in vars(dobj).items()
            if isinstance(t, type) and t.__module__ == "dobj" and not issubclass(t, BaseException)}


class Box:
    """A user object to build cycles with."""


def cycle(*held):
    box = Box()
    box.held, box.me = held, box
    return box


async def _flat(rounds_of, n):
    """Run `await rounds_of(n)` twice for a warm-up, then three times with
    the process's size measured, then once more and three times under
    tracemalloc (whose own tables would count in the first).  A leak of a few bytes per round
    could not stay under the bounds.  Each run ends with a collection, so
    that cycles left for the collector do not raise the high-water mark."""
    async def run():
        await rounds_of(n)
        gc.collect()

    for _ in range(2):
        await run()
    live, rss = _live(), _rss_kb()
    for _ in range(3):
        await run()
    rss_grown = _rss_kb() - rss
    tracemalloc.start()
    try:
        await run()  # what asyncio and the interpreter cache, allocated while traced
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            await run()
        py_grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    grown = {k: v - live[k] for k, v in _live().items() if v != live[k]}
    assert grown == {}, f"dobj objects still alive: {grown}"
    assert py_grown < 64 * 1024, f"Python memory grew by {py_grown} bytes over {3 * n} rounds"
    if not UNDER_ASAN:  # freed memory stays in ASan's quarantine
        assert rss_grown < 512, f"the process grew by {rss_grown} KiB over {3 * n} rounds"


alive = weakref.WeakSet()


class Thing(dobj.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        alive.add(self)
        self.me = self  # instance -> instance, and below instance -> stub -> runtime
        self.stub = env.THING.get(ctx.id)

    async def fetch(self, request):
        if request.url.endswith("/ws"):
            client, server = dobj.WebSocketPair()
            self.ctx.accept_web_socket(server, tags=["t"])
            server.serialize_attachment({"n": [1, 2, 3]})
            self.server = server
            return dobj.Response(None, status=101, web_socket=client)
        return dobj.Response("ok " + request.url)

    async def web_socket_message(self, ws, message):
        self.last = (ws, message)
        for other in self.ctx.get_web_sockets("t"):
            other.send(message)

    async def web_socket_close(self, ws, code, reason, was_clean):
        self.closed = ws

    def echo(self, value):
        return value

    def fail(self):
        raise ValueError("no")

    async def storage(self, i):
        s = self.ctx.storage
        s.put("k%d" % (i % 20), {"v": [i, "x" * 40], "box": None})
        s.get("k%d" % (i % 20))
        s.get(["k1", "k2", "nope"])
        s.list(prefix="k", limit=5)
        s.delete("k%d" % ((i + 7) % 20))

        async def tx(t):
            t.put("t", i)
            return t.get("t")

        await s.transaction(tx)
        s.transaction_sync(lambda t: t.put("u", [i]))
        for bad in (lambda: s.put("k", Box()), lambda: s.transaction_sync(lambda t: 1 / 0),
                    lambda: s.get(["a", 1]), lambda: s.list(limit=0), lambda: s.put("k" * 3000, 1)):
            try:
                bad()
            except (TypeError, ValueError, ZeroDivisionError):
                pass
        await s.sync()

    def sql(self, i):
        q = self.ctx.storage.sql
        q.exec("CREATE TABLE IF NOT EXISTS t(a INTEGER, b TEXT, c BLOB)")
        q.exec("INSERT INTO t VALUES (?, ?, ?)", i, "x" * 40, b"y" * 40)
        next(q.exec("SELECT * FROM t"))  # dropped half-read
        list(q.exec("SELECT * FROM t LIMIT 5").raw())
        q.exec("SELECT a FROM t LIMIT 5").to_array()
        cycle(q.exec("SELECT * FROM t"))  # a cursor in a cycle
        for query, args in (("SELEC 1", ()), ("SELECT ?", (Box(),)), ("SELECT * FROM _cf_KV", ()),
                            ("SELECT 1 WHERE 0", ())):
            try:
                q.exec(query, *args).one()
            except (dobj.Error, TypeError, ValueError):
                pass
        if i % 50 == 0:
            q.exec("DELETE FROM t")

    def arm(self, n):
        self.left = n
        self.ctx.storage.set_alarm(1.5)

    def alarm(self, info):
        self.info = info
        self.left -= 1
        if self.left > 0:
            self.ctx.storage.set_alarm(info.scheduled_time + 1)

    async def tasks(self):
        async def background():
            self.done = True

        self.ctx.wait_until(background())

        async def block():
            return 1

        return await self.ctx.block_concurrency_while(block)


@pytest.fixture
def ns():
    rt = dobj.Runtime()
    yield rt.bind("THING", Thing)
    rt.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
class TestNothingLeaks:
    async def test_runtimes_closed_or_dropped_in_a_cycle(self):
        async def rounds(n):
            for i in range(n):
                rt = dobj.Runtime(env={"box": Box()})
                rt.env["box"].rt = rt  # runtime -> env -> box -> runtime
                thing = rt.bind("THING", Thing).get_by_name("t")
                await thing.fetch("https://t/")
                await thing.storage(i)
                if i % 2:
                    rt.close()

        await _flat(rounds, 30)
        gc.collect()
        assert len(alive) == 0

    async def test_namespaces_ids_stubs_and_calls(self, ns):
        async def rounds(n):
            for i in range(n):
                stub = ns.get_by_name("s%d" % (i % 5))
                ns.get(ns.id_from_string(str(ns.new_unique_id())))
                assert await stub.echo([i, {"a": "b"}]) == [i, {"a": "b"}]
                assert (await stub.fetch("https://s/%d" % i)).text().startswith("ok")
                try:
                    await stub.fail()
                except ValueError:
                    pass
                stub.echo(i)  # a call nobody awaits
                cycle(stub, ns.id_from_name("x"), stub.echo(i))

        await _flat(rounds, 200)

    async def test_storage(self, ns):
        async def rounds(n):
            stub = ns.get_by_name("storage")
            for i in range(n):
                await stub.storage(i)

        await _flat(rounds, 200)

    async def test_sql_cursors(self, ns):
        async def rounds(n):
            stub = ns.get_by_name("sql")
            for i in range(n):
                await stub.sql(i)

        await _flat(rounds, 200)

    async def test_tasks(self, ns):
        async def rounds(n):
            stub = ns.get_by_name("tasks")
            for _ in range(n):
                await stub.tasks()
            await asyncio.sleep(0)

        await _flat(rounds, 200)

    async def test_websockets(self, ns):
        async def rounds(n):
            for i in range(n):
                cycle(*dobj.WebSocketPair())  # never accepted
                stub = ns.get_by_name("room%d" % (i % 3))
                client = (await stub.fetch("https://r/ws")).web_socket
                sent = []
                client._attach(sent.append, lambda code, reason: sent.append((code, reason)))
                client._receive("hello %d" % i)
                await stub.echo(0)  # after the message's handler
                assert "hello %d" % i in sent
                client._peer_close(1000, "bye", True)
                await stub.echo(0)
                client._detach()

        await _flat(rounds, 60)

    async def test_alarms(self):
        """Each alarm run leaked its `info.scheduled_time` (a float)."""
        rt = dobj.Runtime(virtual_time=True)
        stub = rt.bind("THING", Thing).get_by_name("alarms")

        async def rounds(n):
            await stub.arm(n)
            await rt.drain()

        try:
            await _flat(rounds, 2000)
        finally:
            rt.close()
