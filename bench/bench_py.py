"""One side of `make bench` for Python: the dobj binding, or pure Python.

    python bench/bench_py.py dobj     # import dobj (run in the project venv)
    python bench/bench_py.py pure     # bench/pure_ids.py

Reads "OP N" lines on stdin, runs OP N times and answers "ok SECONDS"
(or "error MESSAGE"); "hex" answers the ID of the name "x".  bench/run.py
drives it.  Ops: id_from_name, id_from_string, new_unique_id, and for dobj
fetch_sync / fetch_async (sequential `await stub.fetch("https://x/")` inside
one asyncio.run, to a `def fetch` / `async def fetch` handler).

Storage and RPC ops (dobj only; storage under $DOBJ_BENCH_STORE, which
bench/run.py makes and removes):
  store_put N / store_get N   one `await stub.fetch(...)` whose `def fetch`
                              does N self.ctx.storage.put / .get of keys
                              "k0".."k<N-1>" (store_get writes them first,
                              untimed)
  store_inc N                 N sequential fetches that read "n", add one,
                              write it and reply (after the commit)
  store_inc_rpc N             the same by RPC: `await stub.inc()`
  rpc_add N                   N sequential `await stub.add(5)` (Python class)
  native_add N                N `await stub.add(5)` on the native class Adder
                              ($DOBJ_BENCH_NATIVE, build/libbench_native.so)
  native_take N               N `await stub.take(1)` on the rate limiter
                              ($DOBJ_BENCH_RATE, build/librate.so)
A feature missing from this build answers "error n/a: ..." for its ops.
"""

import asyncio
import os
import sys
import time


class NA(Exception):
    """A feature this build of dobj does not have (printed as n/a)."""


def _why(e):
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:200]


