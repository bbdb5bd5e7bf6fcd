"""The pytest plugin, tested with pytest's own pytester: fixtures, helpers,
virtual time (alarms, retries, eviction and asyncio.sleep in order, no
wall-clock time), isolation between tests, xdist, and `-p no:dobj`."""
import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""

# Objects shared by the inner test files (a module of the pytester folder).
OBJECTS = '''
import asyncio
import dobj

LOG = []


def log(rt, what):
    LOG.append((what, round((rt.now() - START[0]) / 1000, 3)))


START = [0.0]


class Box(dobj.DurableObject):
    fail_alarms = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        if RT:
            log(RT[0], "construct")

    def put(self, key, value):
        self.ctx.storage.put(key, value)

    def get(self, key):
        return self.ctx.storage.get(key)

    def set_alarm_in(self, seconds):
        self.ctx.storage.set_alarm(RT[0].now() + seconds * 1000)

    def get_alarm(self):
        return self.ctx.storage.get_alarm()

    async def nap(self, seconds):
        await asyncio.sleep(seconds)
        log(RT[0], "woke")

    def boom(self):
        raise ValueError("kaput in the object")

    async def alarm(self, info):
        log(RT[0], f"alarm{info.retry_count}")
        if Box.fail_alarms > 0:
            Box.fail_alarms -= 1
            raise RuntimeError("alarm failed on purpose")


RT = []


def setup(rt):
    RT[:] = [rt]
    START[0] = rt.now()
    LOG.clear()
    Box.fail_alarms = 0
    return rt.bind("BOX", Box)
'''


