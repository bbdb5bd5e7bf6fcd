"""Python Workers code run unchanged (dobj.workers as `workers`, and
`pyodide.ffi`): projects written as for Cloudflare, loaded with
Runtime.from_config and driven through rt.default.fetch."""
import gc
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

import dobj
import dobj.workers
from project_util import write_project as _write_project

HERE = Path(__file__).resolve().parent
KITCHEN = HERE / "projects" / "pyworkers-kitchen"
EXAMPLE = HERE.parent.parent / "examples" / "workers" / "python-workers-counter"
SHIM_NAMES = ("workers", "pyodide", "js", "asgi")


@pytest.fixture(autouse=True)
def _no_cloudflare_env(monkeypatch):
    monkeypatch.delenv("CLOUDFLARE_ENV", raising=False)


def copy(src, tmp_path):
    d = tmp_path / src.name
    shutil.copytree(src, d, ignore=shutil.ignore_patterns(".wrangler", "__pycache__"))
    return d


def write_project(d, entry, flags=("python_workers",), main="src/entry.py"):
    return _write_project(d, entry, flags=flags, main=main)


def shims_loaded():
    return sorted(n for n in sys.modules if n.partition(".")[0] in SHIM_NAMES)


def close(rt):
    rt.close()
    gc.collect()


@pytest.fixture
def kitchen(tmp_path):
    rt = dobj.Runtime.from_config(copy(KITCHEN, tmp_path), virtual_time=True)
    yield rt
    close(rt)


async def call(rt, obj, method, *args):
    if args:
        resp = await rt.default.fetch(f"https://k/call/{obj}/{method}", method="POST",
                                      body=json.dumps(args))
    else:
        resp = await rt.default.fetch(f"https://k/call/{obj}/{method}")
    assert resp.status == 200, resp.text()
    return resp.json()


# ------------------------------------------------------------------ the example

async def test_example_counter_runs_unchanged_and_persists(tmp_path):
    project = copy(EXAMPLE, tmp_path)
    rt = dobj.Runtime.from_config(project)
    try:
        got = [(await rt.default.fetch(f"https://x{p}")).text()
               for p in ("/increment?name=a", "/increment?name=a", "/decrement?name=b", "/?name=a")]
        assert got == ["Durable Object 'a' count: 1", "Durable Object 'a' count: 2",
                       "Durable Object 'b' count: -1", "Durable Object 'a' count: 2"]
        resp = await rt.default.fetch("https://x/")
        # dobj code gets a plain dobj.Response (text() without await).
        assert resp.status == 400 and type(resp) is dobj.Response
    finally:
        close(rt)
    # Nothing of the shims is left for other code: neither path nor modules.
    assert shims_loaded() == []
    assert not [p for p in sys.path if "_pyworkers" in p]
    rt = dobj.Runtime.from_config(project)  # blockConcurrencyWhile loads the count
    try:
        assert (await rt.default.fetch("https://x/increment?name=a")).text() == \
            "Durable Object 'a' count: 3"
    finally:
        close(rt)


# ------------------------------------------------------------- every mapped name

async def test_block_concurrency_while_without_await_in_init(tmp_path):
    project = copy(KITCHEN, tmp_path)
    rt = dobj.Runtime.from_config(project)
    try:
        assert await call(rt, "x", "boot") == {"loaded": 0, "events": ["load"]}
    finally:
        close(rt)
    rt = dobj.Runtime.from_config(project)
    try:
        assert await call(rt, "x", "boot") == {"loaded": 1, "events": ["load"]}
    finally:
        close(rt)


async def test_ids_namespaces_and_env(kitchen):
    got = await call(kitchen, "me", "ids")
    ns = kitchen.env.KITCHEN
    a = ns.id_from_name("a").to_string()
    assert got == {
        "a": a, "a_name": "a", "again_name": None, "equals": True, "eq": True, "str": True,
        "unique_len": 64, "unique_name": None, "unique_differs": True,
        "me": ns.id_from_name("me").to_string(), "my_name": "me",
        "stub_id": True, "by_name": a, "no_jurisdiction": a,
        "eu": "Jurisdiction restrictions are not implemented in workerd.",
        "bad": "Invalid Durable Object ID: must be 64 hex digits",
        "greeting": "hello", "limit": 3,
    }


