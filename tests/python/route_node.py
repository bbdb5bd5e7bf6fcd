"""A node process for tests/python/test_cluster_route.py: a dobj runtime in
cluster mode serving the ROUTE namespace, driven by JSON commands on stdin
(one a line, each run as its own task, so a slow call does not hold the
next) and answering JSON lines on stdout:

    {"tag": t, "op": "call", "name": NAME, "method": M, "args": [...]}
    {"tag": t, "op": "fetch", "name": NAME, "path": "/x"}
      -> {"tag": t, "ok": value} or {"tag": t, "err": str, "type": class name,
         "remote": bool, "retryable": bool}

    python route_node.py URL STORAGE [NODE_ADDR]   (no NODE_ADDR: a client)
It prints {"ready": node_id, "addr": node_addr} first; it exits when stdin closes.
"""
import asyncio
import json
import os
import sys

import dobj


class Box(dobj.DurableObject):
    async def add(self, n=1):
        v = (self.ctx.storage.get("n") or 0) + n
        self.ctx.storage.put("n", v)
        return v

    async def whoami(self):
        return os.getpid()

    async def boom(self, msg):
        raise ValueError(msg)

    async def custom(self):
        class Nope(Exception):
            pass
        raise Nope("custom failure")

    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return "slept"

    async def echo(self, *args, **kwargs):
        return [list(args), kwargs]

    async def call(self, name, method, *args):
        """Call another object of the namespace from inside this one."""
        return await getattr(self.env.ROUTE.get_by_name(name), method)(*args)

    async def fetch(self, request):
        return dobj.Response(f"{request.method} {request.url} {request.body.decode()}",
                             status=201, headers={"x-node": str(os.getpid())})


def out(rec):
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


async def run(ns, cmd):
    tag = cmd.get("tag")
    stub = ns.get_by_name(cmd["name"])
    try:
        if cmd["op"] == "fetch":
            r = await stub.fetch(dobj.Request("http://do" + cmd.get("path", "/"), method="POST",
                                              body=cmd.get("body", "")))
            out({"tag": tag, "ok": [r.status, r.headers.get("x-node"), r.text()]})
        else:
            out({"tag": tag, "ok": await getattr(stub, cmd["method"])(*cmd.get("args", []),
                                                                    **cmd.get("kwargs", {}))})
    except Exception as e:  # noqa: BLE001 - every failure is reported
        out({"tag": tag, "err": str(e), "type": type(e).__name__,
             "remote": getattr(e, "remote", None), "retryable": getattr(e, "retryable", None)})


async def main():
    url, storage = sys.argv[1], sys.argv[2]
    addr = sys.argv[3] if len(sys.argv) > 3 else None
    rt = dobj.Runtime(storage=storage, cluster=url, node_addr=addr, cluster_ttl=1.5,
                      cluster_grace=0.5, idle_timeout=float(os.environ.get("IDLE", "30")))
    ns = rt.bind("ROUTE", Box)
    out({"ready": rt.node_id, "addr": rt.node_addr})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()
    while line := await reader.readline():
        t = asyncio.ensure_future(run(ns, json.loads(line)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    rt.close()


if __name__ == "__main__":
    asyncio.run(main())
