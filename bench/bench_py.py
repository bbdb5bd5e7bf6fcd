"""One side of `make bench` for Python: the dobj binding, or pure Python.

    python bench/bench_py.py dobj     # import dobj (run in the project venv)
    python bench/bench_py.py pure     # bench/pure_ids.py

Reads "OP N" lines on stdin, runs OP N times and answers "ok SECONDS"
(or "error MESSAGE"); "hex" answers the ID of the name "x".  bench/run.py
drives it.  Ops: id_from_name, id_from_string, new_unique_id, and for dobj
fetch_sync / fetch_async (sequential `await stub.fetch("https://x/")` inside
one asyncio.run, to a `def fetch` / `async def fetch` handler).
"""

import asyncio
import os
import sys
import time


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
        except Exception as e:
            print(f"error {type(e).__name__}: {e}".replace("\n", " "), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