async def test_storage_kv_awaited_with_javascript_options(kitchen):
    got = await call(kitchen, "kv", "kv")
    assert got == {
        "one": "v1", "missing": None, "many": {"k1": "v1", "k2": 2}, "many_size": 2,
        "many_has": True, "listed": ["k1", "k2", "k3"], "window": ["k2"], "after": ["k2"],
        "backwards": ["other", "k3"], "other_attr": 1, "other_py": {"x": 1},
        "deleted": True, "deleted_many": 2,
        "limit_error": "List limit must be positive.",
        "typo": "list() got an unknown option 'limt' (known: start, startAfter, end, prefix, "
                "reverse, limit, allowConcurrency, noCache)",
        "after_delete_all": 0,
    }


async def test_transaction_rolls_back_on_error_and_on_rollback(kitchen):
    assert await call(kitchen, "t", "txn") == {
        "raised": "boom", "after_fail": 1, "rolled": "rolled", "after_roll": 1,
        "done": "ok", "final": 11}


async def test_sql_cursor_has_the_javascript_properties(kitchen):
    got = await call(kitchen, "s", "sql")
    assert got == {
        "rows": [{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}],
        "columns": ["id", "name"], "rowsRead": 2, "rowsWritten": 2, "one": "ada",
        "raw": [[1, "ada"], [2, "bob"]], "iter": ["ada", "bob"],
        "many": "Expected exactly one result from SQL query, but got multiple results.",
        "size_positive": True,
    }


async def test_to_js_to_py_round_trip_through_storage(kitchen):
    assert await call(kitchen, "f", "ffi") == {
        "equal": True, "types": ["dict", "list"], "list_py": [1, 2, {"deep": True}],
        "bytes": [0, 255]}


async def test_alarm_gets_alarm_info_and_is_retried(kitchen):
    at = kitchen.now() + 60_000
    assert await call(kitchen, "al", "arm", at) == at
    assert await call(kitchen, "al", "disarm") is None
    await call(kitchen, "al", "arm", at)
    await kitchen.drain(timeout=10)
    assert await call(kitchen, "al", "alarm_runs") == [
        {"retryCount": 0, "isRetry": False}, {"retryCount": 1, "isRetry": True}]


async def test_wait_until_and_abort(kitchen):
    assert await call(kitchen, "w", "later") == "scheduled"
    await kitchen.drain(timeout=10)
    assert await call(kitchen, "w", "read", "later") == "done"
    with pytest.raises(dobj.Error, match="stopped on purpose"):
        await kitchen.default.fetch("https://k/call/w/stop")
    # A fresh instance answers afterwards (blockConcurrencyWhile ran again).
    assert (await call(kitchen, "w", "boot"))["events"] == ["load"]


async def test_request_and_response_bodies_are_awaited(kitchen):
    resp = await kitchen.default.fetch("https://k/fetch/r/path", method="POST",
                                       headers={"x-test": "yes"}, body='{"a": [1]}')
    got = {"method": "POST", "url": "https://k/fetch/r/path", "header": "yes",
           "length": 10, "text": '{"a": [1]}', "json": {"a": [1]}}
    n = len(json.dumps(got))
    assert resp.json() == {"status": 201, "status_text": "Made", "x_from": "do",
                           "text_len": n, "bytes_len": n, "got": got}
    resp = await kitchen.default.fetch("https://k/fetch/r/")
    assert resp.json()["got"] == {"method": "GET", "url": "https://k/fetch/r/",
                                  "header": None, "length": 0}


# ------------------------------------------------------------- import hygiene

