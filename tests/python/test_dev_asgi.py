"""dobj.asgi in a real Starlette app served by a real uvicorn, in the test's
own event loop (which therefore drives the runtime too); requests are sent
over HTTP from a thread (http.client), so the loop keeps serving."""
import asyncio
import contextlib
import http.client
import io
import json
import socket

import pytest

starlette = pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402

import dobj  # noqa: E402
from dobj.asgi import App, with_env  # noqa: E402
from devserver import copy_example, write_project  # noqa: E402


@pytest.fixture(autouse=True)
def _no_cloudflare_env(monkeypatch):
    monkeypatch.delenv("CLOUDFLARE_ENV", raising=False)


@contextlib.asynccontextmanager
async def serving(app, lifespan="off"):
    """uvicorn serving app on a free port of 127.0.0.1, in this loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    config = uvicorn.Config(app, lifespan=lifespan, log_config=None, access_log=False,
                            log_level="warning", ws="none")
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # the test process keeps its handlers
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        # The socket listens already: a client's connection waits in its
        # backlog until the server has started and accepts it.
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 30)
        finally:
            sock.close()


def _get(port, path, method="GET", body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("content-type"), r.read()
    finally:
        conn.close()


async def get(port, path, **kw):
    return await asyncio.to_thread(_get, port, path, **kw)


async def test_starlette_routes_see_env_and_a_mounted_entry_sees_the_full_url(tmp_path):
    project = copy_example(tmp_path)
    rt = dobj.Runtime.from_config(project)
    try:
        async def count(request):
            env = request.scope["env"]
            stub = env.COUNTER.get_by_name(request.path_params["name"])
            resp = await stub.fetch("https://x/")
            return PlainTextResponse(f"{env.GREETING} {resp.text()}")

        app = with_env(Starlette(routes=[
            Route("/api/{name}", count),
            Mount("/worker", app=App(rt)),
        ]), rt)
        async with serving(app) as port:
            assert await get(port, "/api/x") == (200, "text/plain; charset=utf-8", b"hello 1")
            assert await get(port, "/api/x") == (200, "text/plain; charset=utf-8", b"hello 2")
            # The mounted entry gets the URL the client sent, mount prefix and
            # all: the example's entry counts per path, "worker/x" here.
            assert (await get(port, "/worker/x?q=1"))[2] == b"1"
            assert (await get(port, "/worker/x", method="POST", body=b"b"))[2] == b"2"
            # Both reach the same objects: this is the Counter the route used.
            assert (await rt.env.COUNTER.get_by_name("x").fetch("https://x/")).text() == "3"
    finally:
        rt.close()


async def test_with_env_loads_the_project_at_startup_and_closes_it_at_shutdown(tmp_path):
    project = write_project(tmp_path / "p", """\
        import dobj

        class Counter(dobj.DurableObject):
            async def fetch(self, request):
                n = (self.ctx.storage.get("n") or 0) + 1
                self.ctx.storage.put("n", n)
                return dobj.Response(str(n))
        """)
    events = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("app startup")
        yield
        events.append("app shutdown")

    async def count(request):
        r = await request.scope["env"].COUNTER.get_by_name("n").fetch("https://x/")
        return JSONResponse({"n": int(r.text()), "env": sorted(request.scope["env"])})

    app = with_env(Starlette(routes=[Route("/", count)], lifespan=lifespan), config=project)
    async with serving(app, lifespan="on") as port:
        status, _, body = await get(port, "/")
        assert (status, json.loads(body)) == (200, {"n": 1, "env": ["COUNTER", "GREETING"]})
        rt = app.runtime()
        assert rt is not None and events == ["app startup"]
    assert events == ["app startup", "app shutdown"]
    assert app.runtime() is None
    with pytest.raises(dobj.Error, match="closed"):
        rt.env.COUNTER.get_by_name("n")
    # What it wrote is in the project's state folder: a new load sees it.
    rt = dobj.Runtime.from_config(project)
    try:
        assert (await rt.env.COUNTER.get_by_name("n").fetch("https://x/")).text() == "2"
    finally:
        rt.close()


async def test_app_with_config_loads_on_the_first_request_without_lifespan(tmp_path):
    app = App(config=copy_example(tmp_path))
    assert app.runtime is None
    async with serving(app, lifespan="off") as port:
        assert (await get(port, "/a"))[2] == b"1"
        assert app.runtime is not None and (await get(port, "/a"))[2] == b"2"
    app.runtime.close()


async def test_app_lifespan_reports_a_bad_config(tmp_path):
    (tmp_path / "wrangler.toml").write_text('name = "t"\nmain = "nope.py"\n')
    app = App(config=tmp_path)
    sent = []
    inbox = [{"type": "lifespan.startup"}]

    async def receive():
        return inbox.pop(0)

    async def send(message):
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "nope.py does not exist" in sent[0]["message"]


def test_app_takes_a_runtime_or_a_config_not_both(tmp_path):
    rt = dobj.Runtime()
    try:
        with pytest.raises(TypeError, match="not both"):
            App(rt, config=tmp_path)
    finally:
        rt.close()


STARLETTE_ENTRY = """\
    import contextlib

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    import dobj
    import dobj.asgi


    class Counter(dobj.DurableObject):
        async def fetch(self, request):
            n = (self.ctx.storage.get("n") or 0) + 1
            self.ctx.storage.put("n", n)
            return dobj.Response(str(n))


    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.started = "yes"
        yield


    async def count(request):
        env = request.scope["env"]
        r = await env.COUNTER.get_by_name(request.path_params["name"]).fetch("https://x/")
        return JSONResponse({"n": int(r.text()), "greeting": env.GREETING,
                             "started": request.app.state.started,
                             "url": str(request.url), "q": request.query_params.getlist("q")})


    async def echo(request):
        body = await request.body()
        return Response(body, status_code=201, headers={"x-len": str(len(body)),
                                                   "x-h": request.headers.get("x-h", "")},
                        media_type="application/octet-stream")


    app = Starlette(routes=[Route("/count/{name}", count), Route("/echo", echo, methods=["POST"])],
                    lifespan=lifespan)


    class Default(dobj.WorkerEntrypoint):
        async def fetch(self, request):
            return await dobj.asgi.fetch(app, request, self.env)