def store_rpc_ops(dobj, rt):
    """The storage and RPC ops; runtimes and bindings are made on first use."""

    class Store(dobj.DurableObject):
        def fetch(self, request):
            op, _, n = request.url.rpartition("/")[2].partition("?")
            n = int(n)
            st = self.ctx.storage
            if op == "put":
                put = st.put
                for i in range(n):
                    put(f"k{i}", i)
                return dobj.Response(str(n))
            if op == "get":
                get = st.get
                total = 0
                for i in range(n):
                    total += get(f"k{i}")
                return dobj.Response(str(total))
            if op == "inc":
                return dobj.Response(str(self.inc()))
            return dobj.Response(f"unknown op {op}", status=400)

        def inc(self):  # also called by RPC
            st = self.ctx.storage
            v = (st.get("n") or 0) + 1
            st.put("n", v)
            return v

    class Adder(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            self.n = 0

        def add(self, x):
            self.n += x
            return self.n

    state = {}

    def store_stubs():
        if "store" not in state:
            d = os.environ.get("DOBJ_BENCH_STORE")
            if not d:
                raise RuntimeError("DOBJ_BENCH_STORE is not set")
            try:
                srt = dobj.Runtime(storage=d, idle_timeout=3600)
            except TypeError as e:
                raise NA(f"Runtime(storage=...): {_why(e)}")
            sns = srt.bind("STORE", Store, unique_key="bench-store")
            state["store"] = (srt, sns.get_by_name("bench"), sns.get_by_name("inc"))
        return state["store"]

    async def number(stub, url):
        r = await stub.fetch(url)
        if r.status != 200:
            raise RuntimeError(f"status {r.status}: {r.text()}")
        return int(r.text())

    async def first_call(what, make):
        # The first call of an op (untimed) tells whether the feature exists.
        try:
            return await make()
        except Exception as e:
            if isinstance(e, (AttributeError, TypeError, NotImplementedError)) or \
                    "does not implement" in str(e) or "storage" in str(e):
                raise NA(f"{what}: {_why(e)}") from None
            raise

    def timed(setup, loop):
        async def main(n):
            await setup(n)
            t0 = time.perf_counter()
            await loop(n)
            return time.perf_counter() - t0

        return lambda n: asyncio.run(main(n))

    async def nothing(n):
        pass

    def store_put():
        _, stub, _ = store_stubs()

        async def setup(n):
            await first_call("ctx.storage.put", lambda: number(stub, "https://x/put?1"))

        async def loop(n):
            got = await number(stub, f"https://x/put?{n}")
            if got != n:
                raise RuntimeError(f"store_put: handler answered {got}")

        return timed(setup, loop)

    def store_get():
        _, stub, _ = store_stubs()

        async def setup(n):
            await first_call("ctx.storage.put", lambda: number(stub, f"https://x/put?{n}"))

        async def loop(n):
            got = await number(stub, f"https://x/get?{n}")
            if got != n * (n - 1) // 2:
                raise RuntimeError(f"store_get: wrong sum {got}")

        return timed(setup, loop)

    def store_inc(rpc):
        _, _, stub = store_stubs()
        first = []

        async def setup(n):
            first[:] = [await first_call("RPC (await stub.inc())" if rpc else "ctx.storage",
                                         (lambda: stub.inc()) if rpc
                                         else (lambda: number(stub, "https://x/inc?0")))]

        async def loop(n):
            v = None
            if rpc:
                for _ in range(n):
                    v = await stub.inc()
            else:
                for _ in range(n):
                    v = await number(stub, "https://x/inc?0")
            if v != first[0] + n:
                raise RuntimeError(f"store_inc: counter went from {first[0]} to {v}")

        return timed(setup, loop)

    def rpc_add(stub_fn, what):
        first = []

        async def setup(n):
            first[:] = [await first_call(what, lambda: stub_fn().add(5))]

        async def loop(n):
            stub = stub_fn()
            add = stub.add
            v = None
            for _ in range(n):
                v = await add(5)
            if v != first[0] + 5 * n:
                raise RuntimeError(f"rpc_add: total went from {first[0]} to {v}")

        return timed(setup, loop)

    def py_stub():
        if "adder" not in state:
            state["adder"] = rt.bind("ADDER", Adder, unique_key="bench-rpc").get_by_name("bench")
        return state["adder"]

    def native_stub(env, cls, binding):
        if env not in state:
            path = os.environ.get(env)
            if not path:
                raise NA(f"{env} is not set")
            if not hasattr(rt, "bind_native"):
                raise NA("rt.bind_native is missing in this build")
            try:
                ns = rt.bind_native(binding, path, cls, unique_key=f"bench-{binding.lower()}")
            except Exception as e:
                raise NA(f"rt.bind_native: {_why(e)}") from None
            state[env] = ns.get_by_name("bench")
        return state[env]

    def native_take():
        async def setup(n):
            await first_call("RPC on a native class (await stub.configure())",
                             lambda: native_stub("DOBJ_BENCH_RATE", "RateLimiter", "LIMITER")
                             .configure(1e12, 1e12))

        async def loop(n):
            take = native_stub("DOBJ_BENCH_RATE", "RateLimiter", "LIMITER").take
            for _ in range(n):
                await take(1)

        return timed(setup, loop)

    # Each op is built on first use, so that a missing feature fails only its ops.
    lazy = {
        "store_put": store_put,
        "store_get": store_get,
        "store_inc": lambda: store_inc(False),
        "store_inc_rpc": lambda: store_inc(True),
        "rpc_add": lambda: rpc_add(py_stub, "RPC (await stub.add(5))"),
        "native_add": lambda: rpc_add(
            lambda: native_stub("DOBJ_BENCH_NATIVE", "Adder", "NADDER"),
            "RPC on a native class (await stub.add(5))"),
        "native_take": native_take,
    }
    built = {}

    def op(name):
        def run(n):
            if name not in built:
                built[name] = lazy[name]()
            return built[name](n)
        return run

    return {name: op(name) for name in lazy}


def make_ops(impl):
    if impl == "pure":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import pure_ids

        ns = pure_ids.PureNamespace("bench-key")
        fetch_ops = {}
    else:
        import dobj

        calls = [0]  # every fetch must reach the handler

        class SyncBench(dobj.DurableObject):
            def fetch(self, request):
                calls[0] += 1
                return dobj.Response("ok")

        class AsyncBench(dobj.DurableObject):
            async def fetch(self, request):
                calls[0] += 1
                return dobj.Response("ok")

        rt = dobj.Runtime()
        ns = rt.bind("B", SyncBench, unique_key="bench-key")
        ns_async = rt.bind("A", AsyncBench, unique_key="bench-key")

        def fetch_loop(namespace):
            stub = namespace.get_by_name("bench")

            async def loop(n):
                before = calls[0]
                for _ in range(n):
                    await stub.fetch("https://x/")
                t = time.perf_counter()
                r = await stub.fetch("https://x/")
                if r.status != 200 or r.text() != "ok":
                    raise RuntimeError(f"unexpected response {r.status} {r.text()!r}")
                if calls[0] - before != n + 1:
                    raise RuntimeError(f"{calls[0] - before} calls reached the handler, "
                                       f"expected {n + 1}")
                return t

            def run(n):
                t0 = time.perf_counter()
                return asyncio.run(loop(n)) - t0

            return run

        fetch_ops = {"fetch_sync": fetch_loop(ns), "fetch_async": fetch_loop(ns_async)}
        fetch_ops.update(store_rpc_ops(dobj, rt))

    hex_x = str(ns.id_from_name("x"))

    def id_from_name(n):
        f = ns.id_from_name
        t0 = time.perf_counter()
        for _ in range(n):
            f("x")
        return time.perf_counter() - t0

    def id_from_string(n):
        f = ns.id_from_string
        t0 = time.perf_counter()
        for _ in range(n):
            f(hex_x)
        return time.perf_counter() - t0

    def new_unique_id(n):
        f = ns.new_unique_id
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return time.perf_counter() - t0

    ops = {"id_from_name": id_from_name, "id_from_string": id_from_string,
           "new_unique_id": new_unique_id, **fetch_ops}
    return ops, hex_x


def main():
    impl = sys.argv[1] if len(sys.argv) > 1 else "dobj"
    try:
        ops, hex_x = make_ops(impl)
    except Exception as e:  # reported to run.py, which prints n/a
        print(f"error {type(e).__name__}: {e}".replace("\n", " "), flush=True)
        return 1
    print("ready", flush=True)
    for line in sys.stdin:
        parts = line.split()
        try:
            if parts == ["hex"]:
                out = hex_x
            elif len(parts) == 2 and parts[0] in ops:
                out = f"{ops[parts[0]](int(parts[1])):.9f}"
            else:
                raise ValueError(f"bad command {line.strip()!r}")
            print("ok", out, flush=True)
        except NA as e:
            print(f"error n/a: {e}".replace("\n", " "), flush=True)
        except Exception as e:
            print(f"error {type(e).__name__}: {e}".replace("\n", " "), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
