"""Objects that outlive asyncio.run() or the module's own teardown.

Each case runs in a fresh interpreter, because what used to crash is the
interpreter's exit: the module state was cleared before the runtimes that
pointed into it (SIGSEGV while cancelling the idle timer).
"""
import subprocess
import sys
import textwrap

import dobj

from conftest import Counter

PRELUDE = """
import asyncio, sys
import dobj

class Counter(dobj.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.n = 0

    async def hi(self):
        self.n += 1
        return self.n

    async def fail(self):
        raise ValueError("failed on purpose")

    async def reset(self):
        self.ctx.abort("reset on purpose")
"""


def run_script(body, *args):
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def assert_clean_exit(proc, code=0):
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.returncode == code, proc.stderr[-2000:]


def test_exception_escaping_asyncio_run_with_an_armed_timer_exits_cleanly():
    proc = run_script("""
        async def main():
            rt = dobj.Runtime()
            await rt.bind("C", Counter).get_by_name("a").hi()  # arms the idle timer
            raise RuntimeError("escaping on purpose")
        asyncio.run(main())
    """)
    assert_clean_exit(proc, 1)
    assert "RuntimeError: escaping on purpose" in proc.stderr


def test_object_error_kept_in_a_global_exits_cleanly():
    proc = run_script("""
        KEPT = []
        async def main():
            ns = dobj.Runtime().bind("C", Counter)
            try:
                await ns.get_by_name("a").fail()
            except ValueError as e:
                KEPT.append(e)
            try:
                await ns.get_by_name("b").reset()
            except dobj.Error as e:
                KEPT.append(e)
        asyncio.run(main())
        assert len(KEPT) == 2
    """)
    assert_clean_exit(proc)


def test_instance_and_handles_kept_in_globals_exit_cleanly(tmp_path):
    proc = run_script("""
        KEPT = []
        class Keeper(Counter):
            async def hi(self):
                KEPT.extend([self, self.ctx, self.ctx.storage])
                self.ctx.storage.put("k", 1)
                return await super().hi()
        async def main():
            rt = dobj.Runtime(storage=sys.argv[1])
            ns = rt.bind("K", Keeper)
            stub = ns.get_by_name("a")
            assert await stub.hi() == 1
            KEPT.extend([rt, ns, stub, stub.id, stub.hi()])
        asyncio.run(main())
    """, str(tmp_path))
    assert_clean_exit(proc)


def test_runtime_subclass_works_and_exits_cleanly():
    proc = run_script("""
        class MyRuntime(dobj.Runtime):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.label = "mine"
        async def main():
            rt = MyRuntime(env={"X": 1})
            assert isinstance(rt, dobj.Runtime) and rt.label == "mine"
            assert await rt.bind("C", Counter).get_by_name("a").hi() == 1
            KEPT.append(rt)
        KEPT = [dobj.Runtime.__new__(MyRuntime)]
        asyncio.run(main())
        print("ok")
    """)
    assert_clean_exit(proc)
    assert proc.stdout.strip() == "ok"


async def test_runtime_subclass_in_process():
    class MyRuntime(dobj.Runtime):
        pass

    rt = MyRuntime()
    try:
        stub = rt.bind("COUNTER", Counter).get_by_name("x")
        assert (await stub.fetch("http://x/")).status == 200
        assert rt.namespaces["COUNTER"] is not None
    finally:
        rt.close()
