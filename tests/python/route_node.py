"""A node process for tests/python/test_cluster_route.py: a dobj runtime in
cluster mode serving the ROUTE namespace, driven by JSON commands on stdin
(one a line, each run as its own task, so a slow call does not hold the
next) and answering JSON lines on stdout:

    {"tag": t, "op": "call", "name": NAME, "method": M, "args": [...]}
    {"tag": t, "op": "fetch", "name": NAME, "path": "/x"}
      -> {"tag": t, "ok": value} or {"tag": t, "err": str, "type": class name,
         "remote": bool, "retryable": bool}

    python route_node.py URL STORAGE [NODE_ADDR]   (no NODE_ADDR: a client)
With EXTRA=1 in the environment it also serves the OTHER namespace; IDLE and
CALL_TIMEOUT (seconds) set the idle timeout and the cluster call timeout.
It prints {"ready": node_id, "addr": node_addr} first; it exits when stdin closes.
"""
import asyncio
import json
import os
import sys

import dobj


INSTANCES = [0]  # instances constructed in this process (hibernation shows as a new one)


class Box(dobj.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        INSTANCES[0] += 1

    async def add(self, n=1):
        v = (self.ctx.storage.get("n") or 0) + n
        self.ctx.storage.put("n", v)
        return v

    async def whoami(self):
        return os.getpid()

    async def boom(self, msg):
        raise ValueError(msg)

    async def missing(self, key):
        raise KeyError(key)

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

    async def use(self, stub, method, *args):
        """Call through a stub another object passed in."""
        return await getattr(stub, method)(*args)

    async def pass_stub(self, via, target, method, *args):
        """Hand object `via` a stub of object `target`; `via` calls through it."""
        ns = self.env.ROUTE
        return await ns.get_by_name(via).use(ns.get_by_name(target), method, *args)

    async def give(self, name):
        """A stub of object `name`, as a result."""
        return self.env.ROUTE.get_by_name(name)

    async def take(self, via, name, method, *args):
        """Ask object `via` for a stub of object `name`, then call through it here."""
        s = await self.env.ROUTE.get_by_name(via).give(name)
        return [type(s).__name__, s.name, await getattr(s, method)(*args)]

    async def take_latin1(self, via, name):
        """The same with a stub `via` makes of the name's Latin-1 bytes."""
        s = await self.env.ROUTE.get_by_name(via).give_latin1(name)
        return [type(s).__name__, s.name]

    async def id_trip(self, via, name):
        """IDs sent to object `via` and echoed back: the same IDs, of this namespace."""
        ns = self.env.ROUTE
        named, unique = ns.id_from_name(name), ns.new_unique_id()
        back = await ns.get_by_name(via).echo(named, {"u": unique})
        a, d = back[0] if isinstance(back[0], list) else back  # Python's echo, or Lua's
        return [type(a).__name__, a == named, a.name, d["u"] == unique, d["u"].name,
                type(ns.get(a)).__name__]

    async def pass_other(self, via):
        """Send object `via` a stub of the OTHER namespace (bound with EXTRA=1 only)."""
        return await self.env.ROUTE.get_by_name(via).echo(self.env.OTHER.get_by_name("x"))

    async def give_other(self):
        return self.env.OTHER.get_by_name("x")

    async def fetch(self, request):
        if request.headers.get("upgrade") == "websocket":
            if "slow" in request.url:  # answers after the caller's call timeout
                await asyncio.sleep(1)
            client, server = dobj.WebSocketPair()
            self.ctx.accept_web_socket(server, tags=[request.url.rsplit("=", 1)[-1]])
            server.serialize_attachment({"pid": os.getpid()})
            server.send(f"hello from {os.getpid()}")
            return dobj.Response(None, status=101, web_socket=client)
        return dobj.Response(f"{request.method} {request.url} {request.body.decode()}",
                             status=201, headers={"x-node": str(os.getpid())})


    async def web_socket_message(self, ws, message):
        if message == "who":
            ws.send(json.dumps([os.getpid(), self.ctx.get_tags(ws), ws.deserialize_attachment(),
                                len(self.ctx.get_web_sockets()), INSTANCES[0]]))
        elif message == "close":
            ws.close(4000, "bye")
        else:
            ws.send(f"echo:{message}")

    async def web_socket_close(self, ws, code, reason, was_clean):
        self.ctx.storage.put("closed", [code, reason, was_clean, len(self.ctx.get_web_sockets())])

    async def closed(self):
        return self.ctx.storage.get("closed")


def out(rec):
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


SOCKETS = {}


def ws_host(n):
    """Serve the client end of WebSocket `n` as a server would: what the
    object sends is printed as {"ws": n, "msg": m} / {"ws": n, "close": [code, reason]}."""
    return (lambda m: out({"ws": n, "msg": m if isinstance(m, str) else m.hex()}),
            lambda code, reason: out({"ws": n, "close": [code, reason]}))


async def run(ns, cmd):
    tag = cmd.get("tag")
    try:
        if cmd["op"] == "ws_send":
            SOCKETS[cmd["ws"]]._receive(cmd["msg"])
            return out({"tag": tag, "ok": True})
        if cmd["op"] == "ws_close":
            SOCKETS[cmd["ws"]]._peer_close(cmd["code"], cmd["reason"], True)
            return out({"tag": tag, "ok": True})
    except Exception as e:  # noqa: BLE001 - every failure is reported
        return out({"tag": tag, "err": str(e), "type": type(e).__name__})
    stub = ns.get_by_name(cmd["name"])
    try:
        if cmd["op"] == "ws_open":
            r = await stub.fetch(dobj.Request("http://do/ws?tag=" + cmd.get("ws_tag", "t"),
                                              headers={"upgrade": "websocket"}))
            if r.web_socket is not None:
                SOCKETS[cmd["ws"]] = r.web_socket
                r.web_socket._attach(*ws_host(cmd["ws"]))
            out({"tag": tag, "ok": r.status})
        elif cmd["op"] == "fetch":
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
    rt = dobj.Runtime(storage=storage, cluster=url, node_addr=addr, cluster_ttl=float(os.environ.get("TTL", "1.5")),
                      cluster_grace=0.5, idle_timeout=float(os.environ.get("IDLE", "30")),
                      cluster_call_timeout=float(os.environ.get("CALL_TIMEOUT", "30")))
    ns = rt.bind("ROUTE", Box)
    if os.environ.get("EXTRA"):
        rt.bind("OTHER", Box)  # a namespace other nodes may not have
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
