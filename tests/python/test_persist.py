"""Durability: workerd's disk layout, the output gate, abort, eviction,
SQLite handles, and crash safety (SIGKILL at random moments)."""
import asyncio
import gc
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import dobj
from storage_util import Box, run


def kv_rows(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT key, value FROM _cf_KV").fetchall())
    finally:
        db.close()


async def test_disk_layout_is_workerds(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path))
    ns = rt.bind("BOX", Box, unique_key="layout-key")
    stub = ns.get_by_name("obj")
    await run(stub, lambda self: self.ctx.storage.put("k", {"x": 1}))
    path = tmp_path / "layout-key" / f"{ns.id_from_name('obj')}.sqlite"
    assert path.exists()
    assert (tmp_path / "layout-key" / "metadata.sqlite").exists()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    schema = db.execute("SELECT sql FROM sqlite_master WHERE name = '_cf_KV'").fetchone()[0]
    assert "WITHOUT ROWID" in schema
    assert db.execute("SELECT key, value FROM _cf_KV").fetchall() == [
        ("k", dobj.serialize({"x": 1}))]
    db.close()
    rt.close()


async def test_a_new_runtime_sees_every_objects_data(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path))
    ns = rt.bind("BOX", Box)
    for i in range(20):
        await run(ns.get_by_name(f"o{i}"), lambda self, i=i: self.ctx.storage.put("i", i))
    rt.close()
    rt2 = dobj.Runtime(storage=str(tmp_path))
    ns2 = rt2.bind("BOX", Box)
    for i in range(20):
        assert await run(ns2.get_by_name(f"o{i}"), lambda self: self.ctx.storage.get("i")) == i
    rt2.close()


async def test_writes_are_committed_before_the_response_and_not_before(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path))
    ns = rt.bind("BOX", Box, unique_key="gate")
    stub = ns.get_by_name("g")
    path = tmp_path / "gate" / f"{ns.id_from_name('g')}.sqlite"
    await run(stub, lambda self: self.ctx.storage.put("first", 1))  # creates the file

    def body(self):
        self.ctx.storage.put("k", "v")
        return sorted(kv_rows(path))  # another reader, while the handler runs

    assert await run(stub, body) == ["first"]
    assert sorted(kv_rows(path)) == ["first", "k"]  # the response came: committed

    # A new runtime on the folder sees it too, once the first is closed.
    rt.close()
    rt2 = dobj.Runtime(storage=str(tmp_path))
    assert await run(rt2.bind("BOX", Box, unique_key="gate").get_by_name("g"),
                     lambda self: self.ctx.storage.get("k")) == "v"
    rt2.close()


def test_an_empty_storage_folder_is_refused():
    # "" put every namespace's folder at the root of the filesystem.
    with pytest.raises(dobj.Error, match="the storage directory must not be empty"):
        dobj.Runtime(storage="")