@pytest.fixture
def tester(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(objects=OBJECTS)
    return pytester


def run(tester, *args):
    return tester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_helpers_in_plain_def_and_async_tests(tester):
    tester.makepyfile(test_helpers=textwrap.dedent('''
        import pytest
        import dobj
        from dobj import testing
        from objects import setup


        def test_plain_def(dobj_runtime):
            ns = setup(dobj_runtime)
            stub = ns.get_by_name("a")
            dobj_runtime.run(stub.put("k", 1))
            assert dobj_runtime.run_in_durable_object(stub, lambda inst, ctx: ctx.storage.get("k")) == 1
            assert dobj_runtime.list_durable_object_ids(ns) == [stub.id]
            assert dobj_runtime.evict(stub) is True
            assert dobj_runtime.evict(stub) is False
            assert testing.run(stub.get("k")) == 1          # a new instance, same data
            dobj_runtime.reset()
            assert dobj_runtime.list_durable_object_ids(ns) == []
            assert dobj_runtime.run(stub.get("k")) is None   # the stub still works: empty


        @pytest.mark.asyncio
        async def test_async(dobj_runtime):
            ns = setup(dobj_runtime)
            stub = ns.get_by_name("b")
            await stub.put("k", 2)

            async def read(inst, ctx):
                return inst.get("k"), str(ctx.id)

            assert await testing.run_in_durable_object(stub, read) == (2, str(stub.id))
            assert testing.list_durable_object_ids(ns) == [stub.id]
            assert testing.evict_all() == 1
            assert testing.abort_all() == 0           # nothing live
            await stub.get("k")
            assert testing.abort_all("stop") == 1
            with pytest.raises(dobj.Error, match="stop"):
                await stub.get("k")                    # the stub is broken, as after ctx.abort
            assert await ns.get_by_name("b").get("k") == 2
            testing.reset()
            assert await ns.get_by_name("b").get("k") is None
    '''))
    result = run(tester)
    result.assert_outcomes(passed=2)


def test_failing_test_shows_the_object_traceback_and_id(tester):
    tester.makepyfile(test_fail=textwrap.dedent('''
        import pytest
        from objects import setup


        @pytest.mark.asyncio
        async def test_remote_error(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("x")
            print("ID", stub.id)
            await stub.boom()


        def test_remote_error_in_run(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("y")
            dobj_runtime.run_in_durable_object(stub, lambda inst, ctx: inst.boom())
    '''))
    result = run(tester)
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    # The object's frame (its source line) and the error, for each test.
    assert out.count('raise ValueError("kaput in the object")') >= 2
    assert out.count("ValueError: kaput in the object") >= 2
    result.stdout.fnmatch_lines(["*ValueError raised in Durable Object [0-9a-f]*"])
    ids = [line.split()[-1] for line in out.splitlines()
           if "raised in Durable Object" in line]
    assert len(ids) >= 2 and all(len(i) == 64 for i in ids)
    assert "dobj: open at close" not in out  # no leak noise after a failure


def test_leaks_are_reported(tester):
    tester.makepyfile(test_leak=textwrap.dedent('''
        import asyncio
        import pytest
        from objects import setup


        def test_alarm_left(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("a")
            dobj_runtime.run(stub.set_alarm_in(60))


        @pytest.mark.asyncio
        async def test_call_left(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("b")
            asyncio.ensure_future(stub.nap(3600))
            await asyncio.sleep(0)


        @pytest.mark.dobj(leak_check=False)
        def test_opted_out(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("c")
            dobj_runtime.run(stub.set_alarm_in(60))
    '''))
    result = run(tester)
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines([
        "*dobj: open at close: 0 tasks, 1 alarm",
        "*  alarm on BOX [0-9a-f]* at +60000 ms",
    ])
    result.stdout.fnmatch_lines([
        "*dobj: open at close: 1 task, 0 alarms",
        "*  call nap() on BOX [0-9a-f]*",
    ])


def test_alarms_and_storage_never_leak_between_tests(tester):
    tester.makepyfile(test_isolation=textwrap.dedent('''
        import pytest
        import dobj
        from objects import LOG, setup


        @pytest.mark.dobj(leak_check=False)
        def test_1_sets_an_alarm_and_data(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("same")
            dobj_runtime.run(stub.put("k", "from test 1"))
            dobj_runtime.run(stub.set_alarm_in(1))


        def test_2_fails_with_an_alarm_set(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("same")
            dobj_runtime.run(stub.set_alarm_in(1))
            assert False, "failing on purpose"


        @pytest.mark.parametrize("storage", [
            "disk", pytest.param("memory", marks=pytest.mark.dobj(storage="memory"))])
        def test_3_sees_nothing(dobj_runtime, storage):
            ns = setup(dobj_runtime)
            stub = ns.get_by_name("same")
            assert dobj_runtime.list_durable_object_ids(ns) == []
            assert dobj_runtime.run(stub.get("k")) is None
            assert dobj_runtime.run(stub.get_alarm()) is None
            dobj_runtime.advance(3600)
            assert [w for w, _ in LOG if w.startswith("alarm")] == []
            for bad in (float("inf"), float("nan")):          # the core's rule
                with pytest.raises(dobj.Error, match="a delay must be a finite number"):
                    dobj_runtime.advance(bad)
            with pytest.raises(ValueError):
                dobj_runtime.advance(-1)
    '''))
    result = run(tester)
    result.assert_outcomes(passed=3, failed=1)


def test_advance_fires_sleep_eviction_and_alarms_in_order(tester):
    tester.makepyfile(test_order=textwrap.dedent('''
        import asyncio
        import time
        import pytest
        from objects import LOG, setup

        EXPECTED = [("construct", 0.0), ("woke", 2.0), ("construct", 5.0), ("alarm0", 5.0)]


        @pytest.mark.dobj(idle_timeout=1)
        def test_plain_def(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("o")
            dobj_runtime.run(stub.set_alarm_in(5))
            t0 = time.monotonic()

            async def start_nap():
                asyncio.ensure_future(stub.nap(2))
                await asyncio.sleep(0)

            dobj_runtime.run(start_nap())
            dobj_runtime.advance(10)
            assert LOG == EXPECTED
            assert dobj_runtime.live_objects("BOX") == 0    # evicted again at 6
            assert time.monotonic() - t0 < 2


        @pytest.mark.asyncio
        @pytest.mark.dobj(idle_timeout=1)
        async def test_asyncio(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("o")
            await stub.set_alarm_in(5)
            nap = asyncio.ensure_future(stub.nap(2))
            await dobj_runtime.advance(1.5)
            assert LOG == EXPECTED[:1] and not nap.done()
            await dobj_runtime.advance(8.5)
            assert LOG == EXPECTED and nap.done()


        @pytest.mark.anyio
        @pytest.mark.dobj(idle_timeout=1)
        async def test_anyio(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("o")
            await stub.set_alarm_in(5)
            nap = asyncio.ensure_future(stub.nap(2))
            await dobj_runtime.advance(10)
            assert LOG == EXPECTED and nap.done()


        @pytest.mark.asyncio
        async def test_sleeping_test_moves_virtual_time(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("s")
            t0 = time.monotonic()
            await stub.nap(3600)                 # an hour inside the object
            assert LOG[-1] == ("woke", 3600.0)
            assert time.monotonic() - t0 < 2


        @pytest.fixture
        def anyio_backend():
            return "asyncio"
    '''))
    result = run(tester)
    result.assert_outcomes(passed=4)


def test_alarm_with_retries_takes_no_wall_clock_time(tester):
    tester.makepyfile(test_retries=textwrap.dedent('''
        import time
        import pytest
        from objects import Box, LOG, setup


        @pytest.mark.asyncio
        async def test_retries(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("r")
            Box.fail_alarms = 2
            t0 = time.monotonic()
            await stub.set_alarm_in(30)
            await dobj_runtime.advance(30 + 2 * 1.25 + 4 * 1.25)
            runs = [(w, t) for w, t in LOG if w.startswith("alarm")]
            assert [w for w, _ in runs] == ["alarm0", "alarm1", "alarm2"]
            assert runs[0][1] == 30.0
            assert 2 <= runs[1][1] - runs[0][1] <= 2.5
            assert 4 <= runs[2][1] - runs[1][1] <= 5
            assert await stub.get_alarm() is None
            assert time.monotonic() - t0 < 2


        def test_run_alarm_now(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("r")
            assert dobj_runtime.run_durable_object_alarm(stub) is False
            dobj_runtime.run(stub.set_alarm_in(3600))
            Box.fail_alarms = 1
            with pytest.raises(RuntimeError, match="alarm failed on purpose"):
                dobj_runtime.run_durable_object_alarm(stub)   # ran at once, failed
            assert "(retry 1)" in dobj_runtime.leaks()
            dobj_runtime.advance(2.5)                           # the retry, 2 s later
            assert [w for w, _ in LOG if w.startswith("alarm")] == ["alarm0", "alarm1"]
            assert dobj_runtime.run_durable_object_alarm(stub) is False
    '''))
    result = run(tester)
    result.assert_outcomes(passed=2)


def test_xdist_runs_pass(tester):
    tests = "\n".join(textwrap.dedent(f'''
        def test_{i}(dobj_runtime):
            ns = setup(dobj_runtime)
            stub = ns.get_by_name("shared-name")
            assert dobj_runtime.run(stub.get("n")) is None
            dobj_runtime.run(stub.put("n", {i}))
            dobj_runtime.advance(20)
            assert dobj_runtime.list_durable_object_ids(ns) == [stub.id]
    ''') for i in range(8))
    tester.makepyfile(test_par="from objects import setup\n" + tests)
    result = run(tester, "-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=8)


def test_no_dobj_disables_the_plugin(tester):
    tester.makepyfile(test_off='''
        def test_uses_fixture(dobj_runtime):
            pass
    ''')
    result = run(tester, "-p", "no:dobj")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'dobj_runtime' not found*"])
    result = run(tester)
    result.assert_outcomes(passed=1)


def test_project_fixtures(tester):
    tester.makefile(".toml", wrangler=textwrap.dedent('''
        name = "t"
        main = "src/entry.py"
        compatibility_date = "2024-10-22"

        [vars]
        GREETING = "hello"

        [[durable_objects.bindings]]
        name = "COUNTER"
        class_name = "Counter"

        [env.staging]
        vars = { GREETING = "staging" }

        [[env.staging.durable_objects.bindings]]
        name = "COUNTER"
        class_name = "Counter"
    '''))
    tester.mkdir("src")
    tester.path.joinpath("src", "entry.py").write_text(textwrap.dedent('''
        import dobj

        class Counter(dobj.DurableObject):
            async def fetch(self, request):
                n = (self.ctx.storage.get("n") or 0) + 1
                self.ctx.storage.put("n", n)
                return dobj.Response(str(n))

        class Default(dobj.WorkerEntrypoint):
            async def fetch(self, request):
                if request.url.endswith("/greet"):
                    return dobj.Response(self.env.GREETING)
                return await self.env.COUNTER.get_by_name("c").fetch(request)
    '''))
    tester.mkdir("tests")
    tester.path.joinpath("tests", "test_project.py").write_text(textwrap.dedent('''
        import pytest
        from dobj import testing


        def test_fetch_plain(dobj_project, dobj_env):
            assert dobj_project.fetch("/").text() == "1"
            assert testing.fetch("https://example.com/").text() == "2"
            assert dobj_env.GREETING == dobj_project.fetch("/greet").text()
            assert len(dobj_project.list_durable_object_ids(dobj_env.COUNTER)) == 1


        @pytest.mark.asyncio
        async def test_fetch_async_is_isolated(dobj_project):
            assert (await dobj_project.fetch("/")).text() == "1"
    '''))
    result = run(tester)
    result.assert_outcomes(passed=2)
    result = run(tester, "--dobj-env", "staging", "-k", "plain")
    result.assert_outcomes(passed=1)
    result = run(tester, "--dobj-config", "wrangler.toml", "--dobj-env", "nope")
    result.assert_outcomes(errors=2)


def _docs_python_example():
    with open(ROOT / "docs" / "testing.md", encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Python: the pytest plugin"):]
    section = section[section.index("### A complete example"):]
    start = section.index("```python\n") + 10
    return section[start:section.index("\n```", start)] + "\n"


def test_docs_example_is_the_example_file_and_passes(tester):
    example = (ROOT / "examples" / "testing" / "test_reminder.py").read_text(encoding="utf-8")
    assert _docs_python_example() == example
    tester.makepyfile(test_reminder=example)
    result = run(tester)
    result.assert_outcomes(passed=2)


def test_auto_mode_and_a_loop_without_a_replaceable_clock(tester):
    """pytest-asyncio's auto mode (no marker); uvloop, whose clock cannot be
    replaced: advance still moves the core's timers (alarms, eviction)."""
    pytest.importorskip("uvloop")
    tester.makeini(INI.replace("strict", "auto"))
    tester.makepyfile(test_modes=textwrap.dedent('''
        import pytest
        from objects import LOG, setup


        async def test_auto_mode(dobj_runtime):
            stub = setup(dobj_runtime).get_by_name("a")
            await stub.set_alarm_in(5)
            await stub.nap(1)                      # asyncio.sleep on the virtual clock
            await dobj_runtime.advance(5)
            assert [w for w, _ in LOG] == ["construct", "woke", "alarm0"]
    '''))
    tester.makepyfile(test_uvloop=textwrap.dedent('''
        import asyncio
        import uvloop
        from objects import LOG, setup


        async def test_uvloop(dobj_runtime):
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
            stub = setup(dobj_runtime).get_by_name("u")
            await stub.set_alarm_in(5)
            await dobj_runtime.advance(5)
            assert [w for w, t in LOG] == ["construct", "alarm0"] and LOG[-1][1] == 5.0
    '''))
    run(tester, "test_modes.py").assert_outcomes(passed=1)
    tester.makeconftest(textwrap.dedent('''
        import pytest
        import uvloop

        @pytest.fixture(scope="session")
        def event_loop_policy():
            return uvloop.EventLoopPolicy()
    '''))
    run(tester, "test_uvloop.py").assert_outcomes(passed=1)


def test_advance_far_from_the_epoch_ends():
    """advance(1e9) (or any time where a delay is below the clock's
    resolution) used to spin for ever: the asyncio loop's jump to its last
    timer added less than the clock's resolution.  Run in a child process,
    bounded, so that a regression fails instead of hanging the suite."""
    import subprocess
    import sys

    code = textwrap.dedent('''
        import asyncio
        import dobj
        from dobj import testing

        class Box(dobj.DurableObject):
            def put(self, k, v):
                self.ctx.storage.put(k, v)

            def get(self, k):
                return self.ctx.storage.get(k)

        with testing.Harness(lambda: testing.TestRuntime(virtual_time=True)) as h:
            stub = h.rt.bind("BOX", Box).get_by_name("a")
            h.run(stub.put("k", 1))
            for seconds in (1e9, 1e15, 1e300):
                h.rt.advance(seconds)
                assert h.run(stub.get("k")) == 1

            async def in_async():
                await h.rt.advance(1e9)
                await asyncio.sleep(1e9)
                return await stub.get("k")
            assert h.run(in_async()) == 1
        print("done")
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "done\n"
