"""One client process of the fault test (tests/cluster/fault.py): a dobj
runtime in cluster mode without node_addr (a pure client: it serves no object,
docs/cluster.md), calling the five list objects through stubs wherever they
live, and logging every operation as a JSON line on stdout:

    {"c": client, "op": "append"|"read", "obj": k, "tok": token, "t0": invoke,
     "t1": complete, "th": the handler's end (ok only; the result is released
     after it, before t1), "out": "ok"|"fail"|"unknown", "val": [...],
     "inc": incarnation, "err": message}

Times are time.monotonic() (CLOCK_MONOTONIC: one clock for every process of
the machine).  "fail" means the call certainly did not run (it was never
sent to a node that could run it); any other error is "unknown" (a
`retryable` error may or may not have run).  Runs until stdin closes.

    python client.py URL STORAGE NAME SEED
"""
import asyncio
import json
import random
import sys
import time

import dobj
from node import OBJECTS, ListObj, emit

# Messages of calls that certainly did not run (docs/cluster.md, "Routing").
NOT_RUN = ("was not sent", "is active on node")


async def client(ns, name, c, rng, stop):
    n = 0
    while not stop.is_set():
        k = rng.randrange(OBJECTS)
        stub = ns.get_by_name(f"list{k}")
        rec = {"c": f"{name}.{c}", "obj": k}
        if rng.random() < 0.6:
            n += 1
            rec["op"], rec["tok"] = "append", f"{name}.{c}.{n}"
            call = stub.append(rec["tok"])
        else:
            rec["op"] = "read"
            call = stub.read()
        rec["t0"] = time.monotonic()
        try:
            rec["inc"], rec["val"], rec["th"] = await asyncio.wait_for(call, 10)
            rec["out"] = "ok"
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            rec["err"] = str(e)[:200]
            rec["out"] = "fail" if any(m in rec["err"] for m in NOT_RUN) else "unknown"
        rec["t1"] = time.monotonic()
        if rec["op"] == "append" and rec["out"] == "ok":
            rec["val"] = None  # the token is enough; keeps the log small
        emit(rec)
        await asyncio.sleep(rng.random() * 0.02)


async def main():
    url, storage, name, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for attempt in range(40):  # PostgreSQL may be down (a fault) when the client starts
        try:
            rt = dobj.Runtime(storage=storage, cluster=url, cluster_ttl=1.5, cluster_grace=0.5)
            break
        except dobj.Error:
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)
    ns = rt.bind("LIST", ListObj)
    stop = asyncio.Event()
    rng = random.Random(seed)
    tasks = [asyncio.ensure_future(client(ns, name, c, random.Random(rng.random()), stop))
             for c in range(2)]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stop.set()
    await asyncio.gather(*tasks)
    rt.close()


if __name__ == "__main__":
    asyncio.run(main())
