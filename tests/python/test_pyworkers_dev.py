"""Python Workers projects (the python_workers flag) served by `dobj dev`
and driven over real HTTP: the example, the kitchen project that uses every
mapped name, a Starlette app through asgi.fetch, and `import js`."""
import json
import textwrap
from pathlib import Path

import pytest

from devserver import copy_example, http_request as request

HERE = Path(__file__).resolve().parent
KITCHEN = HERE / "projects" / "pyworkers-kitchen"
EXAMPLE = HERE.parent.parent / "examples" / "workers" / "python-workers-counter"


def call(port, obj, method, *args):
    if args:
        status, _, body = request(port, f"/call/{obj}/{method}", "POST", body=json.dumps(args))
    else:
        status, _, body = request(port, f"/call/{obj}/{method}")
    assert status == 200, body
    return json.loads(body)


def test_example_counter_over_http_persists_across_a_restart(tmp_path, servers):
    project = copy_example(tmp_path, EXAMPLE)
    s = servers(project)
    got = [request(s.port, p)[2] for p in ("/increment?name=a", "/increment?name=a",
                                            "/decrement?name=b", "/?name=a")]
    assert got == [b"Durable Object 'a' count: 1", b"Durable Object 'a' count: 2",
                   b"Durable Object 'b' count: -1", b"Durable Object 'a' count: 2"]
    status, _, body = request(s.port, "/")
    assert status == 400 and body.startswith(b"Select a Durable Object")
    assert s.stop() == 0
    again = servers(project)
    assert request(again.port, "/increment?name=a")[2] == b"Durable Object 'a' count: 3"
    assert (project / ".wrangler" / "state" / "v3" / "do" /
            "python-workers-counter-Counter").is_dir()
    assert again.stop() == 0
    assert "Traceback" not in again.output()


def test_kitchen_project_over_http(tmp_path, servers):
    s = servers(copy_example(tmp_path, KITCHEN))
    assert call(s.port, "x", "boot") == {"loaded": 0, "events": ["load"]}
    ids = call(s.port, "me", "ids")
    assert (ids["my_name"], ids["a_name"], ids["equals"], ids["greeting"], ids["limit"]) == \
        ("me", "a", True, "hello", 3)
    assert call(s.port, "t", "txn")["final"] == 11
    kv = call(s.port, "kv", "kv")
    assert (kv["listed"], kv["backwards"], kv["other_py"]) == (["k1", "k2", "k3"],
                                                                ["other", "k3"], {"x": 1})
    assert call(s.port, "s", "sql")["rows"] == [{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}]
    assert call(s.port, "f", "ffi")["equal"] is True
    status, headers, body = request(s.port, "/fetch/r/p?q=1", "POST",
                                    headers={"x-test": "yes"}, body=b'{"a": [1]}')
    got = json.loads(body)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert got["status"] == 201 and got["x_from"] == "do"
    assert got["got"] == {"method": "POST", "url": f"http://127.0.0.1:{s.port}/fetch/r/p?q=1",
                          "header": "yes", "length": 10, "text": '{"a": [1]}',
                          "json": {"a": [1]}}
    assert s.stop() == 0
    assert "Traceback" not in s.output()


def test_a_starlette_app_through_asgi_fetch_over_http(tmp_path, servers):
    pytest.importorskip("starlette")
    d = tmp_path / "asgiapp"
    (d / "src").mkdir(parents=True)
    (d / "wrangler.toml").write_text(textwrap.dedent("""\
        name = "asgiapp"
        main = "src/entry.py"
        compatibility_flags = ["python_workers"]
        [vars]
        MESSAGE = "from vars"
        """))
    (d / "src" / "entry.py").write_text(textwrap.dedent("""\
        import asgi
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route
        from workers import WorkerEntrypoint

        async def env(request):
            return JSONResponse({"message": request.scope["env"].MESSAGE,
                                 "path": request.url.path})

        app = Starlette(routes=[Route("/env", env)])

        class Default(WorkerEntrypoint):
            async def fetch(self, request):
                return await asgi.fetch(app, request.js_object, self.env)
        """))
    s = servers(d)
    status, _, body = request(s.port, "/env")
    assert (status, json.loads(body)) == (200, {"message": "from vars", "path": "/env"})
    assert request(s.port, "/missing")[0] == 404
    assert s.stop() == 0


def test_import_js_stops_dobj_dev_with_the_clear_error(tmp_path, servers):
    d = tmp_path / "usesjs"
    (d / "src").mkdir(parents=True)
    (d / "wrangler.toml").write_text('name = "j"\nmain = "src/entry.py"\n'
                                     'compatibility_flags = ["python_workers"]\n')
    (d / "src" / "entry.py").write_text("from js import Response\n")
    s = servers(d, ready=False)
    assert s.wait() == 1
    out = s.output()
    assert out.startswith("dobj dev: ")
    assert "JavaScriptUnsupportedError: dobj runs Python Workers code without JavaScript" in out
    assert "Traceback" not in out
