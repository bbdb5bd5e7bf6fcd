"""ctx.storage: the key-value API, limits and messages, transactions."""
import asyncio

import pytest

import dobj
from storage_util import Box, run


@pytest.fixture
def box(rt):
    Box.constructed = 0
    return rt.bind("BOX", Box).get_by_name("kv")


async def test_get_put_delete(box):
    def body(self):
        s = self.ctx.storage
        assert s.get("missing") is None
        s.put("a", 1)
        s.put("b", {"x": [1, 2]})
        s.put("n", None)  # null is a value: get() shows None, list() shows the key
        out = [s.get("a"), s.get("b"), s.get(["a", "missing", "b", "n"])]
        out.append(s.delete("a"))
        out.append(s.delete("a"))
        out.append(s.get("a"))
        out.append(s.delete(["b", "missing", "n"]))
        return out

    a, b, multi, d1, d2, after, count = await run(box, body)
    assert (a, b) == (1, {"x": [1, 2]})
    assert multi == {"a": 1, "b": {"x": [1, 2]}, "n": None}
    assert (d1, d2, after, count) == (True, False, None, 2)


async def test_put_many_and_data_survives_the_event(box):
    await run(box, lambda self: self.ctx.storage.put({"k1": 1, "k2": "two", "k3": [3]}))
    got = await run(box, lambda self: self.ctx.storage.get(("k1", "k2", "k3")))
    assert got == {"k1": 1, "k2": "two", "k3": [3]}


async def test_put_many_checks_everything_before_writing(box):
    def body(self):
        s = self.ctx.storage
        with pytest.raises(TypeError, match="cannot store a value of type object"):
            s.put({"ok": 1, "bad": object()})
        with pytest.raises(ValueError, match="Keys cannot be larger than 2048 bytes"):
            s.put({"fine": 1, "k" * 3000: 2})
        return s.get(["ok", "fine"])

    assert await run(box, body) == {}


async def test_list_order_and_options(box):
    keys = ["b", "a", "c", "ab", "é", "z", "Z", "aa", "\U0001f600", "\uffff"]

    def body(self):
        s = self.ctx.storage
        s.put({k: i for i, k in enumerate(keys)})
        return [
            list(s.list()),
            list(s.list(prefix="a")),
            list(s.list(start="ab", end="c")),
            list(s.list(start_after="ab", end="c")),
            list(s.list(reverse=True, limit=2)),
            list(s.list(start="a", limit=1)),
            s.list(prefix="a", reverse=True),
        ]

    every, prefix, rng, after, rev, lim, rev_prefix = await run(box, body)
    assert every == sorted(keys, key=lambda k: k.encode())  # UTF-8 byte order
    assert prefix == ["a", "aa", "ab"]
    assert rng == ["ab", "b"]
    assert after == ["b"]
    assert rev == sorted(keys, key=str.encode)[::-1][:2] == ["\U0001f600", "\uffff"]
    assert lim == ["a"]
    assert list(rev_prefix.items()) == [("ab", 3), ("aa", 7), ("a", 1)]


LIMIT_ERRORS = [
    (lambda s: s.put("k" * 2049, 1), ValueError,
     "Keys cannot be larger than 2048 bytes. A key of size 2049 was provided."),
    (lambda s: s.get("é" * 1025), ValueError, "A key of size 2050 was provided."),
    (lambda s: s.put("k", b"x" * 131072), ValueError,
     "Values cannot be larger than 131072 bytes."),
    (lambda s: s.get([str(i) for i in range(129)]), ValueError,
     "get() can be called with at most 128 keys; 129 were given."),
    (lambda s: s.put({str(i): i for i in range(129)}), ValueError,
     "put() can be called with at most 128 keys; 129 were given."),
    (lambda s: s.delete([str(i) for i in range(129)]), ValueError,
     "delete() can be called with at most 128 keys; 129 were given."),
    (lambda s: s.list(limit=0), ValueError, "List limit must be positive."),
    (lambda s: s.list(limit=-3), ValueError, "List limit must be positive."),
    (lambda s: s.list(start="a", start_after="b"), ValueError,
     "list() cannot be called with both start and startAfter values."),
    (lambda s: s.put("k"), TypeError, "put() called with undefined value."),
    (lambda s: s.put(1, 1), TypeError, "storage keys must be str, got int"),
    (lambda s: s.get(b"k"), TypeError, "storage keys must be str, got bytes"),
    (lambda s: s.list(prefix=1), TypeError, "prefix must be a str"),
    (lambda s: s.list(limit=1.5), TypeError, "limit must be an int"),
]