async def test_a_folder_is_one_namespaces_at_a_time(tmp_path):
    # Two namespaces (or runtimes) on one folder and unique key shared one
    # object's SQLite file: a write then stalled 5 s on "database is locked".
    rt = dobj.Runtime(storage=str(tmp_path))
    rt.bind("BOX", Box, unique_key="one")
    rt2 = dobj.Runtime(storage=str(tmp_path))
    folder = os.path.realpath(tmp_path / "one")
    with pytest.raises(dobj.Error, match=f"the storage folder {folder} is already used by the "
                                         "namespace bound as BOX in this process"):
        rt2.bind("BOX", Box, unique_key="one")
    with pytest.raises(dobj.Error, match="already used by the namespace bound as BOX"):
        rt.bind("OTHER", Box, unique_key="one")
    assert "BOX" not in rt2.namespaces and "OTHER" not in rt.namespaces

    # Another process is refused with a message naming the folder.
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, dobj
            try:
                dobj.Runtime(storage=sys.argv[1]).bind("BOX", dobj.DurableObject, unique_key="one")
            except dobj.Error as e:
                print(e)
        """), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == (f"the storage folder {folder} is used by another process "
                                    "(it holds the folder's lock); one process at a time may use "
                                    "a folder"), child.stderr
    rt.close()
    rt2.bind("BOX", Box, unique_key="one")  # free once the first runtime is closed
    rt2.close()


async def test_writes_commit_when_the_handler_suspends(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path))
    ns = rt.bind("BOX", Box, unique_key="suspend")
    stub = ns.get_by_name("s")
    path = tmp_path / "suspend" / f"{ns.id_from_name('s')}.sqlite"
    await run(stub, lambda self: self.ctx.storage.put("first", 1))

    async def body(self):
        self.ctx.storage.put("before", 1)
        await asyncio.sleep(0.001)
        return sorted(kv_rows(path))

    assert await run(stub, body) == ["before", "first"]
    rt.close()


async def test_abort_discards_uncommitted_writes_on_disk(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path))
    ns = rt.bind("BOX", Box, unique_key="abort")
    stub = ns.get_by_name("a")
    await run(stub, lambda self: self.ctx.storage.put("kept", 1))

    def body(self):
        self.ctx.storage.put("lost", 1)
        self.ctx.abort("no")

    with pytest.raises(dobj.Error):
        await run(stub, body)
    path = tmp_path / "abort" / f"{ns.id_from_name('a')}.sqlite"
    assert sorted(kv_rows(path)) == ["kept"]
    rt.close()


@pytest.mark.parametrize("on_disk", [False, True])
async def test_idle_objects_are_evicted_and_data_is_kept(tmp_path, on_disk):
    rt = dobj.Runtime(storage=str(tmp_path) if on_disk else None, idle_timeout=5, virtual_time=True)
    Box.constructed = 0
    ns = rt.bind("BOX", Box)
    stub = ns.get_by_name("idle")
    kept = await run(stub, lambda self: (self.ctx.storage.put("k", [1, 2]), self.ctx.storage)[1])
    assert Box.constructed == 1 and rt.live_objects("BOX") == 1 and rt.open_storages("BOX") == 1
    rt.advance(4)
    await run(stub, lambda self: None)  # activity restarts the idle clock
    rt.advance(4)
    assert rt.live_objects("BOX") == 1
    rt.advance(2)
    assert rt.live_objects("BOX") == 0
    assert rt.open_storages("BOX") == (0 if on_disk else 1)  # memory databases stay
    with pytest.raises(dobj.Error, match="reset or evicted"):
        kept.get("k")
    assert await run(stub, lambda self: self.ctx.storage.get("k")) == [1, 2]  # same old stub
    assert Box.constructed == 2
    rt.close()


async def test_eviction_with_real_time(tmp_path):
    rt = dobj.Runtime(idle_timeout=0.05)
    Box.constructed = 0
    stub = rt.bind("BOX", Box).get_by_name("real")
    await run(stub, lambda self: self.ctx.storage.put("k", 1))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if rt.live_objects("BOX") == 0:
            break
    assert rt.live_objects("BOX") == 0
    assert await run(stub, lambda self: self.ctx.storage.get("k")) == 1
    assert Box.constructed == 2
    rt.close()


async def test_many_objects_on_disk_only_active_ones_open(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path), idle_timeout=1, virtual_time=True)
    ns = rt.bind("BOX", Box)
    for i in range(200):
        await run(ns.get_by_name(f"m{i}"), lambda self, i=i: self.ctx.storage.put("i", i))
    rt.advance(2)
    assert rt.live_objects("BOX") == 0 and rt.open_storages("BOX") == 0
    assert await run(ns.get_by_name("m123"), lambda self: self.ctx.storage.get("i")) == 123
    assert rt.open_storages("BOX") == 1
    rt.close()


async def test_durability_power_option(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path), durability="power")
    await run(rt.bind("BOX", Box).get_by_name("p"), lambda self: self.ctx.storage.put("k", 1))
    rt.close()
    with pytest.raises(ValueError):
        dobj.Runtime(durability="disk")


CHILD = textwrap.dedent("""
    import asyncio, sys
    import dobj

    class Writer(dobj.DurableObject):
        def fetch(self, request):
            if request.url.endswith("/setup"):
                self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS log (i)")
                return dobj.Response("ok")
            i = int(request.url.rsplit("/", 1)[1])
            self.ctx.storage.put(f"k{i}", {"i": i, "pad": "x" * (i % 300)})
            if i % 7 == 0:
                self.ctx.storage.sql.exec("INSERT INTO log VALUES (?)", i)
            return dobj.Response("ok")

    async def main(start):
        rt = dobj.Runtime(storage=sys.argv[1])
        ns = rt.bind("W", Writer, unique_key="crash")
        stub = ns.get_by_name("w")
        await stub.fetch("https://w/setup")
        sys.stdout.write("ready\\n")  # started: the parent counts acks from here
        sys.stdout.flush()
        i = start
        while True:
            r = await stub.fetch(f"https://w/{i}")
            assert r.status == 200
            sys.stdout.write(f"{i}\\n")
            sys.stdout.flush()
            i += 1

    asyncio.run(main(int(sys.argv[2])))