async def test_import_js_is_a_clear_error(tmp_path):
    d = write_project(tmp_path / "usesjs", """\
        from js import Response
        class Counter: pass
        """)
    with pytest.raises(dobj.ConfigError) as err:
        dobj.Runtime.from_config(d)
    assert "failed to import: JavaScriptUnsupportedError: dobj runs Python Workers code " \
           "without JavaScript: the js module" in str(err.value)
    cause = err.value.__cause__
    assert isinstance(cause, dobj.workers.JavaScriptUnsupportedError)
    assert isinstance(cause, dobj.Error) and isinstance(cause, ImportError)
    assert shims_loaded() == []


async def test_without_the_flag_there_is_no_workers_module(tmp_path):
    d = write_project(tmp_path / "noflag", """\
        from workers import DurableObject
        class Counter(DurableObject): pass
        """, flags=())
    with pytest.raises(dobj.ConfigError, match="ModuleNotFoundError: No module named 'workers'"):
        dobj.Runtime.from_config(d)
    # dobj.workers is the same module under its package name, for any code.
    import dobj.workers as w
    assert w.Response is dobj.workers.Response


async def test_two_projects_in_one_process_flag_and_no_flag(tmp_path):
    flagged = dobj.Runtime.from_config(copy(EXAMPLE, tmp_path))
    try:
        plain = write_project(tmp_path / "plain", """\
            import dobj
            try:
                import workers
            except ImportError:
                workers = None
            try:
                import pyodide.ffi
            except ImportError:
                pyodide = None
            class Counter(dobj.DurableObject):
                def fetch(self, request):
                    return dobj.Response(f"{workers is None} {pyodide is None}")
            async def fetch(request, env, ctx):
                return await env.COUNTER.get_by_name("x").fetch(request)
            """, flags=())
        rt = dobj.Runtime.from_config(plain)
        try:
            assert (await rt.default.fetch("https://p/")).text() == "True True"
            assert (await flagged.default.fetch("https://x/increment?name=z")).text() == \
                "Durable Object 'z' count: 1"
        finally:
            close(rt)
        # A second flagged project gets the same classes (one dobj.workers).
        other = write_project(tmp_path / "other", """\
            from workers import DurableObject, Response
            from pyodide.ffi import to_js
            class Counter(DurableObject):
                async def fetch(self, request):
                    return Response(type(self).__mro__[1].__module__)
            async def fetch(request, env, ctx):
                return await env.COUNTER.getByName("x").fetch(request)
            """)
        rt = dobj.Runtime.from_config(other)
        try:
            assert (await rt.default.fetch("https://o/")).text() == "dobj.workers"
            assert rt.module.DurableObject is dobj.workers.DurableObject
            assert rt.module.to_js is dobj.workers.to_js
        finally:
            close(rt)
    finally:
        close(flagged)
    assert shims_loaded() == []
    assert not [p for p in sys.path if "_pyworkers" in p]


async def test_an_unrelated_workers_module_does_not_answer_and_is_kept(tmp_path, monkeypatch):
    import types
    fake = types.ModuleType("workers")
    monkeypatch.setitem(sys.modules, "workers", fake)
    rt = dobj.Runtime.from_config(copy(EXAMPLE, tmp_path))
    try:
        assert rt.module.DurableObject is dobj.workers.DurableObject
        assert (await rt.default.fetch("https://x/?name=q")).text() == "Durable Object 'q' count: 0"
    finally:
        close(rt)
    assert sys.modules["workers"] is fake