"""


async def test_fetch_runs_a_starlette_app_inside_the_entry_like_python_workers(tmp_path):
    project = write_project(tmp_path / "p", STARLETTE_ENTRY)
    rt = dobj.Runtime.from_config(project)
    try:
        r = await rt.default.fetch("http://w.test/count/a?q=1&q=2")
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {"n": 1, "greeting": "hello", "started": "yes",
                            "url": "http://w.test/count/a?q=1&q=2", "q": ["1", "2"]}
        assert (await rt.default.fetch("http://w.test/count/a")).json()["n"] == 2
        data = bytes(range(256)) * 10
        r = await rt.default.fetch("http://w.test/echo", method="POST", body=data,
                                   headers=[("x-h", "1"), ("x-h", "2")])
        assert (r.status, r.body, r.headers["x-len"], r.headers["x-h"]) == \
            (201, data, str(len(data)), "1, 2")
        assert (await rt.default.fetch("http://w.test/nope")).status == 404
    finally:
        rt.close()


def test_fetch_through_dobj_dev_over_http(tmp_path):
    from devserver import DevServer
    s = DevServer(write_project(tmp_path / "p", STARLETTE_ENTRY))
    try:
        status, ctype, body = _get(s.port, "/count/b?q=x")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body)["url"] == f"http://127.0.0.1:{s.port}/count/b?q=x"
        assert json.loads(body)["n"] == 1
        status, _, body = _get(s.port, "/echo", method="POST", body=b"\x00\x01")
        assert (status, body) == (201, b"\x00\x01")
        assert s.stop() == 0
        assert "Task was destroyed" not in s.output() and "Traceback" not in s.output()
    finally:
        s.kill()


async def test_a_chunked_body_past_the_cores_limit_is_refused_before_the_entry(tmp_path):
    # Driven as a server would (one 1 MiB chunk object, sent again and
    # again: no 100 MiB in memory).
    project = copy_example(tmp_path)
    rt = dobj.Runtime.from_config(project)
    try:
        app = App(rt)
        chunk = b"x" * (1 << 20)
        received = 0
        sent = []

        async def receive():
            nonlocal received
            received += 1
            return {"type": "http.request", "body": chunk, "more_body": received < 200}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "scheme": "http", "path": "/a",
                 "raw_path": b"/a", "query_string": b"", "server": ("127.0.0.1", 1),
                 "headers": [(b"host", b"h"), (b"transfer-encoding", b"chunked")]}
        await app(scope, receive, send)
        assert received == 101  # stopped at the first chunk past 100 MiB
        assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
        assert sent[1]["body"] == b"request body larger than 100 MiB\n"
        # The Counter named "a" was never called.
        assert (await rt.default.fetch("http://h/a")).text() == "1"
    finally:
        rt.close()


async def test_an_exception_whose_str_raises_is_still_a_500_page_and_a_log_line(tmp_path):
    # str(exc) is user code: it raised inside the adapter's error handling,
    # so uvicorn answered its own bare 500 and the request had no log line.
    project = write_project(tmp_path / "p", """\
        import dobj

        class Counter(dobj.DurableObject):
            pass

        class Hostile(Exception):
            def __str__(self):
                raise RuntimeError("str() of this error raises")

        class Default(dobj.WorkerEntrypoint):
            async def fetch(self, request):
                raise Hostile()
        """)
    rt = dobj.Runtime.from_config(project)
    try:
        log = io.StringIO()
        app = App(rt, log=log)
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "scheme": "http", "path": "/a",
                 "raw_path": b"/a", "query_string": b"", "server": ("127.0.0.1", 1),
                 "headers": [(b"host", b"h")]}
        await app(scope, receive, send)
        assert sent[0]["status"] == 500
        assert sent[1]["body"].startswith(b"Hostile: <exception str() failed>\n")
        assert "[dobj:err] GET http://h/a: Hostile: <exception str() failed>" in log.getvalue()
        assert "[dobj] GET /a 500 Internal Server Error" in log.getvalue()
    finally:
        rt.close()


@pytest.mark.parametrize("when", ["after the accept", "while accepting"])
async def test_a_websocket_whose_connection_task_is_cancelled_is_closed_for_its_object(tmp_path, when):
    # A server (or a wrapper's timeout) that cancels the connection's task
    # without a websocket.disconnect: the socket stayed in the object's list
    # for good (its memory too, each time); the object hears 1006.
    project = write_project(tmp_path / "p", """\
        import dobj

        class Counter(dobj.DurableObject):
            async def fetch(self, request):
                if request.url.endswith("/count"):
                    closes = self.ctx.storage.get("closes") or []
                    return dobj.Response(f"{len(self.ctx.get_web_sockets())} {closes}")
                client, server = dobj.WebSocketPair()
                self.ctx.accept_web_socket(server)
                return dobj.Response(None, status=101, web_socket=client)

            async def web_socket_close(self, ws, code, reason, was_clean):
                self.ctx.storage.put("closes", (self.ctx.storage.get("closes") or []) + [[code, was_clean]])

        class Default(dobj.WorkerEntrypoint):
            async def fetch(self, request):
                return await self.env.COUNTER.get_by_name("c").fetch(request)
        """)
    rt = dobj.Runtime.from_config(project)
    try:
        app = App(rt)
        accepted = asyncio.Event()
        first = [{"type": "websocket.connect"}]

        async def receive():
            if first:
                return first.pop()
            await asyncio.get_running_loop().create_future()  # the client says nothing

        async def send(message):
            if message["type"] == "websocket.accept":
                accepted.set()
                if when == "while accepting":
                    await asyncio.get_running_loop().create_future()

        scope = {"type": "websocket", "scheme": "ws", "path": "/ws", "raw_path": b"/ws",
                 "query_string": b"", "server": ("127.0.0.1", 1), "headers": [(b"host", b"h")]}
        task = asyncio.ensure_future(app(scope, receive, send))
        await accepted.wait()
        await asyncio.sleep(0)
        assert (await rt.default.fetch("http://h/count")).text() == "1 []"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await rt.default.fetch("http://h/count")).text() == "0 [[1006, False]]"
    finally:
        rt.close()
