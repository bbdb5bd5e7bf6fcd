"""Snapshots of cluster objects (docs/cluster.md, "Snapshots"): the log is
compacted and another node restores snapshot + later log; a damaged
snapshot is a clear error and the object is not served; a node SIGKILLed
between writing a snapshot and deleting the log it covers loses nothing."""
import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import dobj
from cluster_util import node, start_node, stop_node
from pg_util import TOOL_ENV, available

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")


def obj(ns, name):
    return f"'\\x{ns.id_from_name(name).to_string()}'::bytea"


async def test_the_log_is_compacted_and_another_node_restores_it(pg, tmp_path):
    rt, ns = node(pg, tmp_path / "a", cluster_snapshot_bytes=1)  # every few writes
    stub = ns.get_by_name("compact")
    assert [await stub.add() for _ in range(10)] == list(range(1, 11))
    assert await stub.table() == ["row"]
    o = obj(ns, "compact")
    rt.close()  # the compaction under way finishes (bounded)
    # (how far depends on how fast the compactor keeps up: at least once)
    snap = int(pg.sql(f"SELECT seq FROM dobj_snapshot WHERE object_id = {o}")[0])
    assert snap >= 1
    assert pg.sql(f"SELECT count(*) FROM dobj_wal WHERE object_id = {o} AND seq < {snap}") == ["0"]
    rt, ns = node(pg, tmp_path / "b")  # another folder: snapshot + later log
    stub = ns.get_by_name("compact")
    assert await stub.add() == 11
    assert await stub.table() == ["row", "row"]
    rt.close()


async def test_a_damaged_snapshot_is_a_clear_error_and_the_object_is_not_served(pg, tmp_path):
    rt, ns = node(pg, tmp_path / "a", cluster_snapshot_bytes=1)
    stub = ns.get_by_name("damaged")
    for _ in range(6):
        await stub.add()
    o = obj(ns, "damaged")
    rt.close()
    pg.sql(f"UPDATE dobj_snapshot SET db = overlay(db placing '\\x0102'::bytea from 300) "
           f"WHERE object_id = {o}")
    rt, ns = node(pg, tmp_path / "b")
    with pytest.raises(dobj.Error, match=r"damaged \(a snapshot whose checksum does not match "
                                         r"at seq \d+\); the object is not served"):
        await ns.get_by_name("damaged").add()
    rt.close()
    with pytest.raises(TypeError):
        dobj.Runtime(storage=str(tmp_path / "c"), cluster=pg.url, cluster_snapshot_bytes="1")


async def test_a_log_row_whose_bytes_changed_is_a_clear_error_and_not_served(pg, tmp_path):
    rt, ns = node(pg, tmp_path / "a")
    stub = ns.get_by_name("flipped")
    assert [await stub.add() for _ in range(4)] == [1, 2, 3, 4]
    o = obj(ns, "flipped")
    rt.close()
    # one bit of row 3's pages, as a disk or a hand might change it
    pg.sql(f"UPDATE dobj_wal SET frames = set_byte(frames, 20, get_byte(frames, 20) # 16) "
           f"WHERE seq = 3 AND object_id = {o}")
    rt, ns = node(pg, tmp_path / "b")  # another folder: it must read the log
    for _ in range(2):  # and it stays so: nothing is skipped on a second try
        with pytest.raises(dobj.Error, match=r"damaged \(a log row whose checksum does not match "
                                             r"at seq 3\); the object is not served"):
            await ns.get_by_name("flipped").add()
    assert await ns.get_by_name("intact").add() == 1  # other objects are served
    # the checksum itself changed: the same
    rt.close()
    pg.sql(f"UPDATE dobj_wal SET frames = set_byte(frames, 20, get_byte(frames, 20) # 16), "
           f"sum = set_byte(sum, 31, get_byte(sum, 31) # 1) WHERE seq = 3 AND object_id = {o}")
    rt, ns = node(pg, tmp_path / "c")
    with pytest.raises(dobj.Error, match=r"a log row whose checksum does not match at seq 3"):
        await ns.get_by_name("flipped").add()
    rt.close()


