"""Cluster mode on a real PostgreSQL (tests/cluster/pgtmp.sh): the schema and
bad input, every acknowledged write in PostgreSQL, a node SIGKILLed and its
objects restored by another process, a live owner keeping its objects, and
PostgreSQL killed and restarted."""
import asyncio
import re
import signal
import subprocess
import sys
import time

import pytest

import dobj
import dobj.cluster
from cluster_util import Counter, node, start_node, stop_node
from log_util import DobjLog
from pg_util import TOOL_ENV, HeldLock, available

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")


def test_schema_init_is_versioned(pg):
    assert dobj.cluster.init(pg.url) == dobj.cluster.SCHEMA_VERSION == 5
    out = subprocess.run([sys.executable, "-m", "dobj.cluster", "init", pg.url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "dobj cluster schema version 5"
    pg.sql("UPDATE dobj_schema_version SET version = 7")
    try:
        with pytest.raises(dobj.Error, match="version 7, newer than this dobj's"):
            dobj.cluster.init(pg.url)
    finally:
        pg.sql("UPDATE dobj_schema_version SET version = 5")


@pytest.mark.parametrize("n, setup, message", [
    # Before: PostgreSQL's "relation "dobj_node" already exists".
    (1, "CREATE TABLE dobj_node (id int)",
     "the database has a table dobj_node but no dobj schema: it is not dobj's"),
    # Before: the version was atoi("NaN") = 0: dobj's tables were made beside
    # another's, and init said "version 4".
    (2, "CREATE TABLE dobj_schema_version (version float8); INSERT INTO dobj_schema_version VALUES ('NaN')",
     "dobj_schema_version is not dobj's (a table with version double precision, not a table with "
     "version integer)"),
    (3, "CREATE VIEW dobj_schema_version AS SELECT 4 AS version",
     "dobj_schema_version is not dobj's (a view with version integer"),
    (4, "CREATE TABLE dobj_schema_version (version integer); INSERT INTO dobj_schema_version VALUES (-5)",
     "dobj_schema_version says version -5, which no dobj wrote"),
    # Before: init said "version 4"; the node failed on PostgreSQL's
    # "relation "dobj_node" does not exist".
    (5, "CREATE TABLE dobj_schema_version (version integer); INSERT INTO dobj_schema_version VALUES (4)",
     "the database's dobj schema (version 4) has no table dobj_node: it was changed by hand or "
     "restored in part"),
])
def test_a_database_that_is_not_dobjs_is_refused_with_what_is_wrong(pg, tmp_path, n, setup, message):
    """`dobj cluster init` and a node refuse a database whose dobj names are
    not dobj's, saying what is wrong, and change nothing in it."""
    pg.sql(f"CREATE DATABASE not_dobj_{n}")
    url = pg.url.rsplit("/", 1)[0] + f"/not_dobj_{n}"
    subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", url, "-c", setup], check=True,
                   capture_output=True, timeout=30, env=TOOL_ENV)
    with pytest.raises(dobj.Error, match=re.escape(message)):
        dobj.cluster.init(url)
    out = subprocess.run([sys.executable, "-m", "dobj.cluster", "init", url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and message in out.stderr, out
    with pytest.raises(dobj.Error, match=re.escape(message)):
        dobj.Runtime(storage=str(tmp_path), cluster=url, node_addr="127.0.0.1:0")
    made = subprocess.run(["psql", "-XAtq", url, "-c", "SELECT to_regclass('dobj_owner') IS NULL"],
                          capture_output=True, text=True, timeout=30, env=TOOL_ENV).stdout.strip()
    assert made == "t"  # nothing of dobj's was made


def test_bad_input_is_a_clear_error(pg, tmp_path):
    with pytest.raises(dobj.Error, match="invalid PostgreSQL URL"):
        dobj.Runtime(storage=str(tmp_path), cluster="postgresql://h/db?nosuch=1")
    t0 = time.monotonic()
    with pytest.raises(dobj.Error, match="cannot connect to PostgreSQL"):
        dobj.Runtime(storage=str(tmp_path), cluster="postgresql://dobj@127.0.0.1:1/postgres")
    assert time.monotonic() - t0 < 5
    with pytest.raises(dobj.Error, match="storage directory"):
        dobj.Runtime(cluster=pg.url)
    with pytest.raises(dobj.Error, match="a PostgreSQL URL is needed"):
        dobj.Runtime(storage=str(tmp_path), cluster="")
    with pytest.raises(TypeError):
        dobj.Runtime(storage=str(tmp_path), cluster=1)


@pytest.mark.parametrize("kw, value, message", [
    # A negative grace was taken for "none" (the file and the environment refused it).
    ("cluster_grace", -1, "cluster_grace: the grace period must be 0 or more seconds"),
    # Past a day: accepted, then undefined behaviour in the network thread's
    # wait (1e12 s), or a PostgreSQL error about -2147483648 ms (1e7 s).
    ("cluster_ttl", 1e12, "cluster_ttl: the lease time to live must be a number of seconds from 0.1 to 86400"),
    ("cluster_grace", 1e300, "cluster_grace: the grace period must be a number of seconds from 0 to 86400"),
    ("cluster_timeout", 1e7, "cluster_timeout: the PostgreSQL timeout must be a number of seconds from 0.01 to 86400"),
    ("cluster_ttl", float("-inf"), "cluster_ttl: must be a finite number of seconds"),
    ("cluster_timeout", float("nan"), "cluster_timeout: must be a finite number of seconds"),
    ("cluster_ttl", 0, "cluster_ttl: must be a number of seconds above 0"),
    # the sizes likewise (dobj_cluster_opts_bytes)
    ("cluster_snapshot_part_bytes", 1000, "cluster_snapshot_part_bytes: must be from 1 KiB to 256 MiB (bytes)"),
    ("cluster_snapshot_part_bytes", 0, "cluster_snapshot_part_bytes: must be from 1 KiB to 256 MiB (bytes)"),
    ("cluster_snapshot_bytes", -1, "cluster_snapshot_bytes: must be 0 (never) or a number of bytes"),
    # A node address the network thread cannot split was refused only after
    # connecting to PostgreSQL and migrating (and the config file took it).
    ("node_addr", "127.0.0.1:99999", 'node_addr must be HOST:PORT, such as 127.0.0.1:7001 (got "127.0.0.1:99999")'),
    ("node_addr", "[::1]:", 'node_addr must be HOST:PORT, such as 127.0.0.1:7001 (got "[::1]:")'),
    # Where a node listens, not where other nodes reach it.
    ("node_addr", "0.0.0.0:0", "node_addr 0.0.0.0:0 is any address of this machine, which other nodes cannot reach"),
])
def test_bad_times_are_refused_naming_the_argument(tmp_path, kw, value, message):
    """Refused before connecting, with the keyword named (Runtime and from_config alike)."""
    url = "postgresql://nobody@127.0.0.1:1/x"
    with pytest.raises(dobj.Error, match=re.escape(message)):
        dobj.Runtime(storage=str(tmp_path), cluster=url, **{kw: value})
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    with pytest.raises(dobj.ConfigError, match=re.escape(message)):
        dobj.Runtime.from_config(str(tmp_path), cluster=url, **{kw: value})


async def test_another_node_restores_every_acknowledged_write(pg, tmp_path):
    rt, ns = node(pg, tmp_path / "a")
    stub = ns.get_by_name("restore")
    assert [await stub.add() for _ in range(3)] == [1, 2, 3]
    assert await stub.table() == ["row"]
    rt.close()
    rt, ns = node(pg, tmp_path / "b")  # another folder: nothing local
    stub = ns.get_by_name("restore")
    assert await stub.add(10) == 13
    assert await stub.table() == ["row", "row"]
    rt.close()


async def test_own_data_and_a_nodes_cache_are_never_taken_for_each_other(pg, tmp_path):
    # A project that ran without the cluster, started as a node: its objects'
    # files are not a cache, and a node replaced them with PostgreSQL's state
    # (none: deleted) on their first call.  The other way round, a runtime
    # without the cluster served a node's cache as its own data.
    rt = dobj.Runtime(storage=str(tmp_path / "own"))
    stub = rt.bind("COUNTER", Counter).get_by_name("own")
    assert [await stub.add() for _ in range(2)] == [1, 2]
    rt.close()
    folder = tmp_path / "own" / "COUNTER"
    with pytest.raises(dobj.Error, match=f"the storage folder {folder} holds the objects of a "
                                         "runtime without the cluster"):
        node(pg, tmp_path / "own")
    rt = dobj.Runtime(storage=str(tmp_path / "own"))
    assert await rt.bind("COUNTER", Counter).get_by_name("own").add() == 3
    rt.close()

    rt, ns = node(pg, tmp_path / "cache")
    assert await ns.get_by_name("cached").add() == 1
    rt.close()
    rt = dobj.Runtime(storage=str(tmp_path / "cache"))
    with pytest.raises(dobj.Error, match="is a cluster node's cache of PostgreSQL's data"):
        rt.bind("COUNTER", Counter)
    rt.close()


def row_lock(pg, object_id):
    """The owner row of an object locked FOR UPDATE from psql until release():
    the node's appends for it (which lock it FOR SHARE) wait meanwhile."""
    return HeldLock(pg, "SELECT 'locked' FROM dobj_owner "
                        f"WHERE object_id = '\\x{object_id}'::bytea FOR UPDATE;")


async def test_a_slow_commit_does_not_delay_another_objects_reads(pg, tmp_path):
    import asyncio
    rt, ns = node(pg, tmp_path / "a")
    slow, fast = ns.get_by_name("slow-commit"), ns.get_by_name("fast-read")
    assert await slow.add() == 1 and await fast.add() == 1
    lock = row_lock(pg, ns.id_from_name("slow-commit").to_string())
    try:
        # slow's step runs and commits locally; its append waits for the lock
        # on the node's committer thread, and its result waits for the append.
        pending = asyncio.ensure_future(slow.add())
        assert await fast.get() == 1
        assert not pending.done()
        lock.release()
        assert await pending == 2
    finally:
        lock.release()
    rt.close()


async def test_a_waiting_activation_delays_no_other_object_and_calls_keep_their_order(pg, tmp_path):
    import asyncio
    rt, ns = node(pg, tmp_path / "a")
    assert await ns.get_by_name("slow-claim").add() == 1
    rt.close()  # released: the next call claims it again
    rt, ns = node(pg, tmp_path / "a")
    slow, fast = ns.get_by_name("slow-claim"), ns.get_by_name("fast-too")
    assert await fast.add() == 1
    lock = row_lock(pg, ns.id_from_name("slow-claim").to_string())
    try:
        # slow's claim waits for the lock on the node's activator thread;
        # its calls wait at its gate, in order, and fast is served at once.
        pending = [asyncio.ensure_future(slow.add()) for _ in range(3)]
        await asyncio.sleep(0)
        assert await fast.get() == 1
        assert not any(p.done() for p in pending)
        lock.release()
        assert await asyncio.gather(*pending) == [2, 3, 4]
    finally:
        lock.release()
    rt.close()


async def test_a_waiting_activation_delays_no_other_objects_activation(pg, tmp_path):
    import asyncio

    def activator(name):  # which of the node's four activators (cluster_activate.c)
        return int(ns.id_from_name(name).to_string()[:2], 16) % 4

    rt, ns = node(pg, tmp_path / "a")
    assert await ns.get_by_name("slow-claim-2").add() == 1
    rt.close()  # released: the next call claims it again
    rt, ns = node(pg, tmp_path / "a")
    other = next(f"other-{i}" for i in range(100)
                 if activator(f"other-{i}") != activator("slow-claim-2"))
    lock = row_lock(pg, ns.id_from_name("slow-claim-2").to_string())
    try:
        # slow's claim waits for the lock (up to the 2 s timeout) on its
        # activator; another object's claim and restore go on another.
        pending = asyncio.ensure_future(ns.get_by_name("slow-claim-2").add())
        await asyncio.sleep(0)
        assert await asyncio.wait_for(ns.get_by_name(other).add(), 1.5) == 1
        assert not pending.done()
        lock.release()
        assert await pending == 2
    finally:
        lock.release()
    rt.close()


async def test_a_killed_nodes_objects_come_back_elsewhere(pg, tmp_path):
    proc = start_node(pg, tmp_path / "n", "killed", 5)
    try:
        acked = [int(proc.stdout.readline()) for _ in range(5)]
        node_id = proc.stdout.readline().split()[1]
        assert acked == [1, 2, 3, 4, 5]
        # While the node lives, its object stays there: calls go to it.
        rt, ns = node(pg, tmp_path / "b")
        assert await ns.get_by_name("killed").add() == 6
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Its lease lapses (as TTL + grace would make it, without the wait).
        pg.lapse_lease(node_id)
        assert await ns.get_by_name("killed").add() == 7
        rt.close()
    finally:
        stop_node(proc)


async def test_postgres_killed_and_restarted_loses_no_acknowledged_write(pg, tmp_path):
    rt, ns = node(pg, tmp_path / "a")
    stub = ns.get_by_name("pgkill")
    assert await stub.add() == 1
    pg.kill()
    with pytest.raises(dobj.Error, match="storage commit failed"):
        await stub.add()
    pg.restart()
    assert await ns.get_by_name("pgkill").add() == 2
    rt.close()
    rt, ns = node(pg, tmp_path / "b")
    assert await ns.get_by_name("pgkill").add() == 3
    rt.close()


async def test_a_pure_client_cut_off_from_postgresql_logs_nothing(pg, tmp_path):
    """PostgreSQL away past TTL + grace: a node whose object was reset says
    so; a pure client (no node_addr) serves nothing, so it lost nothing and
    logs nothing (it used to log that its objects were reset and their
    WebSockets closed).  The client's TTL is a fifth of the owner's: its
    cut-off comes well before the owner's line."""
    with DobjLog() as log:
        client = dobj.Runtime(storage=str(tmp_path / "client"), cluster=pg.url,
                              cluster_ttl=0.2, cluster_grace=0.1)
        client_ns = client.bind("COUNTER", Counter)
        owner, ns = node(pg, tmp_path / "owner", cluster_ttl=1, cluster_grace=0.5)
        try:
            assert await ns.get_by_name("cut").add() == 1
            assert await client_ns.get_by_name("cut").get() == 1  # routed to the owner
            pg.kill()
            try:
                await log.wait(r"^cluster: node %d could not renew" % owner.node_id, 30)
            finally:
                pg.restart()
            assert re.search(r"1 of its objects were reset and 0 WebSockets closed", log.lines[-1])
            assert [l for l in log.lines if re.match(r"cluster: node %d " % client.node_id, l)] == []
        finally:
            client.close()
            owner.close()


class Alarmed(dobj.DurableObject):
    fired = []

    async def set_in(self, seconds):
        when = time.time() * 1000 + seconds * 1000
        self.ctx.storage.set_alarm(when)
        return when

    async def alarm(self, info=None):
        type(self).fired.append((self.ctx.id.name, time.time() * 1000))
        type(self).event.set()


async def test_an_alarm_fires_on_the_node_that_finds_it(pg, tmp_path):
    import asyncio
    Alarmed.fired = []
    Alarmed.event = asyncio.Event()
    rt = dobj.Runtime(storage=str(tmp_path / "a"), cluster=pg.url, node_addr="127.0.0.1:0")
    ns = rt.bind("ALARMED", Alarmed)
    when = await ns.get_by_name("wake").set_in(0.3)
    assert pg.sql("SELECT count(*) FROM dobj_alarm WHERE ns = 'ALARMED'") == ["1"]
    rt.close()  # the alarm stays in the cluster's schedule
    rt = dobj.Runtime(storage=str(tmp_path / "b"), cluster=pg.url, node_addr="127.0.0.1:0")
    rt.bind("ALARMED", Alarmed)  # never calls the object: finds the alarm in PostgreSQL
    await asyncio.wait_for(Alarmed.event.wait(), 10)
    assert [name for name, _ in Alarmed.fired] == ["wake"]
    assert Alarmed.fired[0][1] >= when  # never early
    await rt.drain(timeout=5)
    assert pg.sql("SELECT count(*) FROM dobj_alarm WHERE ns = 'ALARMED'") == ["0"]
    rt.close()


RENAMED_CONFIG = """\
    name = "ren"
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
    """


async def test_a_renamed_classs_objects_move_to_its_new_name_in_postgresql(pg, tmp_path):
    """Cluster mode keeps objects in PostgreSQL under their class's name,
    which a rename changes: the renamed class started without its objects (a
    count of 2 came back as 1).  The renamed project's first start moves
    them, unless a node of the earlier version still holds one."""
    import textwrap
    from project_util import COUNTER_ENTRY_OF, write_project
    old = write_project(tmp_path / "old", COUNTER_ENTRY_OF.format(cls="Counter"), name="ren")
    new = write_project(tmp_path / "new", COUNTER_ENTRY_OF.format(cls="Tally"), textwrap.dedent(RENAMED_CONFIG))
    rt = dobj.Runtime.from_config(old, cluster=pg.url)
    try:
        assert (await rt.default.fetch("https://x/")).text() == "1"
        with pytest.raises(dobj.ConfigError, match=r"class Tally \(binding COUNTER\) was renamed by a "
                           r"migration, and node \d+ holds objects of its earlier name \(namespace "
                           r"ren-Counter\): a node of the project before the rename would go on serving"):
            dobj.Runtime.from_config(new, cluster=pg.url)
    finally:
        rt.close()
    rt = dobj.Runtime.from_config(new, cluster=pg.url)
    try:
        assert (await rt.default.fetch("https://x/")).text() == "2"
    finally:
        rt.close()
    assert pg.sql("SELECT count(*) FROM dobj_owner WHERE ns = 'ren-Counter'") == ["0"]