""")


def _readline(f, timeout=120):
    """A line from an unbuffered pipe; b"" if nothing came for `timeout` s (a
    hung child fails the test instead of hanging it)."""
    return f.readline() if select.select([f], [], [], timeout)[0] else b""


def test_acknowledged_writes_survive_sigkill(tmp_path):
    store = str(tmp_path)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rnd = random.Random(1234)
    acked = []
    start = 0
    for round_ in range(6):
        p = subprocess.Popen([sys.executable, str(script), store, str(start)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        # Killed at a random moment while it writes: after its "ready" line
        # (start-up is slow under the sanitizers or on a busy machine, so no
        # clock is involved) and a random number of acknowledged writes, read
        # as they come; the child keeps writing meanwhile, so the kill lands
        # anywhere in a write.
        lines, ready = [], _readline(p.stdout)
        want = rnd.randint(10, 60)
        while ready == b"ready\n" and len(lines) < want:
            line = _readline(p.stdout)
            if not line.endswith(b"\n"):
                break  # the child died: its stderr says why
            lines.append(line)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        rest = p.stdout.read()
        err = p.stderr.read().decode()
        p.stdout.close()
        p.stderr.close()
        assert ready == b"ready\n" and len(lines) == want, err
        # Acks written before the kill count too; a last, partial line does not.
        lines += rest.split(b"\n")[:-1]
        acked += [int(x) for x in lines]
        start = acked[-1] + 1 + 1000

    assert len(acked) > 50
    rt = dobj.Runtime(storage=store)
    ns = rt.bind("W", Box, unique_key="crash")
    stub = ns.get_by_name("w")

    async def check():
        missing = []
        for i in range(0, len(acked), 128):
            chunk = acked[i:i + 128]
            got = await run(stub, lambda self, c=chunk: self.ctx.storage.get([f"k{j}" for j in c]))
            missing += [j for j in chunk if got.get(f"k{j}") != {"i": j, "pad": "x" * (j % 300)}]
        logged = await run(stub, lambda self: {r["i"] for r in self.ctx.storage.sql.exec(
            "SELECT i FROM log")})
        return missing, logged

    missing, logged = asyncio.run(check())
    assert missing == []
    assert {i for i in acked if i % 7 == 0} <= logged
    path = os.path.join(store, "crash", f"{ns.id_from_name('w')}.sqlite")
    rt.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    gc.collect()


@pytest.mark.parametrize("bad", [0, -1, float("nan"), -float("inf")])
def test_idle_timeout_zero_or_negative_is_refused(bad):
    # One meaning in every language (the core's): seconds > 0, math.inf = never.
    with pytest.raises(ValueError, match="idle_timeout must be a positive number of seconds"):
        dobj.Runtime(idle_timeout=bad)


@pytest.mark.parametrize("bad", ["disk", "Power", "power\0", "\ud800", 1])
def test_unknown_durability_is_refused(bad):
    # The core's names and message (dobj_rt_opts_durability), as in Lua.
    with pytest.raises(ValueError, match='durability must be "process" or "power"'):
        dobj.Runtime(durability=bad)


async def test_infinite_idle_timeout_never_evicts():
    rt = dobj.Runtime(idle_timeout=float("inf"), virtual_time=True)
    stub = rt.bind("BOX", Box).get_by_name("forever")
    await run(stub, lambda self: None)
    rt.advance(10 ** 9)
    assert rt.live_objects("BOX") == 1
    rt.close()


def test_a_bind_that_fails_leaves_nothing_bound(tmp_path):
    # Loading the stored alarms fails (metadata.sqlite is not a database).
    # The core kept the half-bound namespace, holding the class and folder.
    class Kept(Box):
        pass

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "metadata.sqlite").write_bytes(b"not an SQLite database " * 8)
    rt = dobj.Runtime(storage=str(tmp_path))
    gc.collect()
    refs = sys.getrefcount(Kept)
    with pytest.raises(dobj.Error, match="metadata.sqlite"):
        rt.bind("BROKEN", Kept, unique_key="broken")
    gc.collect()
    assert sys.getrefcount(Kept) == refs
    assert "BROKEN" not in rt.namespaces
    (folder / "metadata.sqlite").unlink()
    rt.bind("BROKEN", Kept, unique_key="broken")  # the folder was not left claimed
    rt.close()