def cached_file(folder, hex_id):
    (path,) = folder.rglob(hex_id + ".sqlite")
    return path


async def test_a_cached_file_changed_behind_its_marker_is_rebuilt(pg, tmp_path):
    rt, ns = node(pg, tmp_path / "a")
    assert [await ns.get_by_name("tampered").add() for _ in range(2)] == [1, 2]
    hex_id = ns.id_from_name("tampered").to_string()
    rt.close()
    path = cached_file(tmp_path / "a", hex_id)
    old = path.read_bytes()
    rt, ns = node(pg, tmp_path / "a")  # the file is the cache: at the latest seq
    assert await ns.get_by_name("tampered").add() == 3
    rt.close()
    # the file goes back to its old bytes (a write that stayed in it, a damaged
    # page): the same inode, size and times, only its content differs
    st = path.stat()
    assert len(old) == st.st_size
    with open(path, "r+b") as f:
        f.write(old)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = path.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    rt, ns = node(pg, tmp_path / "a")
    assert await ns.get_by_name("tampered").add() == 4  # rebuilt from PostgreSQL
    rt.close()


async def test_the_same_seq_and_epoch_written_elsewhere_is_not_the_cache(pg, tmp_path):
    rt, ns = node(pg, tmp_path / "a")
    assert [await ns.get_by_name("rewritten").add() for _ in range(3)] == [1, 2, 3]
    o = obj(ns, "rewritten")
    rt.close()  # its file: seq 3, epoch 1
    # PostgreSQL loses the object's history (a backup restored, a failover to a
    # standby that was behind); another node writes other steps as seq 1-3, epoch 1
    pg.sql(f"WITH w AS (DELETE FROM dobj_wal WHERE object_id = {o} RETURNING 1) "
           f"DELETE FROM dobj_owner WHERE object_id = {o}")
    rt, ns = node(pg, tmp_path / "b")
    assert [await ns.get_by_name("rewritten").add(10) for _ in range(3)] == [10, 20, 30]
    rt.close()
    assert pg.sql(f"SELECT max(seq), max(epoch) FROM dobj_wal WHERE object_id = {o}") == ["3|1"]
    rt, ns = node(pg, tmp_path / "a")  # its file says (3, 1): not PostgreSQL's row 3
    assert await ns.get_by_name("rewritten").add() == 31
    rt.close()


async def test_the_part_size_is_a_setting_and_a_snapshot_in_parts_is_restored(pg, tmp_path,
                                                                              monkeypatch):
    rt, ns = node(pg, tmp_path / "a", cluster_snapshot_bytes=1, cluster_snapshot_part_bytes=1024)
    stub = ns.get_by_name("parts")
    assert [await stub.add() for _ in range(6)] == list(range(1, 7))
    assert await stub.table() == ["row"]
    o = obj(ns, "parts")
    rt.close()
    # parts of 1 KiB (the last one shorter), the snapshot's only
    snap = pg.sql(f"SELECT seq FROM dobj_snapshot WHERE object_id = {o}")[0]
    assert pg.sql(f"SELECT max(octet_length(data)), count(DISTINCT seq) FROM dobj_snapshot_part "
                  f"WHERE object_id = {o}") == ["1024|1"]
    assert int(pg.sql(f"SELECT count(*) FROM dobj_snapshot_part WHERE object_id = {o} "
                      f"AND seq = {snap}")[0]) > 4
    rt, ns = node(pg, tmp_path / "b")
    assert await ns.get_by_name("parts").add() == 7
    rt.close()
    # the config file and the environment, by the same rule
    (tmp_path / "wrangler.toml").write_text('name = "w"\n[dobj.cluster]\nurl = "postgresql://a@b/c"\n'
                                            'snapshot_bytes = 0\nsnapshot_part_bytes = 4096\n')
    cl = dobj.load_config(str(tmp_path)).cluster
    assert (cl.snapshot_bytes, cl.snapshot_part_bytes) == (0, 4096)
    monkeypatch.setenv("DOBJ_CLUSTER_SNAPSHOT_PART_BYTES", "1048576")
    assert dobj.load_config(str(tmp_path)).cluster.snapshot_part_bytes == 1 << 20
    monkeypatch.setenv("DOBJ_CLUSTER_SNAPSHOT_PART_BYTES", "1e12")
    with pytest.raises(dobj.ConfigError, match=r"environment variable DOBJ_CLUSTER_SNAPSHOT_PART_BYTES: "
                                               r"must be from 1 KiB to 256 MiB \(bytes\)"):
        dobj.load_config(str(tmp_path))
    with pytest.raises(TypeError):
        dobj.Runtime(storage=str(tmp_path / "c"), cluster=pg.url, cluster_snapshot_part_bytes=2048.0)