async def test_on_fetch_handler_entry_with_wrangler_jsonc(tmp_path):
    d = tmp_path / "onfetch"
    (d / "src").mkdir(parents=True)
    (d / "wrangler.jsonc").write_text("""{
        // Python Workers' handler style
        "name": "onfetch", "main": "src/entry.py",
        "compatibility_flags": ["python_workers"],
        "durable_objects": {"bindings": [{"name": "COUNTER", "class_name": "Counter"}]},
        "migrations": [{"tag": "v1", "new_sqlite_classes": ["Counter"]}],
    }""")
    (d / "src" / "entry.py").write_text(textwrap.dedent("""\
        from workers import DurableObject, Response, fetch, handler

        class Counter(DurableObject):
            async def add(self, n):
                total = (await self.ctx.storage.get("total") or 0) + n
                await self.ctx.storage.put("total", total)
                return total

        @handler
        async def on_fetch(request, env, ctx):
            ctx.waitUntil(env.COUNTER.getByName("bg").add(1))
            total = await env.COUNTER.getByName("x").add(int(await request.text()))
            return Response(str(total), headers={"x-method": request.method})
        """))
    rt = dobj.Runtime.from_config(d)
    try:
        assert rt.default.name == "on_fetch"
        r = await rt.default.fetch("https://o/", method="POST", body="5")
        assert (r.text(), r.headers["x-method"]) == ("5", "POST")
        r = await rt.default.fetch("https://o/", method="PUT", body="2")
        assert r.text() == "7"
        await rt.drain(timeout=10)
        assert await rt.env.COUNTER.get_by_name("bg").add(0) == 2
    finally:
        close(rt)


@pytest.fixture
def http_server():
    """A local HTTP server (127.0.0.1, a free port) answering /echo with what
    it got and anything else with 404; stopped after the test."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n)
            if self.path.startswith("/echo"):
                out = json.dumps({"method": self.command, "path": self.path,
                                  "x_a": self.headers.get("x-a"), "body": body.decode()}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("x-r", "1")
                self.send_header("x-r", "2")
            else:
                out = b"nothing here"
                self.send_response(404)
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_outbound_fetch_from_an_object(tmp_path, http_server):
    d = write_project(tmp_path / "outbound", """\
        import json
        from workers import DurableObject, Request, Response, fetch

        class Counter(DurableObject):
            async def fetch(self, request):
                base = await request.text()
                r = await fetch(base + "/echo?q=1", method="POST", body="hi",
                                headers={"x-a": "1"})
                got = await r.json()
                r2 = await fetch(Request(base + "/echo"))
                missing = await fetch(base + "/missing")
                try:
                    await fetch("http://127.0.0.1:1/")
                    refused = None
                except OSError as e:
                    refused = type(e).__name__
                return Response(json.dumps({
                    "got": got, "status": r.status, "x_r": r.headers.get("x-r"),
                    "get": (await r2.json())["method"], "missing": missing.status,
                    "missing_text": await missing.text(), "refused": refused}))

        async def on_fetch(request, env, ctx):
            return await env.COUNTER.getByName("x").fetch(request)
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        r = await rt.default.fetch("https://o/", method="POST", body=http_server)
        assert r.json() == {
            "got": {"method": "POST", "path": "/echo?q=1", "x_a": "1", "body": "hi"},
            "status": 200, "x_r": "1, 2", "get": "GET", "missing": 404,
            "missing_text": "nothing here", "refused": "URLError"}
    finally:
        close(rt)


# ------------------------------------------------------------- the mapping itself

