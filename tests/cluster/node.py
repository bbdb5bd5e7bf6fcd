"""One node of the fault test (tests/cluster/fault.py): a dobj runtime in cluster
mode serving five list objects to the client processes (client.py, which run
the workload below through stubs; CLIENTS=n in the environment runs n clients
in the node itself too), logging every operation as a JSON line on stdout:

    {"c": client, "op": "append"|"read", "obj": k, "tok": token, "t0": invoke,
     "t1": complete, "th": the handler's end (ok only; the result is released
     after it, before t1), "out": "ok"|"fail"|"unknown", "val": [...],
     "inc": incarnation, "node": node_id, "err": message}

Times are time.time() (CLOCK_REALTIME: one clock for every process of the
machine, and the one Lua nodes have, lua_node.lua).  "fail" means the call
certainly did not run ("was not sent": docs/cluster.md, "Routing"); any other
error is "unknown" (a `retryable` one may or may not have run).  An incarnation's name starts with the node's ("n0r1-py-...").
When the node's id changes (it lost its lease and joined again) it logs
{"rejoined": name, "old": id, "new": id, "t": time}.  Runs until stdin closes.

    python node.py URL STORAGE NAME SEED [TTL GRACE]
"""
import asyncio
import json
import os
import random
import sys
import time

import dobj

OBJECTS = 5
# Messages of calls that certainly did not run.
NOT_RUN = ("was not sent", "is active on node")


NAME = "reader"


class ListObj(dobj.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.inc = f"{NAME}-py-{os.urandom(6).hex()}"  # this incarnation

    async def append(self, token):
        items = self.ctx.storage.get("items") or []
        items.append(token)
        self.ctx.storage.put("items", items)
        return self.inc, items, time.time()

    async def read(self):
        return self.inc, self.ctx.storage.get("items") or [], time.time()


def emit(rec):
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


async def client(rt, ns, name, c, rng, stop):
    n = 0
    while not stop.is_set():
        k = rng.randrange(OBJECTS)
        stub = ns.get_by_name(f"list{k}")
        rec = {"c": f"{name}.{c}", "obj": k, "node": rt.node_id}
        if rng.random() < 0.6:
            n += 1
            rec["op"], rec["tok"] = "append", f"{name}.{c}.{n}"
            call = stub.append(rec["tok"])
        else:
            rec["op"] = "read"
            call = stub.read()
        rec["t0"] = time.time()
        try:
            rec["inc"], rec["val"], rec["th"] = await asyncio.wait_for(call, 10)
            rec["out"] = "ok"
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            rec["err"] = str(e)[:200]
            rec["out"] = "fail" if any(m in rec["err"] for m in NOT_RUN) else "unknown"
        rec["t1"] = time.time()
        if rec["op"] == "append" and rec["out"] == "ok":
            rec["val"] = None  # the token is enough; keeps the log small
        emit(rec)
        await asyncio.sleep(rng.random() * 0.02)


async def watch(rt, name, stop):
    """Log when the node's id changes: it lost its lease (paused past it)
    and joined again."""
    seen = rt.node_id
    while not stop.is_set():
        if rt.node_id != seen:
            emit({"rejoined": name, "old": seen, "new": rt.node_id, "t": time.time()})
            seen = rt.node_id
        await asyncio.sleep(0.05)


async def main():
    global NAME
    url, storage, name, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ttl, grace = (float(sys.argv[5]), float(sys.argv[6])) if len(sys.argv) > 6 else (1.5, 0.5)
    NAME = name
    for attempt in range(40):  # PostgreSQL may be down (a fault) when the node starts
        try:
            # A low snapshot threshold: objects are compacted every few
            # writes, so snapshots are written and restored under the faults.
            rt = dobj.Runtime(storage=storage, cluster=url, node_addr="127.0.0.1:0",
                              cluster_ttl=ttl, cluster_grace=grace, idle_timeout=1,
                              cluster_snapshot_bytes=16384)
            break
        except dobj.Error:
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)
    ns = rt.bind("LIST", ListObj)
    emit({"started": name, "node": rt.node_id, "t": time.time(), "lang": "py"})
    stop = asyncio.Event()
    rng = random.Random(seed)
    tasks = [asyncio.ensure_future(client(rt, ns, name, c, random.Random(rng.random()), stop))
             for c in range(int(os.environ.get("CLIENTS", "0")))]
    tasks.append(asyncio.ensure_future(watch(rt, name, stop)))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stop.set()
    await asyncio.gather(*tasks)
    emit({"stopped": name, "node": rt.node_id, "t": time.time()})
    rt.close()


if __name__ == "__main__":
    asyncio.run(main())