async def test_a_snapshot_row_bigger_than_a_piece_is_read_on_its_own(pg, tmp_path):
    # ~5 MB in one row (format 1: below the 16 MiB part size): the first
    # statement of a restore leaves it out (more than the 4 MiB of a piece)
    # and reads it in the transaction, with a bound by its size.
    exec(BLOB, g := {})
    rt = dobj.Runtime(storage=str(tmp_path / "a"), cluster=pg.url, node_addr="127.0.0.1:0",
                      cluster_snapshot_bytes=1)
    ns = rt.bind("BLOB", g["Blob"])
    await ns.get_by_name("big-row").fill(50)
    o = obj(ns, "big-row")
    rt.close()
    assert pg.sql(f"SELECT seq, octet_length(db) > 5000000 FROM dobj_snapshot WHERE object_id = {o}") \
        == ["1|t"]
    assert pg.sql(f"SELECT count(*) FROM dobj_snapshot_part WHERE object_id = {o}") == ["0"]
    rt = dobj.Runtime(storage=str(tmp_path / "b"), cluster=pg.url, node_addr="127.0.0.1:0")
    stub = rt.bind("BLOB", g["Blob"]).get_by_name("big-row")
    assert await stub.size() == 1000000 and await stub.add() == 1
    rt.close()


def make_tables(pg, tmp_path):
    """The cluster's tables, for a test that puts a trigger on one before
    any node of its own has started (the server is shared by the module)."""
    dobj.Runtime(storage=str(tmp_path / "schema"), cluster=pg.url).close()


@contextlib.contextmanager
def slow_parts(pg, tmp_path, every=False):
    """The server takes slow.secs to write part 0 of a snapshot (or, with
    `every`, each part): a trigger."""
    make_tables(pg, tmp_path)
    pg.sql("CREATE TABLE dobj_test_sleep (secs float8)")
    pg.sql("INSERT INTO dobj_test_sleep VALUES (0)")
    pg.sql(f"""CREATE FUNCTION dobj_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF {'true' if every else 'NEW.part = 0'} THEN
               PERFORM pg_sleep(secs) FROM dobj_test_sleep; END IF; RETURN NEW; END $$""")
    pg.sql("CREATE TRIGGER dobj_test_slow BEFORE INSERT ON dobj_snapshot_part "
           "FOR EACH ROW EXECUTE FUNCTION dobj_test_slow()")

    class Slow:
        @staticmethod
        def set(secs):
            pg.sql(f"UPDATE dobj_test_sleep SET secs = {secs}")

    try:
        yield Slow
    finally:
        pg.sql("DROP TRIGGER dobj_test_slow ON dobj_snapshot_part")
        pg.sql("DROP FUNCTION dobj_test_slow()")
        pg.sql("DROP TABLE dobj_test_sleep")


