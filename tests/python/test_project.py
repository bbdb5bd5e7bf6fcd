"""dobj.Runtime.from_config: a Workers project (config + entry module) loaded
as a runtime, on examples/workers/python-counter (copied to a temporary
folder, so its state and .dev.vars stay there) and small projects written
by the tests."""
import asyncio
import gc
import logging
import os
import shutil
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

import dobj
from project_util import COUNTER_ENTRY_OF, write_project as _write_project

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "workers" / "python-counter"


@pytest.fixture(autouse=True)
def _no_cloudflare_env(monkeypatch):
    monkeypatch.delenv("CLOUDFLARE_ENV", raising=False)


@pytest.fixture
def project(tmp_path):
    d = tmp_path / "python-counter"
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns(".wrangler", "__pycache__"))
    return d


def write_project(d, entry, config=None):
    """project_util's, as worker "t" (the state folders the tests name)."""
    return _write_project(d, entry, config, name="t")


def close(rt):
    rt.close()
    gc.collect()


# ------------------------------------------------------------------ the example

async def test_example_entry_forwards_to_the_object_named_by_the_path(project):
    rt = dobj.Runtime.from_config(project)
    try:
        assert isinstance(rt, dobj.Runtime) and isinstance(rt, dobj.ProjectRuntime)
        got = [(await rt.default.fetch(f"https://example.com/{n}")).text() for n in "aaba"]
        assert got == ["1", "2", "1", "3"]
        resp = await rt.default.fetch(dobj.Request("https://example.com/b", method="POST", body="x"))
        assert (resp.status, resp.text(), resp.headers["content-type"]) == (200, "2", "text/plain")
        # The entry reached the namespace the config bound, with its unique key.
        ns = rt.env.COUNTER
        assert ns.unique_key == "python-counter-Counter"
        assert rt.config.bindings[0].unique_key == ns.unique_key
        assert await ns.get_by_name("a").fetch("https://x/") is not None
    finally:
        close(rt)


async def test_env_has_vars_and_dev_vars_secrets(project):
    (project / ".dev.vars").write_text('SECRET="s3cret"\nGREETING=overridden\n')
    rt = dobj.Runtime.from_config(project / "wrangler.toml")
    try:
        assert rt.env.SECRET == "s3cret"
        assert rt.env["GREETING"] == "overridden"  # .dev.vars wins over vars
        assert isinstance(rt.env.COUNTER, dobj.Namespace)
        assert sorted(rt.env) == ["COUNTER", "GREETING", "SECRET"]
    finally:
        close(rt)


async def test_environment_picks_its_own_vars_bindings_and_state(project):
    top = dobj.Runtime.from_config(project)
    try:
        assert (await top.default.fetch("https://x/a")).text() == "1"
        assert top.env.GREETING == "hello"
    finally:
        close(top)
    rt = dobj.Runtime.from_config(project, env="staging")
    try:
        assert rt.config.env == "staging" and rt.env.GREETING == "hello from staging"
        assert rt.env.COUNTER.unique_key == "python-counter-staging-Counter"
        # Another worker name, so another state folder: its own counts.
        assert (await rt.default.fetch("https://x/a")).text() == "1"
    finally:
        close(rt)


