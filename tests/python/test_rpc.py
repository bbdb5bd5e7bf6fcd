"""RPC on stubs (Python classes) and native classes through libffi."""
import asyncio
import os
import sqlite3

import pytest

import dobj

BUILD = os.environ.get("DOBJ_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
RATE = os.path.abspath(os.path.join(BUILD, "librate.so"))
KINDS = os.path.abspath(os.path.join(BUILD, "libdobjtest_kinds.so"))
needs_native = pytest.mark.skipif(not os.path.exists(RATE), reason="build/librate.so not built (make build)")


class Counter(dobj.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.n = 0
        self.instance_fn = lambda: "not callable over RPC"
        self.seen = None

    def add(self, k, label=None):
        self.n += k
        return {"n": self.n, "label": label}

    async def slow_echo(self, value):
        await asyncio.sleep(0.001)
        return value

    def keep(self, value):
        self.seen = value
        value.append("mutated by the object")
        return self.seen

    def peek(self):
        return self.seen

    def fail(self, msg):
        raise LookupError(msg)

    def me(self):
        return self.env.COUNTER.get(self.ctx.id)

    def my_id(self):
        return self.ctx.id

    def call_through(self, stub, k):
        return stub.add(k)

    def _private(self):
        return "secret"

    async def fetch(self, request):
        return dobj.Response(str(self.n))

    def nested(self, depth):
        return self.env.COUNTER.get_by_name(f"n{depth}").nested(depth + 1)


@pytest.fixture
def ns(rt):
    return rt.bind("COUNTER", Counter)


async def test_methods_with_args_and_kwargs(ns):
    s = ns.get_by_name("a")
    assert await s.add(5, label="x") == {"n": 5, "label": "x"}
    assert await s.add(2) == {"n": 7, "label": None}
    assert await s.slow_echo([1, "two", {"3": 3.5}, None, True, b"\x00"]) == \
        [1, "two", {"3": 3.5}, None, True, b"\x00"]
    assert (await s.fetch("https://c/")).text() == "7"  # one instance for fetch and RPC


@pytest.mark.parametrize("name", ["missing", "instance_fn", "__init__", "n"])
async def test_only_public_class_methods_are_callable(ns, name):
    s = ns.get_by_name("p")
    with pytest.raises(dobj.Error, match=f'^The RPC receiver does not implement the method "{name}".$') as info:
        await s._rpc(name)
    assert info.value.remote is True
    assert info.value.durable_object_id == str(s.id)


@pytest.mark.parametrize("name", ["alarm", "fetch", "new", "constructor", "webSocketClose"])
async def test_reserved_names_are_refused_as_workerd_does(ns, name):
    s = ns.get_by_name("p")
    with pytest.raises(dobj.Error, match=f"^'{name}' is a reserved method and cannot be called over RPC.$") as info:
        await s._rpc(name)
    assert info.value.remote is True



async def test_the_missing_method_message_shows_a_nul_byte_escaped(ns):
    # It was cut at the NUL: 'the method "add".', as if add were missing.
    s = ns.get_by_name("p")
    with pytest.raises(dobj.Error) as info:
        await s._rpc("add\x00x")
    assert str(info.value) == 'The RPC receiver does not implement the method "add\\x00x".'


async def test_private_names_are_not_methods(ns):
    s = ns.get_by_name("p")
    with pytest.raises(AttributeError):
        s._private
    with pytest.raises(dobj.Error, match="does not implement the method \"_private\""):
        await s._rpc("_private")


async def test_arguments_and_results_are_copies(ns):
    s = ns.get_by_name("copy")
    mine = ["original"]
    back = await s.keep(mine)
    assert mine == ["original"]  # the object changed its own copy
    assert back == ["original", "mutated by the object"]
    back.append("changed by the caller")
    assert await s.peek() == ["original", "mutated by the object"]


async def test_numbers_keep_the_storage_mapping(ns):
    # One integer rule for RPC and storage: floats stay floats (1.0, -0.0),
    # ints stay ints (2**40 as a JS number, 2**60 as a BigInt).
    from storage_util import same
    s = ns.get_by_name("numbers")
    for v in [1.0, 2.0, -0.0, 0.5, 2**40, 2**60, -(2**60), 2**53, 7, 1700000000123]:
        assert same(await s.slow_echo(v), v), v
    assert same(await s.slow_echo([1.0, 2**40, 2**60, -0.0]), [1.0, 2**40, 2**60, -0.0])
    assert same(await s.slow_echo(2.0**40), 2**40)  # as storage reads V8's 2**40
    assert same(await s.slow_echo(dobj.deserialize(dobj.serialize(1.0))), 1.0)


async def test_shared_parts_stay_shared(ns):
    part = {"x": 1}
    out = await ns.get_by_name("s").slow_echo([part, part])
    assert out == [part, part] and out[0] is out[1]


async def test_unsupported_values_fail_in_the_caller(ns):
    s = ns.get_by_name("u")
    with pytest.raises(TypeError, match="function"):
        await s.add(lambda: 1)
    with pytest.raises(TypeError):
        await s.add(object())
    cyclic = []
    cyclic.append(cyclic)
    with pytest.raises((TypeError, ValueError)):
        await s.slow_echo(cyclic)
    assert await s.add(1) == {"n": 1, "label": None}  # nothing was delivered before


async def test_errors_keep_type_message_and_remote(ns):
    s = ns.get_by_name("e")
    with pytest.raises(LookupError, match="^nope$") as info:
        await s.fail("nope")
    assert info.value.remote is True and info.value.durable_object_id == str(s.id)


async def test_stubs_and_ids_travel(rt, ns):
    s = ns.get_by_name("t")
    again = await s.me()
    assert isinstance(again, dobj.Stub) and again.id == s.id
    assert await again.add(3) == {"n": 3, "label": None}
    the_id = await s.my_id()
    assert isinstance(the_id, dobj.DurableObjectId) and the_id == s.id and the_id.name == "t"
    other = ns.get_by_name("other")
    assert await s.call_through(other, 4) == {"n": 4, "label": None}
    foreign = dobj.Runtime().bind("X", Counter).get_by_name("x")
    with pytest.raises(TypeError, match="another runtime"):
        await s.call_through(foreign, 1)


async def test_order_is_kept_across_fetch_and_rpc(rt):
    log = []

    class Log(dobj.DurableObject):
        def note(self, i):
            log.append(i)

        def fetch(self, request):
            log.append(int(request.url.rsplit("/", 1)[1]))
            return dobj.Response("ok")

    s = rt.bind("LOG", Log).get_by_name("l")
    await asyncio.gather(*(s.note(i) if i % 2 else s.fetch(f"https://l/{i}") for i in range(100)))
    assert log == list(range(100))


async def test_nested_rpc_has_the_depth_limit(ns):
    with pytest.raises(dobj.Error, match="Subrequest depth limit exceeded"):
        await ns.get_by_name("n0").nested(1)


async def test_rpc_results_wait_for_the_commit(tmp_path):
    class Store(dobj.DurableObject):
        def bump(self):
            n = (self.ctx.storage.get("n") or 0) + 1
            self.ctx.storage.put("n", n)
            return n

    rt = dobj.Runtime(storage=str(tmp_path))
    ns = rt.bind("S", Store)
    s = ns.get_by_name("s")
    assert await s.bump() == 1
    # Another connection's view of the file: committed when the result came.
    db = sqlite3.connect(tmp_path / "S" / f"{ns.id_from_name('s')}.sqlite")
    assert db.execute("SELECT key FROM _cf_KV").fetchall() == [("n",)]
    db.close()
    assert await s.bump() == 2
    rt.close()


@needs_native
async def test_native_rate_limiter(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path), virtual_time=True)
    lim = rt.bind_native("LIMITER", RATE, "RateLimiter", unique_key="limits")
    assert lim.object_class is None
    u = lim.get_by_name("u")
    assert await u.configure(3, 1) is None
    assert [await u.take(1) for _ in range(4)] == [True, True, True, False]
    rt.advance(2)
    assert abs(await u.remaining() - 2) < 1e-6
    r = await u.fetch("https://limiter/", method="POST")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["allowed"] is True
    with pytest.raises(dobj.Error, match=r"take\(tokens\) needs tokens > 0") as info:
        await u.take(-1)
    assert info.value.remote is True
    rt.close()
    again = dobj.Runtime(storage=str(tmp_path), virtual_time=True)
    u2 = again.bind_native("LIMITER", RATE, "RateLimiter", unique_key="limits").get_by_name("u")
    assert await u2.remaining() <= 3  # state survived the restart
    again.close()


@needs_native
async def test_native_calls_are_checked_in_the_caller():
    rt = dobj.Runtime()
    u = rt.bind_native("LIMITER", RATE, "RateLimiter").get_by_name("u")
    with pytest.raises(TypeError, match=r"^RateLimiter.take\(\) expects 1 argument, got 2$"):
        await u.take(1, 2)
    with pytest.raises(TypeError, match=r"^argument 1 of take\(\) must be a number, got string$"):
        await u.take("x")
    with pytest.raises(TypeError, match="positional arguments only"):
        await u.take(tokens=1)
    with pytest.raises(dobj.Error, match='does not implement the method "nope"'):
        await u.nope()
    rt.close()


@pytest.mark.skipif(not os.path.exists(KINDS), reason="test native library not built")
async def test_native_signature_kinds():
    rt = dobj.Runtime()
    k = rt.bind_native("KINDS", KINDS, "Kinds").get_by_name("k")
    assert await k.echo_i8(-128) == -128
    assert await k.echo_u8(255) == 255
    assert await k.echo_i64(2**62) == 2**62
    assert await k.echo_u64(2**64 - 1) == 2**64 - 1
    assert await k.echo_bool(True) is True
    assert await k.echo_f64(0.25) == 0.25
    # Python <-> native: an f64 result is a float even when whole, integer
    # results are ints (the same rule as storage).
    got = await k.echo_f64(1.0)
    assert got == 1.0 and type(got) is float
    got = await k.echo_f64(-0.0)
    assert type(got) is float and str(got) == "-0.0"
    got = await k.echo_i64(2**40)
    assert got == 2**40 and type(got) is int
    assert type(await k.echo_i64(5)) is int
    assert await k.echo_str("héllo") == "héllo"
    assert await k.echo_bytes(b"\x00\x01") == b"\x00\x01"
    with pytest.raises(TypeError, match=r"must be an integer in \[-128, 127\]"):
        await k.echo_i8(128)
    with pytest.raises(TypeError, match="NUL"):
        await k.echo_str("a\0b")
    rt.close()


def test_loading_errors():
    rt = dobj.Runtime()
    with pytest.raises(dobj.Error, match="cannot load native library /nonexistent.so"):
        rt.bind_native("X", "/nonexistent.so", "X")
    with pytest.raises(dobj.Error, match="does not export dobj_native_init"):
        rt.bind_native("Y", "libm.so.6", "X")
    if os.path.exists(RATE):
        with pytest.raises(dobj.Error, match="has no native class named Nope"):
            rt.bind_native("Z", RATE, "Nope")
    rt.close()


@pytest.mark.skipif(not os.path.exists(KINDS), reason="test native library not built")
@pytest.mark.parametrize("variant,message", [
    ("badtype", r"registering its classes failed: bad signature .*unknown type"),
    ("nullfn", r"registering its classes failed: .*the function is NULL"),
    ("noinit", r"does not export dobj_native_init\(\)"),
    ("failinit", r"registering its classes failed: dobj_native_init\(\) failed without saying why$"),
])
def test_bad_registrations(variant, message):
    rt = dobj.Runtime()
    path = KINDS.replace("libdobjtest_kinds.so", f"libdobjtest_kinds_{variant}.so")
    with pytest.raises(dobj.Error):  # leaves an unrelated error on the thread
        rt.bind_native("E", "/nonexistent/earlier.so", "X")
    with pytest.raises(dobj.Error, match=message):
        rt.bind_native("K", path, "Kinds")
    rt.close()


async def test_missing_method_message_keeps_its_end(ns):
    s = ns.get_by_name("p")
    name = "m" * 2000
    with pytest.raises(dobj.Error) as info:
        await s._rpc(name)
    assert str(info.value) == f'The RPC receiver does not implement the method "{"m" * 256}...".'