async def test_a_part_gets_a_time_bound_by_its_size_and_keeps_one(pg, tmp_path):
    # Each 2 MiB part 0 takes the server 1.2 s (a trigger): more than the
    # node's timeout (0.5 s), less than the part's own bound (0.5 s + 2 s at
    # 1 MiB/s).  The snapshot is written; one whose part takes 30 s fails
    # at the bound, and the node's close waits no longer than that.
    exec(BLOB, g := {})
    with slow_parts(pg, tmp_path) as slow:
        for name, secs in (("slow", 1.2), ("very-slow", 30)):
            slow.set(secs)
            rt = dobj.Runtime(storage=str(tmp_path / name), cluster=pg.url,
                              node_addr="127.0.0.1:0", cluster_timeout=0.5,
                              cluster_snapshot_bytes=1, cluster_snapshot_part_bytes=2 << 20)
            ns = rt.bind("BLOB", g["Blob"])
            stub = ns.get_by_name(name)
            await stub.fill(30)  # ~3 MB in its first snapshot: two parts
            o = obj(ns, name)
            start = time.monotonic()
            rt.close()  # waits for the compaction under way
            took = time.monotonic() - start
            snaps = pg.sql(f"SELECT seq FROM dobj_snapshot WHERE object_id = {o}")
            if secs > 10:
                assert snaps == [] and took < 6, took
            else:
                assert snaps == ["1"], took
                assert pg.sql(f"SELECT count(*) FROM dobj_snapshot_part WHERE object_id = {o}") == ["2"]
                assert took > 1


async def test_a_closing_node_leaves_a_long_snapshot_after_its_grace(pg, tmp_path):
    # ~110 parts of 1 KiB, 0.3 s each: the close gives the compaction its
    # 2 x timeout + 0.5 s, then the upload stops at the next part (it would
    # take ~30 s); nothing is written, the log stays.
    exec(BLOB, g := {})
    with slow_parts(pg, tmp_path, every=True) as slow:
        slow.set(0.3)
        rt = dobj.Runtime(storage=str(tmp_path / "a"), cluster=pg.url, node_addr="127.0.0.1:0",
                          cluster_timeout=0.5, cluster_snapshot_bytes=1,
                          cluster_snapshot_part_bytes=1024)
        ns = rt.bind("BLOB", g["Blob"])
        await ns.get_by_name("long-upload").fill(1)
        o = obj(ns, "long-upload")
        start = time.monotonic()
        rt.close()
        took = time.monotonic() - start
    assert 1.4 < took < 4, took
    assert pg.sql(f"SELECT count(*) FROM dobj_snapshot WHERE object_id = {o}") == ["0"]
    assert pg.sql(f"SELECT count(*) FROM dobj_wal WHERE object_id = {o}") == ["1"]