async def test_environment_from_cloudflare_env(project, monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_ENV", "staging")
    rt = dobj.Runtime.from_config(project)
    try:
        assert rt.env.GREETING == "hello from staging"
    finally:
        close(rt)


async def test_state_persists_across_two_loads_in_the_config_folder(project, tmp_path):
    rt = dobj.Runtime.from_config(project)
    try:
        for _ in range(3):
            last = await rt.default.fetch("https://x/visits")
        assert last.text() == "3"
        folder = rt.config.bindings[0].storage_dir
    finally:
        close(rt)
        del rt
    assert folder == str(project / ".wrangler" / "state" / "v3" / "do" / "python-counter-Counter")
    assert any(f.endswith(".sqlite") and f != "metadata.sqlite" for f in os.listdir(folder))
    rt = dobj.Runtime.from_config(project)
    try:
        assert (await rt.default.fetch("https://x/visits")).text() == "4"
    finally:
        close(rt)


async def test_persist_to_moves_the_state(project, tmp_path):
    rt = dobj.Runtime.from_config(project, persist_to=tmp_path / "state")
    try:
        assert (await rt.default.fetch("https://x/p")).text() == "1"
    finally:
        close(rt)
    assert os.path.isdir(tmp_path / "state" / "v3" / "do" / "python-counter-Counter")
    assert not (project / ".wrangler").exists()
    rt = dobj.Runtime.from_config(project, persist_to=tmp_path / "state")
    try:
        assert (await rt.default.fetch("https://x/p")).text() == "2"
    finally:
        close(rt)


async def test_runtime_options_pass_through(project):
    rt = dobj.Runtime.from_config(project, virtual_time=True, id_seed=7)
    try:
        assert rt.virtual_time
        a = rt.env.COUNTER.new_unique_id()
    finally:
        close(rt)
    rt = dobj.Runtime.from_config(project, id_seed=7)
    try:
        assert rt.env.COUNTER.new_unique_id() == a
    finally:
        close(rt)
    with pytest.raises(TypeError, match="persist_to"):
        dobj.Runtime.from_config(project, storage="elsewhere")


# ------------------------------------------------------------------ entry styles

async def test_module_level_fetch_gets_request_env_and_ctx(tmp_path):
    d = write_project(tmp_path / "p", """\
        import dobj

        class Counter(dobj.DurableObject):
            async def fetch(self, request):
                return dobj.Response("counter")

        seen = []

        async def fetch(request, env, ctx):
            seen.append((request.method, request.url, request.body, type(ctx).__name__))
            inner = await env.COUNTER.get_by_name("x").fetch("https://c/")
            return dobj.Response(inner.text() + " " + env.GREETING, status=201)
        """, config=textwrap.dedent("""\
        main = "src/entry.py"
        vars = { GREETING = "hi" }
        [[durable_objects.bindings]]
        name = "COUNTER"
        class_name = "Counter"
        """))
    rt = dobj.Runtime.from_config(d)
    try:
        resp = await rt.default.fetch("https://w/path", method="PUT", body=b"\x00\xff")
        assert (resp.status, resp.text()) == (201, "counter hi")
        assert rt.module.seen == [("PUT", "https://w/path", b"\x00\xff", "ExecutionContext")]
        assert rt.config.worker_name == "worker"  # no name: Miniflare's "worker"
        assert rt.env.COUNTER.unique_key == "worker-Counter"
    finally:
        close(rt)


async def test_default_class_gets_a_new_instance_with_ctx_and_env_per_request(tmp_path):
    d = write_project(tmp_path / "p", """\
        import dobj

        class Counter(dobj.DurableObject):
            pass

        made = []

        class Default(dobj.WorkerEntrypoint):
            def __init__(self, ctx, env):
                super().__init__(ctx, env)
                made.append(self)

            def fetch(self, request):  # a plain def works too
                return dobj.Response.json({"ctx": type(self.ctx).__name__,
                                           "has_counter": "COUNTER" in self.env})
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        assert (await rt.default.fetch("https://w/")).json() == {"ctx": "ExecutionContext",
                                                                 "has_counter": True}
        await rt.default.fetch("https://w/")
        made = rt.module.made
        assert len(made) == 2 and made[0] is not made[1] and made[0].env is rt.env
    finally:
        close(rt)


async def test_wait_until_runs_after_the_response_and_drain_waits_for_it(tmp_path, caplog):
    d = write_project(tmp_path / "p", """\
        import asyncio
        import dobj

        class Counter(dobj.DurableObject):
            async def fetch(self, request):
                n = (self.ctx.storage.get("n") or 0) + 1
                self.ctx.storage.put("n", n)
                return dobj.Response(str(n))

        async def fetch(request, env, ctx):
            async def later():
                await asyncio.sleep(0.01)
                await env.COUNTER.get_by_name("bg").fetch("https://c/")
            async def fails():
                raise RuntimeError("background boom")
            ctx.wait_until(later())
            ctx.wait_until(fails())
            return dobj.Response("sent")
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        with caplog.at_level(logging.ERROR, logger="dobj"):
            assert (await rt.default.fetch("https://w/")).text() == "sent"
            await rt.drain()
        assert (await rt.env.COUNTER.get_by_name("bg").fetch("https://c/")).text() == "2"
        assert any("ctx.wait_until() of the entry failed: background boom" in r.getMessage()
                   for r in caplog.records)
    finally:
        close(rt)


async def test_entry_wait_until_is_core_background_work_drained_within_a_limit(tmp_path, caplog):
    # The entry's ctx.wait_until is the core's background work without an
    # object: counted, drained by drain_background (what the dev server does
    # on shutdown), its failure logged once, never raised.
    d = write_project(tmp_path / "p", """\
        import asyncio
        import dobj

        class Counter(dobj.DurableObject):
            async def fetch(self, request):
                return dobj.Response("c")

        release = asyncio.Event()

        async def fetch(request, env, ctx):
            async def held():
                await release.wait()
            async def fails():
                raise RuntimeError("entry boom")
            ctx.wait_until(held())
            ctx.wait_until(fails())
            return dobj.Response("sent")
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        with caplog.at_level(logging.ERROR, logger="dobj"):
            assert (await rt.default.fetch("https://w/")).text() == "sent"
            with pytest.raises(TimeoutError, match=r"drain_background\(\): 1 ctx.wait_until\(\) "
                               "tasks still pending"):
                await rt.drain_background(0.05)
            rt.module.release.set()
            await rt.drain_background(5)
        assert [r.getMessage() for r in caplog.records
                if "ctx.wait_until() of the entry" in r.getMessage()] == \
            ["ctx.wait_until() of the entry failed: entry boom"]
        with pytest.raises(TypeError, match="wait_until\\(\\) needs an awaitable, got int"):
            dobj.ExecutionContext(weakref.ref(rt)).wait_until(3)
    finally:
        close(rt)
    work = asyncio.sleep(0)
    with pytest.raises(dobj.Error, match="closed"):
        dobj.ExecutionContext(weakref.ref(rt)).wait_until(work)
    work.close()


async def test_entry_without_fetch_and_bad_results(tmp_path):
    d = write_project(tmp_path / "p", """\
        class Counter:
            def __init__(self, ctx, env):
                pass
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        with pytest.raises(dobj.Error, match="does not export a fetch"):
            await rt.default.fetch("https://w/")
    finally:
        close(rt)
    d = write_project(tmp_path / "q", """\
        class Counter:
            pass
        async def fetch(request, env, ctx):
            return 42
        """)
    rt = dobj.Runtime.from_config(d)
    try:
        with pytest.raises(TypeError, match=r"fetch\(\) returned int; it must return a dobj.Response"):
            await rt.default.fetch("https://w/")
    finally:
        close(rt)


# ------------------------------------------------------------------ import path

async def test_main_imports_its_siblings_without_leaking_modules(tmp_path):
    """Each project's helper.py is its own: the folder is on sys.path only
    while main is imported, and the project's modules leave sys.modules."""
    entry = """\
        import dobj
        import helper

        class Counter(dobj.DurableObject):
            pass

        async def fetch(request, env, ctx):
            return dobj.Response(helper.WHO)
        """
    a = write_project(tmp_path / "a", entry)
    b = write_project(tmp_path / "b", entry)
    (a / "src" / "helper.py").write_text('WHO = "a"\n')
    (b / "src" / "helper.py").write_text('WHO = "b"\n')
    path_before, modules_before = list(sys.path), set(sys.modules)
    ra = dobj.Runtime.from_config(a)
    rb = dobj.Runtime.from_config(b)
    try:
        assert (await ra.default.fetch("https://w/")).text() == "a"
        assert (await rb.default.fetch("https://w/")).text() == "b"
        assert sys.path == path_before
        assert "helper" not in sys.modules
        assert ra.module.__name__ != rb.module.__name__
        assert not {n for n in set(sys.modules) - modules_before if n.startswith("_dobj_main")}
    finally:
        close(ra)
        close(rb)


# ------------------------------------------------------------------ errors

def test_missing_class_names_the_binding_and_main(tmp_path):
    d = write_project(tmp_path / "p", "class Other:\n    pass\n")
    with pytest.raises(dobj.ConfigError, match=r"binding COUNTER: class Counter is not defined "
                                               r"in main .*src/entry\.py"):
        dobj.Runtime.from_config(d)


def test_class_name_that_is_not_a_class(tmp_path):
    d = write_project(tmp_path / "p", "def Counter(ctx, env):\n    pass\n")
    with pytest.raises(dobj.ConfigError, match=r"binding COUNTER: Counter in main .* is a "
                                               r"function, not a class"):
        dobj.Runtime.from_config(d)


def test_missing_main(tmp_path):
    d = write_project(tmp_path / "p", None)
    with pytest.raises(dobj.ConfigError, match=r"wrangler\.toml: main .*src/entry\.py does not exist"):
        dobj.Runtime.from_config(d)
    d = write_project(tmp_path / "q", None, config='name = "x"\n')
    with pytest.raises(dobj.ConfigError, match=r"wrangler\.toml: main is not set"):
        dobj.Runtime.from_config(d)
    d = write_project(tmp_path / "r", None, config='main = "src/index.js"\n')
    with pytest.raises(dobj.ConfigError, match=r"index\.js is not a Python module"):
        dobj.Runtime.from_config(d)


def test_bad_main_raises_config_error_with_the_cause(tmp_path):
    d = write_project(tmp_path / "p", "def broken(:\n")
    with pytest.raises(dobj.ConfigError, match=r"main .*entry\.py failed to import: SyntaxError") as e:
        dobj.Runtime.from_config(d)
    assert isinstance(e.value.__cause__, SyntaxError)
    d = write_project(tmp_path / "q", "raise RuntimeError('at import')\n")
    with pytest.raises(dobj.ConfigError, match="RuntimeError: at import"):
        dobj.Runtime.from_config(d)
    assert not [p for p in sys.path if str(tmp_path) in p]


def test_bad_config_is_the_loaders_error(tmp_path):
    with pytest.raises(dobj.ConfigError):
        dobj.Runtime.from_config(tmp_path / "nowhere" / "wrangler.toml")
    d = write_project(tmp_path / "p", None, config='name = "x\n')
    with pytest.raises(dobj.ConfigError, match=r"wrangler\.toml:1:"):
        dobj.Runtime.from_config(d)


def test_config_warnings_are_logged(tmp_path, caplog):
    d = write_project(tmp_path / "p", "class Counter:\n    pass\n", config=textwrap.dedent("""\
        main = "src/entry.py"
        [[durable_objects.bindings]]
        name = "COUNTER"
        class_name = "Counter"
        """))
    with caplog.at_level(logging.WARNING, logger="dobj"):
        rt = dobj.Runtime.from_config(d)
    close(rt)
    assert rt.config.warnings
    assert [r.getMessage() for r in caplog.records if r.name == "dobj"] == list(rt.config.warnings)


def test_a_project_runtime_is_collected(tmp_path):
    import weakref
    d = write_project(tmp_path / "p", "class Counter:\n    pass\nasync def fetch(r, e, c):\n    pass\n")
    rt = dobj.Runtime.from_config(d)
    ref = weakref.ref(rt)
    del rt
    gc.collect()
    assert ref() is None


# ------------------------------------------------------------------ renamed classes

async def test_renamed_class_keeps_its_objects_and_moves_its_folder(tmp_path):
    d = write_project(tmp_path / "p", COUNTER_ENTRY_OF.format(cls="Counter"))
    rt = dobj.Runtime.from_config(d)
    try:
        assert (await rt.default.fetch("https://x/")).text() == "1"
        old_id = rt.env.COUNTER.id_from_name("a").to_string()
    finally:
        close(rt)
    state = d / ".wrangler" / "state" / "v3" / "do"
    assert (state / "t-Counter" / f"{old_id}.sqlite").exists()
    # A migration renames Counter to Tally (the entry's class is renamed too).
    write_project(d, COUNTER_ENTRY_OF.format(cls="Tally"), textwrap.dedent("""\
        name = "t"
        main = "src/entry.py"
        [[durable_objects.bindings]]
        name = "COUNTER"
        class_name = "Tally"
        [[migrations]]
        tag = "v1"
        new_sqlite_classes = ["Counter"]
        [[migrations]]
        tag = "v2"
        renamed_classes = [{ from = "Counter", to = "Tally" }]
        """))
    cfg = dobj.load_config(d)
    assert (cfg.bindings[0].unique_key, cfg.bindings[0].id_key) == ("t-Tally", "t-Counter")
    assert (state / "t-Counter").exists()  # reading the config moves nothing
    rt = dobj.Runtime.from_config(d)
    try:
        assert rt.env.COUNTER.unique_key == "t-Tally"
        assert rt.env.COUNTER.id_from_name("a").to_string() == old_id  # same IDs
        assert (await rt.default.fetch("https://x/")).text() == "2"  # same data
    finally:
        close(rt)
    assert not (state / "t-Counter").exists()
    assert (state / "t-Tally" / f"{old_id}.sqlite").exists()
    # Both folders present: the user decides; nothing is moved or opened.
    (state / "t-Counter").mkdir()
    with pytest.raises(dobj.ConfigError, match="both its folder .*t-Tally and the folder of its earlier name"):
        dobj.Runtime.from_config(d)
    assert (state / "t-Tally" / f"{old_id}.sqlite").exists()
