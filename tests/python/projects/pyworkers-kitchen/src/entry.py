"""Every Python Workers name dobj maps, written as for Cloudflare.

GET  /call/<object>/<method>       calls the RPC method, answers its JSON result
POST /call/<object>/<method>       the same with a JSON array of arguments
ANY  /fetch/<object>/...           forwards the request to the object's fetch
"""
import json
from urllib.parse import urlparse

from pyodide.ffi import to_js
from workers import DurableObject, Response, WorkerEntrypoint, handler

import helper


class Kitchen(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.loaded = None
        self.events = []
        # Called without await: nothing reaches the object before it ends.
        ctx.blockConcurrencyWhile(self.load)

    async def load(self):
        self.events.append("load")
        self.loaded = await self.ctx.storage.get("boot") or 0
        await self.ctx.storage.put("boot", self.loaded + 1)

    async def boot(self):
        return {"loaded": self.loaded, "events": self.events}

    async def ids(self):
        ns = self.env.KITCHEN
        a = ns.idFromName("a")
        again = ns.idFromString(a.toString())
        unique = ns.newUniqueId()
        try:
            ns.jurisdiction("eu")
            eu = None
        except Exception as e:
            eu = str(e)
        try:
            ns.idFromString("nope")
            bad = None
        except ValueError as e:
            bad = str(e)
        return {
            "a": a.toString(), "a_name": a.name, "again_name": again.name,
            "equals": a.equals(again), "eq": a == again, "str": str(a) == a.toString(),
            "unique_len": len(unique.toString()), "unique_name": unique.name,
            "unique_differs": not unique.equals(a),
            "me": self.ctx.id.toString(), "my_name": self.ctx.id.name,
            "stub_id": ns.get(a).id.equals(a), "by_name": ns.getByName("a").id.toString(),
            "no_jurisdiction": ns.jurisdiction(None).idFromName("a").toString(),
            "eu": eu, "bad": bad, "greeting": self.env.GREETING,
            "limit": self.env.LIMITS.max,
        }

    async def kv(self):
        s = self.ctx.storage
        await s.put("k1", "v1")
        await s.put({"k2": 2, "k3": [3], "other": {"x": 1}})
        one = await s.get("k1")
        missing = await s.get("nope")
        many = await s.get(["k1", "k2", "nope"])
        listed = await s.list({"prefix": "k"})
        window = await s.list({"start": "k2", "end": "k3"})
        after = await s.list(startAfter="k1", limit=1)
        backwards = await s.list({"reverse": True, "limit": 2, "allowConcurrency": True})
        other = await s.get("other")
        deleted = await s.delete("k1")
        deleted_many = await s.delete(["k2", "k3", "nope"])
        try:
            await s.list({"limit": 0})
            limit_error = None
        except ValueError as e:
            limit_error = str(e)
        try:
            await s.list({"limt": 1})
            typo = None
        except TypeError as e:
            typo = str(e)
        await s.deleteAll()
        return {
            "one": one, "missing": missing, "many": dict(many.items()),
            "many_size": many.size, "many_has": many.has("k2"),
            "listed": list(listed), "window": list(window), "after": list(after),
            "backwards": [k for k, _ in backwards.items()],
            "other_attr": other.x, "other_py": other.to_py(),
            "deleted": deleted, "deleted_many": deleted_many,
            "limit_error": limit_error, "typo": typo,
            "after_delete_all": len(await s.list()),
        }

    async def txn(self):
        s = self.ctx.storage
        await s.put("n", 1)

        async def fail(txn):
            await txn.put("n", 2)
            raise RuntimeError("boom")

        try:
            await s.transaction(fail)
            raised = None
        except RuntimeError as e:
            raised = str(e)
        after_fail = await s.get("n")

        async def roll(txn):
            await txn.put("n", 3)
            txn.rollback()
            return "rolled"

        rolled = await s.transaction(roll)
        after_roll = await s.get("n")

        async def ok(txn):
            await txn.put("n", await txn.get("n") + 10)
            return "ok"

        done = await s.transaction(ok)
        return {"raised": raised, "after_fail": after_fail, "rolled": rolled,
                "after_roll": after_roll, "done": done, "final": await s.get("n")}

    async def sql(self):
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name TEXT)")
        ins = sql.exec("INSERT INTO t (name) VALUES (?), (?)", "ada", "bob")
        cur = sql.exec("SELECT id, name FROM t ORDER BY id")
        rows = cur.toArray()
        one = sql.exec("SELECT name AS greeting FROM t WHERE id = ?", 1).one()
        raw = list(sql.exec("SELECT id, name FROM t ORDER BY id").raw())
        it = [row.name for row in sql.exec("SELECT name FROM t ORDER BY id")]
        try:
            sql.exec("SELECT * FROM t").one()
            many = None
        except Exception as e:
            many = str(e)
        return {
            "rows": [{"id": r.id, "name": r["name"]} for r in rows],
            "columns": list(cur.columnNames), "rowsRead": cur.rowsRead,
            "rowsWritten": ins.rowsWritten, "one": one.greeting, "raw": raw, "iter": it,
            "many": many, "size_positive": sql.databaseSize > 0,
        }

    async def ffi(self):
        value = {"list": [1, 2, {"deep": True}], "bytes": b"\x00\xff", "text": "t"}
        await self.ctx.storage.put("v", to_js(value))
        back = await self.ctx.storage.get("v")
        py = back.to_py()
        return {"equal": py == value, "types": [type(py).__name__, type(py["list"]).__name__],
                "list_py": back["list"].to_py(), "bytes": list(back["bytes"])}

    async def arm(self, at):
        await self.ctx.storage.setAlarm(at)
        return await self.ctx.storage.getAlarm()

    async def disarm(self):
        await self.ctx.storage.deleteAlarm()
        return await self.ctx.storage.getAlarm()

    async def alarm(self, alarm_info):
        runs = await self.ctx.storage.get("alarm_runs") or []
        runs.append({"retryCount": alarm_info.retryCount, "isRetry": alarm_info.isRetry})
        await self.ctx.storage.put("alarm_runs", runs)
        if len(runs) == 1:
            raise RuntimeError("first run fails")

    async def alarm_runs(self):
        return await self.ctx.storage.get("alarm_runs")

    async def later(self):
        async def work():
            await self.ctx.storage.put("later", "done")
        self.ctx.waitUntil(work())
        await self.ctx.storage.sync()
        return "scheduled"

    async def read(self, key):
        return await self.ctx.storage.get(key)

    async def stop(self):
        self.ctx.abort("stopped on purpose")

    async def fetch(self, request):
        body = await request.bytes()
        info = {"method": request.method, "url": request.url,
                "header": request.headers["x-test"], "length": len(body)}
        if request.method == "POST":
            info["text"] = await request.text()
            info["json"] = await request.json()
        return Response.json(info, status=201, status_text="Made", headers={"x-from": "do"})


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = urlparse(request.url).path.strip("/").split("/")
        stub = self.env.KITCHEN.getByName(parts[1])
        if parts[0] == "fetch":
            resp = await stub.fetch(request)
            got = await resp.json()
            return Response.json({"status": resp.status, "status_text": resp.status_text,
                                  "x_from": resp.headers.get("x-from"), "got": got,
                                  "text_len": len(await resp.text()),
                                  "bytes_len": len(await resp.bytes())})
        args = await request.json() if request.method == "POST" else []
        result = await getattr(stub, parts[2])(*args)
        return Response(json.dumps(helper.jsonable(result)),
                        headers={"content-type": "application/json"})


@handler
async def unused(request, env, ctx):
    return Response("never the entry: Default is")