class Session:
    """A psql session of the test's own, fed statements on its stdin."""

    def __init__(self, pg):
        self.proc = subprocess.Popen(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", pg.url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=TOOL_ENV)

    def run(self, sql, expect):
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == expect

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
            self.proc.stdout.close()


async def test_a_node_killed_between_the_snapshot_and_the_log_delete_loses_nothing(pg, tmp_path):
    # The compaction's transaction is held right after its snapshot row was
    # written (a trigger tells the test through a FIFO, then waits for an
    # advisory lock the test holds); the node is SIGKILLed there.
    make_tables(pg, tmp_path)
    where = tempfile.mkdtemp(prefix="dobj-snapkill-")
    os.chmod(where, 0o755)  # the server may run as another user
    fifo = os.path.join(where, "written")
    os.mkfifo(fifo)
    os.chmod(fifo, 0o666)
    holder = Session(pg)
    holder.run("SELECT 'held' FROM pg_advisory_lock(4242);", "held")
    pg.sql(f"""CREATE FUNCTION dobj_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN EXECUTE format('COPY (SELECT 1) TO %L', '{fifo}');
               PERFORM pg_advisory_lock(4242); RETURN NEW; END $$""")
    pg.sql("CREATE TRIGGER dobj_test_hold AFTER INSERT OR UPDATE ON dobj_snapshot "
           "FOR EACH ROW EXECUTE FUNCTION dobj_test_hold()")
    proc = start_node(pg, tmp_path / "n", "killed-mid", 5, 1)
    try:
        # The compaction is off the runtime's thread: the node acknowledges
        # every write while it is held.
        assert [int(proc.stdout.readline()) for _ in range(5)] == [1, 2, 3, 4, 5]
        node_id = proc.stdout.readline().split()[1]
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            assert ex.submit(lambda: open(fifo).read()).result(timeout=60).strip() == "1"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop_node(proc)
        holder.close()  # the held backend goes on, finds its client gone, rolls back
        pg.sql("DROP TRIGGER dobj_test_hold ON dobj_snapshot")
        pg.sql("DROP FUNCTION dobj_test_hold()")
        shutil.rmtree(where)
    pg.lapse_lease(node_id)
    rt, ns = node(pg, tmp_path / "b", cluster_snapshot_bytes=1)
    o = obj(ns, "killed-mid")
    # Neither the snapshot nor the deletes of its transaction happened.
    assert pg.sql(f"SELECT count(*) FROM dobj_snapshot WHERE object_id = {o}") == ["0"]
    assert pg.sql(f"SELECT count(*) FROM dobj_wal WHERE object_id = {o}") == ["5"]
    stub = ns.get_by_name("killed-mid")
    assert [await stub.add() for _ in range(3)] == [6, 7, 8]
    rt.close()  # this node's compaction goes through
    assert int(pg.sql(f"SELECT seq FROM dobj_snapshot WHERE object_id = {o}")[0]) > 1
    rt, ns = node(pg, tmp_path / "c")
    assert await ns.get_by_name("killed-mid").add() == 9
    rt.close()


# An object of ~1 MiB (values are at most 128 KiB: ten of 100,000 bytes),
# or of n of them.
BLOB = textwrap.dedent("""
    import dobj

    class Blob(dobj.DurableObject):
        async def fill(self, n=10):
            for i in range(n):
                self.ctx.storage.put(f"b{i}", "x" * 100000)

        async def size(self):
            return sum(len(self.ctx.storage.get(f"b{i}") or "") for i in range(10))

        async def add(self):
            v = (self.ctx.storage.get("n") or 0) + 1
            self.ctx.storage.put("n", v)
            return v
""")

# A node process that activates Blob "long" (URL FOLDER): its size and the
# count after one more add, then how far its peak memory (KiB) grew over the
# restore and the compaction of the whole log that the add starts (the
# runtime's close waits for it).
LONG_LOG_NODE = BLOB + textwrap.dedent("""
    import asyncio, resource, sys

    async def main():
        rt = dobj.Runtime(storage=sys.argv[2], cluster=sys.argv[1], node_addr="127.0.0.1:0",
                          cluster_snapshot_bytes=1)
        stub = rt.bind("BLOB", Blob).get_by_name("long")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(await stub.size(), await stub.add(), flush=True)
        rt.close()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, flush=True)

    asyncio.run(main())
""")


async def test_a_long_log_is_restored_and_compacted_in_bounded_memory(pg, tmp_path):
    # 96 log rows of ~1 MiB (the object's first write, copied as seq 2..96
    # with their checksums: each rewrites the same pages) are read in pieces:
    # neither the restore nor the compaction holds the log in memory.
    exec(BLOB, g := {})
    rt = dobj.Runtime(storage=str(tmp_path / "a"), cluster=pg.url, node_addr="127.0.0.1:0",
                      cluster_snapshot_bytes=0)
    ns = rt.bind("BLOB", g["Blob"])
    await ns.get_by_name("long").fill()
    o = obj(ns, "long")
    rt.close()
    pg.sql(f"INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames, sum) "
           f"SELECT ns, object_id, g, epoch, frames, sha256(object_id || int8send(g::int8) || "
           f"int8send(epoch) || sha256(frames)) FROM dobj_wal, generate_series(2, 96) g "
           f"WHERE object_id = {o} AND seq = 1")
    assert int(pg.sql(f"SELECT sum(octet_length(frames)) FROM dobj_wal WHERE object_id = {o}")[0]) \
        > 96_000_000
    out = subprocess.run([sys.executable, "-c", LONG_LOG_NODE, pg.url, str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, grown = out.stdout.splitlines()
    assert first == "1000000 1"
    assert int(grown) < 24 << 10, f"peak memory grew by {int(grown) >> 10} MiB"
    # the compaction went through: a snapshot at the add, the log below it gone
    assert pg.sql(f"SELECT seq FROM dobj_snapshot WHERE object_id = {o}") == ["97"]
    assert pg.sql(f"SELECT count(*) FROM dobj_wal WHERE object_id = {o}") == ["1"]