@pytest.mark.parametrize("fn,exc,msg", LIMIT_ERRORS)
async def test_limits_and_messages(box, fn, exc, msg):
    def body(self):
        with pytest.raises(exc) as info:
            fn(self.ctx.storage)
        return str(info.value)

    got = await run(box, body)
    assert msg in got
    if exc is ValueError and "Keys cannot" in msg:
        assert got == msg


async def test_values_at_the_size_limit_are_accepted(box):
    # 131072 bytes encoded: header 2 + tag 1 + length varint 3 + buffer... fill to exactly the limit
    blob_overhead = len(dobj.serialize(b"x" * 131000)) - 131000
    ok = b"x" * (131072 - blob_overhead)
    await run(box, lambda self: self.ctx.storage.put("big", ok))
    assert await run(box, lambda self: self.ctx.storage.get("big")) == ok


async def test_delete_all_deletes_keys_tables_and_alarm(rt):
    from storage_util import AlarmBox
    stub = rt.bind("ABOX", AlarmBox).get_by_name("d")

    def body(self):
        s = self.ctx.storage
        s.put({"a": 1, "b": 2})
        s.sql.exec("CREATE TABLE t (x)")
        s.set_alarm(rt.now() + 60_000)
        s.delete_all()
        return s.list(), s.get_alarm(), s.sql.exec(
            "SELECT name FROM sqlite_master WHERE name = 't'").to_array()

    assert await run(stub, body) == ({}, None, [])


async def test_transaction_sync_commits_and_returns(box):
    def body(self):
        s = self.ctx.storage

        def fn(txn):
            txn.put("a", 1)
            assert txn.get("a") == 1
            txn.put({"b": 2, "c": 3})
            txn.delete("c")
            return "result"

        return s.transaction_sync(fn), s.list()

    assert await run(box, body) == ("result", {"a": 1, "b": 2})


async def test_transaction_sync_discards_on_error_and_on_rollback(box):
    def body(self):
        s = self.ctx.storage
        s.put("keep", 0)

        def failing(txn):
            txn.put("lost", 1)
            txn.delete("keep")
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            s.transaction_sync(failing)

        def rolled(txn):
            txn.put("lost2", 1)
            txn.rollback()
            with pytest.raises(dobj.Error, match="rolled back"):
                txn.put("after", 1)
            return "went on"

        return s.transaction_sync(rolled), s.list()

    assert await run(box, body) == ("went on", {"keep": 0})


async def test_transactions_nest(box):
    def body(self):
        s = self.ctx.storage

        def outer(txn):
            txn.put("outer", 1)

            def inner(t2):
                t2.put("inner", 1)
                t2.rollback()

            txn.transaction_sync(inner)

            def inner_ok(t2):
                t2.put("inner_ok", 1)
            txn.transaction_sync(inner_ok)
            with pytest.raises(dobj.Error, match="Cannot call deleteAll\\(\\) within a transaction"):
                txn.delete_all()

        s.transaction_sync(outer)
        return s.list()

    assert await run(box, body) == {"outer": 1, "inner_ok": 1}


async def test_only_the_innermost_transaction_rolls_back(box):
    def body(self):
        s = self.ctx.storage

        def outer(txn):
            txn.put("a", 1)

            def inner(t2):
                t2.put("b", 1)
                # The outer handle cannot roll back while the inner one is open.
                with pytest.raises(dobj.Error, match="^only the innermost open transaction can be rolled back$"):
                    txn.rollback()
                t2.rollback()
                with pytest.raises(dobj.Error, match="^the transaction was rolled back$"):
                    t2.rollback()

            txn.transaction_sync(inner)
        s.transaction_sync(outer)
        return s.list()

    assert await run(box, body) == {"a": 1}


async def test_transaction_sync_refuses_coroutine_functions(box):
    def body(self):
        async def fn(txn):
            txn.put("x", 1)

        with pytest.raises(TypeError, match="use `await storage.transaction"):
            self.ctx.storage.transaction_sync(fn)
        return self.ctx.storage.get("x")

    assert await run(box, body) is None


async def test_transaction_finished_object_raises(box):
    def body(self):
        kept = []
        self.ctx.storage.transaction_sync(kept.append)
        with pytest.raises(dobj.Error, match="the transaction has finished"):
            kept[0].get("a")

    await run(box, body)