def test_to_js_to_py_round_trips():
    from dobj.workers import JsArray, JsMap, JsObject, to_js, to_py
    value = {"d": {"x": [1, 2]}, "l": [1, (2, 3)], "b": bytearray(b"\x01"), "s": {1}}
    js = to_js(value)
    assert js == {"d": {"x": [1, 2]}, "l": [1, [2, 3]], "b": b"\x01", "s": {1}}
    # As Pyodide's default: dicts become Maps (stored and sent as a Map, str
    # keys too), with the Map methods; a dict_converter gives plain objects.
    assert type(js) is JsMap and type(js["d"]) is JsMap
    assert (js.size, js.has("d"), js.get("nope"), list(js)) == (4, True, None, ["d", "l", "b", "s"])
    assert js.set("n", 1) is js and js.delete("n") and not js.delete("n")
    assert dobj.deserialize(dobj.serialize(js))  # a Map with str keys reads back as a dict
    assert dobj.serialize(js)[2:3] == b";" and dobj.serialize(dict(js))[2:3] == b"o"
    assert type(to_js(value, dict_converter=dict)) is dict
    assert type(to_py(js)) is dict and type(to_py(js)["d"]) is dict
    assert type(js["b"]) is bytes and type(js["l"][1]) is list
    assert js["d"] is not value["d"]
    assert to_js(value, depth=1)["d"] is value["d"]
    shared = [1]
    cyc = [shared, shared]
    cyc.append(cyc)
    out = to_js(cyc)
    assert out[0] is out[1] and out[2] is out
    proxy = JsObject(a=JsArray([JsObject(b=b"\x00")]))
    plain = to_py(proxy)
    assert plain == {"a": [{"b": b"\x00"}]}
    assert type(plain) is dict and type(plain["a"]) is list and type(plain["a"][0]) is dict
    assert proxy.to_py() == plain and proxy.a[0].b == b"\x00"
    assert to_py(b"x") == b"x" and to_py(5) == 5


def test_response_constructors():
    from http import HTTPStatus
    from dobj.workers import Response
    r = Response("hi", status=HTTPStatus.CREATED, status_text="Created", headers={"a": "b"})
    assert (r.status, r.status_text, r.headers["a"], r.body) == (201, "Created", "b", b"hi")
    assert Response().status == 200 and Response(b"\x00").body == b"\x00"
    j = Response.json({"a": 1}, status=202)
    assert (j.status, j.headers["content-type"], j.body) == (202, "application/json", b'{"a": 1}')
    assert Response.from_json([1], headers={"content-type": "x/y"}).headers["content-type"] == "x/y"
    red = Response.redirect("https://e/", 301)
    assert (red.status, red.headers["location"]) == (301, "https://e/")
    with pytest.raises(ValueError, match="200 to 599"):
        Response("x", status=99)
    # statusText as workerd takes it (checked against workerd 2026-11-17).
    assert Response("x", status_text="caf\u00e9 \x7f \u65e5").status_text == "caf\u00e9 \x7f \u65e5"
    for bad in ("a\tb", "a\0b", "a\r\nSet-Cookie: x", "\x01"):
        with pytest.raises(TypeError, match="^Invalid statusText$") as e:
            Response("x", status_text=bad)
        assert type(e.value) is dobj.InvalidInputError
    with pytest.raises(TypeError, match="web_socket must be a dobj.WebSocket"):
        Response("x", web_socket=object())


