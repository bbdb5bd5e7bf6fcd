import gc
import os

import pytest

import dobj

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_golden():
    """workerd's ID vectors, (unique key, name, id), from tests/vectors/ids.tsv:
    the file every suite reads."""
    path = os.path.join(HERE, "..", "vectors", "ids.tsv")
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    assert rows and all(len(r) == 3 and len(r[2]) == 64 for r in rows), path
    return [tuple(r) for r in rows]


GOLDEN = _load_golden()


def golden_id(unique_key, name):
    """The vector of one key and name (tests build on a few of them)."""
    return next(h for k, n, h in GOLDEN if k == unique_key and n == name)


class Counter(dobj.DurableObject):
    constructed = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).constructed += 1
        self.n = 0

    async def fetch(self, request):
        n = self.n
        self.n += 1
        return dobj.Response(str(n))


@pytest.fixture
def rt():
    runtime = dobj.Runtime(env={"GREETING": "hi"})
    yield runtime
    runtime.close()
    gc.collect()


@pytest.fixture
def counter(rt):
    Counter.constructed = 0
    return rt.bind("COUNTER", Counter, unique_key="test-unique-key")


@pytest.fixture(scope="module")
def pg():
    """A throw-away PostgreSQL for a module's cluster tests
    (tests/python/pg_util.py), stopped after its last test."""
    from pg_util import PgServer

    server = PgServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["native", "uvicorn"])
def servers(request):
    """dobj dev servers for the tests over HTTP (tests/python/devserver.py):
    servers(cwd, *args) starts one; every one is stopped after the test.
    Each test runs on both servers `dobj dev` has: the core's (the default)
    and uvicorn (`--server uvicorn`)."""
    from devserver import DevServer

    started = []

    def start(cwd, *args, **kw):
        s = DevServer(cwd, *args, server=request.param, **kw)
        started.append(s)
        return s

    start.kind = request.param

    try:
        yield start
    finally:
        for s in started:
            s.kill()


@pytest.fixture(params=["native", "uvicorn", "lua"])
def chat_server(request, tmp_path):
    """examples/chat on every server: the Python room under `dobj dev` (the
    core's server and uvicorn), the Lua room under `dobj-lua dev` (skipped
    when it is not built).  chat_server(*args) starts it with its state in
    tmp_path; it is stopped after the test."""
    from devserver import CHAT, DOBJ_LUA, DevServer

    lua = request.param == "lua"
    if lua and not DOBJ_LUA.exists():
        pytest.skip("dobj-lua dev is not built (make build)")
    started = []

    def start(*args):
        project = CHAT / ("lua" if lua else "python") / "wrangler.toml"
        s = DevServer(tmp_path, "--config", str(project), "--persist-to", str(tmp_path / "state"),
                      *args, lua=lua, server=None if lua else request.param)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            s.kill()