async def test_async_transaction_holds_other_events(rt):
    log = []
    stub = rt.bind("BOX", Box).get_by_name("async-txn")

    async def long_txn(self):
        async def fn(txn):
            txn.put("t", 1)
            log.append("txn-start")
            await asyncio.sleep(0.01)
            log.append("txn-end")
            return txn.get("t") + 1
        return await self.ctx.storage.transaction(fn)

    def other(self):
        log.append("other")
        return self.ctx.storage.get("t")

    results = await asyncio.gather(run(stub, long_txn), run(stub, other))
    assert results == [2, 1]
    assert log == ["txn-start", "txn-end", "other"]


async def test_async_transaction_error_rolls_back_and_does_not_reset(rt):
    Box.constructed = 0
    stub = rt.bind("BOX", Box).get_by_name("async-fail")

    async def failing(self):
        self.ctx.storage.put("before", 1)

        async def fn(txn):
            txn.put("lost", 1)
            await asyncio.sleep(0)
            raise RuntimeError("no")

        with pytest.raises(RuntimeError, match="no"):
            await self.ctx.storage.transaction(fn)

        async def rolled(txn):
            txn.put("lost2", 1)
            txn.rollback()
            return "ok"

        assert await self.ctx.storage.transaction(rolled) == "ok"
        self.ctx.storage.put("after", 2)  # later writes still commit (core note 6)
        return self.ctx.storage.list()

    assert await run(stub, failing) == {"before": 1, "after": 2}
    assert await run(stub, lambda self: self.ctx.storage.list()) == {"before": 1, "after": 2}
    assert Box.constructed == 1


async def test_sync_can_be_awaited_or_not(box):
    async def body(self):
        self.ctx.storage.put("a", 1)
        self.ctx.storage.sync()
        self.ctx.storage.put("b", 2)
        await self.ctx.storage.sync()
        return self.ctx.storage.list()

    assert await run(box, body) == {"a": 1, "b": 2}


async def test_storage_is_cached_and_per_object(rt):
    ns = rt.bind("BOX", Box)
    a, b = ns.get_by_name("a"), ns.get_by_name("b")
    await run(a, lambda self: self.ctx.storage.put("who", "a"))
    await run(b, lambda self: self.ctx.storage.put("who", "b"))
    assert await run(a, lambda self: (self.ctx.storage is self.ctx.storage,
                                      self.ctx.storage.get("who"))) == (True, "a")
    assert await run(b, lambda self: self.ctx.storage.get("who")) == "b"


async def test_storage_kept_after_abort_raises(rt):
    stub = rt.bind("BOX", Box).get_by_name("gone")
    kept = await run(stub, lambda self: self.ctx.storage)

    def body(self):
        self.ctx.abort("bye")

    with pytest.raises(dobj.Error):
        await run(stub, body)
    with pytest.raises(dobj.Error, match="reset or evicted"):
        kept.get("x")
    with pytest.raises(dobj.Error, match="reset or evicted"):
        kept.sql.exec("SELECT 1")


async def test_abort_discards_uncommitted_writes(rt):
    ns = rt.bind("BOX", Box)
    stub = ns.get_by_name("abort")
    await run(stub, lambda self: self.ctx.storage.put("kept", 1))

    def body(self):
        self.ctx.storage.put("lost", 1)
        self.ctx.abort("reset")

    with pytest.raises(dobj.Error, match="reset"):
        await run(stub, body)
    assert await run(ns.get_by_name("abort"), lambda self: self.ctx.storage.list()) == {"kept": 1}


async def test_storage_from_the_constructor(rt):
    class Loader(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            self.n = ctx.storage.get("n") or 0
            ctx.storage.put("n", self.n + 1)

        def fetch(self, request):
            return dobj.Response(str(self.n))

    ns = rt.bind("LOADER", Loader)
    assert (await ns.get_by_name("x").fetch("https://x/")).text() == "0"


def test_storage_cycles_are_collected():
    import gc
    import weakref

    class Keeper(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            self.storage = ctx.storage          # instance -> storage -> ctx -> runtime
            self.sql = ctx.storage.sql
            self.cursor = self.sql.exec("SELECT 1 AS one")
            self.raw = self.cursor.raw()

        def fetch(self, request):
            self.txn_seen = []
            self.storage.transaction_sync(self.txn_seen.append)  # txn -> storage
            return dobj.Response("ok")

    async def main():
        rt = dobj.Runtime()
        stub = rt.bind("K", Keeper).get_by_name("k")
        await stub.fetch("https://k/")
        return weakref.ref(rt)

    import asyncio
    ref = asyncio.run(main())
    gc.collect()
    assert ref() is None