async def test_ctx_names_dobj_does_not_have_say_so(tmp_path):
    d = write_project(tmp_path / "ctxnames", """\
        from workers import DurableObject, Response
        class Counter(DurableObject):
            async def fetch(self, request):
                try:
                    self.ctx.container
                except AttributeError as e:
                    return Response(str(e))
        async def fetch(request, env, ctx):
            return await env.COUNTER.getByName("x").fetch(request)
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        assert (await rt.default.fetch("https://c/")).text() == \
            "ctx.container is not supported by dobj " \
            "(docs/python.md, Python Workers compatibility)"
    finally:
        close(rt)


async def test_rpc_passes_ids_and_stubs_with_the_javascript_names(tmp_path):
    # As on Cloudflare: stubs and IDs travel as arguments and results, also
    # inside lists and dicts, and arrive with the JavaScript names.
    d = write_project(tmp_path / "rpcids", """\
        from workers import DurableObject, Response
        class Counter(DurableObject):
            async def me(self):
                return self.ctx.id.toString()
            async def same(self, id, stub=None):
                return id.equals(self.ctx.id) and stub.id.equals(self.ctx.id) and \\
                    await self.me() == id.toString()
            def plain(self, x):
                return x
            async def gives_id(self):
                return self.ctx.id
            async def gives_stub(self, name):
                return self.env.COUNTER.getByName(name)
            async def nested(self, box):
                peer = box["peers"][0]
                return {"id": self.ctx.id, "seen": [box["id"].toString(), await peer.me()],
                        "stubs": [peer, self.env.COUNTER.getByName("z")]}
        async def fetch(request, env, ctx):
            stub = env.COUNTER.getByName("x")
            ok = await stub.same(stub.id, stub=stub)
            got = await stub.gives_id()
            other = await stub.gives_stub("y")
            box = await stub.nested({"id": other.id, "peers": [other]})
            checks = [
                type(got).__name__, got.equals(stub.id), got.name,
                type(other).__name__, await other.me() == other.id.toString(),
                box["id"].equals(stub.id), box["seen"] == [other.id.toString()] * 2,
                [type(s).__name__ for s in box["stubs"]],
                await box["stubs"][1].me() == env.COUNTER.idFromName("z").toString(),
            ]
            return Response(f"{await stub.me() == stub.id.toString()} {ok} "
                            f"{await stub.plain([1])} {checks}")
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        assert (await rt.default.fetch("https://r/")).text() == (
            "True True [1] ['_Id', True, 'x', '_DOStub', True, True, True, "
            "['_DOStub', '_DOStub'], True]")
    finally:
        close(rt)


async def test_option_forms_transaction_sync_cursor_next_and_two_argument_on_fetch(tmp_path):
    d = write_project(tmp_path / "forms", """\
        import json
        from workers import DurableObject, Response

        class Counter(DurableObject):
            async def run(self):
                s = self.ctx.storage
                await s.put("a", 1, {"allowUnconfirmed": True})
                await s.put({"b": 2, "c": 3}, {"noCache": True})
                def bump():
                    s.transactionSync(lambda: None)  # nested: fine
                    return "sync"
                sync = s.transactionSync(bump)
                try:
                    s.transactionSync(lambda: (_ for _ in ()).throw(KeyError("x")))
                except KeyError:
                    pass
                cur = s.sql.exec("SELECT 1 AS one UNION ALL SELECT 2")
                steps = [cur.next(), cur.next(), cur.next()]
                unique = self.env.COUNTER.newUniqueId({"jurisdiction": None})
                stub = self.env.COUNTER.get(unique, {"locationHint": "enam"})
                named = self.env.COUNTER.getByName("n", locationHint="weur")
                s.kv.put("sync", {"x": [1]})
                synckv = [s.kv.get("sync").x, s.kv.get("nope"), s.kv.delete("nope"),
                          [list(p) for p in s.kv.list(prefix="sy")], s.kv.delete("sync")]
                return {
                    "synckv": synckv,
                    "kv": dict((await s.get(["a", "b", "c"])).items()),
                    "sync": sync, "steps": [st.to_py() for st in steps],
                    "stub": stub.id.equals(unique), "named": named.name,
                    "listed": list(await s.list(prefix="", limit=2, noCache=True)),
                }

        async def on_fetch(request, env):
            result = await env.COUNTER.getByName("f").run()
            return Response(json.dumps(result))
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        assert (await rt.default.fetch("https://f/")).json() == {
            "synckv": [[1], None, False, [["sync", {"x": [1]}]], True],
            "kv": {"a": 1, "b": 2, "c": 3}, "sync": "sync",
            "steps": [{"done": False, "value": {"one": 1}}, {"done": False, "value": {"one": 2}},
                      {"done": True}],
            "stub": True, "named": "n", "listed": ["a", "b"]}
    finally:
        close(rt)


async def test_asgi_fetch_runs_a_starlette_app_with_env_in_scope(tmp_path):
    pytest.importorskip("starlette")
    d = write_project(tmp_path / "asgiapp", """\
        import asgi
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.routing import Route
        from workers import DurableObject, WorkerEntrypoint

        class Counter(DurableObject):
            async def add(self, n):
                total = (await self.ctx.storage.get("t") or 0) + n
                await self.ctx.storage.put("t", total)
                return total

        async def add(request):
            env = request.scope["env"]
            n = int(await request.body())
            total = await env.COUNTER.getByName(request.path_params["name"]).add(n)
            return JSONResponse({"total": total, "q": request.query_params.get("q"),
                                 "h": request.headers.get("x-h")}, status_code=201)

        async def boom(request):
            raise RuntimeError("app failed")

        app = Starlette(routes=[Route("/add/{name}", add, methods=["POST"]),
                                Route("/boom", boom)])

        class Default(WorkerEntrypoint):
            async def fetch(self, request):
                return await asgi.fetch(app, request.js_object, self.env)
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        for want in (3, 7):
            r = await rt.default.fetch("https://a/add/x?q=1", method="POST",
                                       headers={"x-h": "v"}, body=str(4 if want == 7 else 3))
            assert (r.status, r.json(), r.headers["content-type"]) == \
                (201, {"total": want, "q": "1", "h": "v"}, "application/json")
        r = await rt.default.fetch("https://a/nowhere")
        assert (r.status, r.text()) == (404, "Not Found")
        with pytest.raises(RuntimeError, match="app failed"):
            await rt.default.fetch("https://a/boom")
    finally:
        close(rt)
    assert shims_loaded() == []


async def test_imports_inside_handlers_of_main_still_find_the_shims_and_only_there(tmp_path):
    d = write_project(tmp_path / "lazy", """\
        from workers import DurableObject

        class Counter(DurableObject):
            async def fetch(self, request):
                from pyodide.ffi import to_js
                import pyodide.ffi
                from pyodide import ffi
                import workers
                import asgi
                try:
                    import js  # noqa: F401
                    js_error = None
                except ImportError as e:
                    js_error = type(e).__name__
                same = to_js is pyodide.ffi.to_js is ffi.to_js
                return workers.Response(f"{same} {js_error} {asgi.fetch.__name__}")

        async def fetch(request, env, ctx):
            return await env.COUNTER.getByName("x").fetch(request)
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        for _ in range(2):  # the second time from the project's copies
            assert (await rt.default.fetch("https://l/")).text() == \
                "True JavaScriptUnsupportedError asgi_fetch"
            assert shims_loaded() == []
            assert not [p for p in sys.path if "_pyworkers" in p]
        # Other code still cannot import them.
        with pytest.raises(ModuleNotFoundError):
            import workers  # noqa: F401
    finally:
        close(rt)


async def test_dobj_workers_classes_bound_by_hand_and_collected_after_close():
    import weakref
    refs = []

    class Cyclic(dobj.workers.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            self.me = self
            self.storage = ctx.storage  # a wrapper kept by the instance
            refs.append(weakref.ref(self))

        async def fetch(self, request):
            await self.storage.put("n", (await self.storage.get("n") or 0) + 1)
            return dobj.workers.Response(str(await self.storage.get("n")))

    rt = dobj.Runtime()
    ns = rt.bind("CYC", Cyclic)
    r = await ns.get_by_name("a").fetch("https://x/")
    assert (type(r), r.text()) == (dobj.Response, "1")
    assert (await ns.get_by_name("a").fetch("https://x/")).text() == "2"
    rt.close()
    del ns, rt, r
    gc.collect()
    assert len(refs) == 1 and refs[0]() is None


async def test_status_text_travels_with_the_response_and_get_all_lists_each_cookie(tmp_path):
    d = write_project(tmp_path / "statustext", """\
        from workers import DurableObject, Request, Response
        class Counter(DurableObject):
            async def fetch(self, request):
                h = request.headers
                return Response(f"{h.get_all('set-cookie')} {h.get_all('Set-Cookie')} "
                                f"{h.get_all('x-a')} {h.get_all('x', 'none')}",
                                status=418, status_text="I'm a teapot, really")
        async def fetch(request, env, ctx):
            req = Request("https://s/", headers=[("set-cookie", "a=1; Path=/"),
                                                 ("set-cookie", "b=2, c"),
                                                 ("x-a", "1"), ("x-a", "2")])
            r = await env.COUNTER.getByName("x").fetch(req)
            return Response(f"{r.status} {r.status_text!r} {await r.text()}")
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        assert (await rt.default.fetch("https://s/")).text() == (
            "418 \"I'm a teapot, really\" ['a=1; Path=/', 'b=2, c'] "
            "['a=1; Path=/', 'b=2, c'] ['1, 2'] none")
        # dobj code sees it too; a plain dobj.Response keeps its reason phrase.
        r = await rt.env.COUNTER.get_by_name("x").fetch("https://s/")
        assert (r.status_text, dobj.Response("x", status=404).status_text) == \
            ("I'm a teapot, really", "Not Found")
    finally:
        close(rt)


def test_request_headers_read_like_http_message():
    from dobj.workers import MessageHeaders, Request
    r = Request("https://x/", method="POST", headers=[("X-A", "1"), ("x-a", "2")], body="b")
    h = r.headers
    assert type(h) is MessageHeaders and h is r.headers
    assert (h["x-a"], h["X-A"], h["missing"], h.get_all("x-a"), h.get_all("nope", [])) == \
        ("1, 2", "1, 2", None, ["1, 2"], [])
    assert dict(h.items()) == {"x-a": "1, 2"} and "X-a" in h
    adopted = Request._adopt(dobj.Request("https://y/"))
    assert adopted.headers["anything"] is None and len(adopted.headers) == 0


async def test_cloudflare_changelog_example_sync_fetch_no_super_and_forwarded_response(tmp_path):
    # Cloudflare's "Durable Objects are now supported in Python Workers"
    # example (with `self.env` where it says `env`).
    d = write_project(tmp_path / "hello", """\
        from workers import DurableObject, Response, WorkerEntrypoint
        from urllib.parse import urlparse

        class Counter(DurableObject):
            def __init__(self, ctx, env):
                self.ctx = ctx
                self.env = env

            def fetch(self, request):
                result = self.ctx.storage.sql.exec("SELECT 'Hello, World!' as greeting").one()
                return Response(result.greeting)

        class Default(WorkerEntrypoint):
            async def fetch(self, request):
                url = urlparse(request.url)
                id = self.env.COUNTER.idFromName(url.path)
                stub = self.env.COUNTER.get(id)
                greeting = await stub.fetch(request.url)
                return greeting
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        r = await rt.default.fetch("https://h/some/path")
        assert (type(r), r.status, r.text()) == (dobj.Response, 200, "Hello, World!")
    finally:
        close(rt)


async def test_unsupported_workers_names_say_so(tmp_path):
    d = write_project(tmp_path / "formdata", """\
        from workers import DurableObject, FormData
        class Counter(DurableObject): pass
        """)
    with pytest.raises(dobj.ConfigError) as err:
        dobj.Runtime.from_config(d)
    assert "UnsupportedError: workers.FormData is not supported by dobj" in str(err.value)
    assert isinstance(err.value.__cause__, dobj.workers.UnsupportedError)
    assert isinstance(err.value.__cause__, ImportError)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        dobj.workers.nothing
    assert dobj.workers.Context is not None


def test_rpc_conversions_are_identity_and_fetch_response_is_the_base():
    from dobj.workers import FetchResponse, Response, handler, python_from_rpc, python_to_rpc
    value = {"a": [1, b"x"]}
    assert python_to_rpc(value) is value and python_from_rpc(value) is value
    assert issubclass(Response, FetchResponse) and issubclass(FetchResponse, dobj.Response)

    def f():
        pass
    assert handler(f) is f
    plain = dobj.Response("x", status=202, headers={"a": "b"})
    adopted = FetchResponse._adopt(plain)
    assert (type(adopted), adopted.status, adopted.headers["a"], adopted.status_text) == \
        (FetchResponse, 202, "b", "")
    clone = adopted.clone()
    assert clone is not adopted and clone.body == b"x" and clone.headers == adopted.headers
