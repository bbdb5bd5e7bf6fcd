"""One node of the fault test (tests/cluster/fault.py): a dobj runtime in
cluster mode serving the five list objects to the client processes
(tests/cluster/client.py), which call it through stubs.  It logs a JSON line
on stdout when it starts and a heartbeat every 0.25 s:

    {"hb": run name, "node": node_id, "t": time.monotonic()}

so that the check can tell a node paused past its lease came back as a new
node.  Runs until stdin closes.

    python node.py URL STORAGE NAME SEED
"""
import asyncio
import json
import os
import sys
import time

import dobj

OBJECTS = 5


class ListObj(dobj.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.inc = os.urandom(6).hex()  # this incarnation

    async def append(self, token):
        items = self.ctx.storage.get("items") or []
        items.append(token)
        self.ctx.storage.put("items", items)
        return self.inc, items, time.monotonic()

    async def read(self):
        return self.inc, self.ctx.storage.get("items") or [], time.monotonic()


def emit(rec):
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


async def main():
    url, storage, name, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for attempt in range(40):  # PostgreSQL may be down (a fault) when the node starts
        try:
            rt = dobj.Runtime(storage=storage, cluster=url, node_addr="127.0.0.1:0",
                              cluster_ttl=1.5, cluster_grace=0.5, idle_timeout=1)
            break
        except dobj.Error:
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)
    ns = rt.bind("LIST", ListObj)
    emit({"started": name, "node": rt.node_id, "t": time.monotonic()})
    del ns, seed

    async def heartbeat():
        while True:
            emit({"hb": name, "node": rt.node_id, "t": time.monotonic()})
            await asyncio.sleep(0.25)
    hb = asyncio.ensure_future(heartbeat())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    hb.cancel()
    emit({"stopped": name, "node": rt.node_id, "t": time.monotonic()})
    rt.close()


if __name__ == "__main__":
    asyncio.run(main())
