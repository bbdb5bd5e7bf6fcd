"""One client process of the fault test (tests/cluster/fault.py): a dobj
runtime in cluster mode without node_addr (a pure client: it serves no object,
docs/cluster.md, "Routing"), running two clients of node.py's workload that
call the five list objects through stubs wherever they live, each operation
logged as node.py describes.  Runs until stdin closes.

    python client.py URL STORAGE NAME SEED [TTL GRACE]
"""
import asyncio
import random
import sys

import dobj
from node import ListObj, client


async def main():
    url, storage, name, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ttl, grace = (float(sys.argv[5]), float(sys.argv[6])) if len(sys.argv) > 6 else (1.5, 0.5)
    for attempt in range(40):  # PostgreSQL may be down (a fault) when the client starts
        try:
            rt = dobj.Runtime(storage=storage, cluster=url, cluster_ttl=ttl, cluster_grace=grace)
            break
        except dobj.Error:
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)
    ns = rt.bind("LIST", ListObj)
    stop = asyncio.Event()
    rng = random.Random(seed)
    tasks = [asyncio.ensure_future(client(rt, ns, name, c, random.Random(rng.random()), stop))
             for c in range(2)]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stop.set()
    await asyncio.gather(*tasks)
    rt.close()


if __name__ == "__main__":
    asyncio.run(main())
