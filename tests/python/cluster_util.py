"""The Counter and the nodes of the cluster tests (test_cluster.py,
test_cluster_snapshot.py): a runtime joined to the test's PostgreSQL, or a
node in a process of its own."""
import subprocess
import sys
import textwrap

import dobj


class Counter(dobj.DurableObject):
    async def add(self, n=1):
        v = (self.ctx.storage.get("n") or 0) + n
        self.ctx.storage.put("n", v)
        return v

    async def get(self):
        return self.ctx.storage.get("n") or 0

    async def table(self):
        # A schema change travels as pages, like any other write.
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t (x TEXT)")
        self.ctx.storage.sql.exec("INSERT INTO t VALUES ('row')")
        return [r["x"] for r in self.ctx.storage.sql.exec("SELECT x FROM t")]


def node(pg, folder, **kw):
    """A runtime on `folder` joined to pg's cluster, and its COUNTER namespace."""
    rt = dobj.Runtime(storage=str(folder), cluster=pg.url, node_addr="127.0.0.1:0", **kw)
    return rt, rt.bind("COUNTER", Counter)


# A node process: URL FOLDER NAME N [SNAPSHOT_BYTES] adds one N times to
# object NAME, printing each count, then "node ID"; it stays until stdin closes.
NODE = textwrap.dedent("""
    import asyncio, sys
    import dobj

    class Counter(dobj.DurableObject):
        async def add(self, n=1):
            v = (self.ctx.storage.get("n") or 0) + n
            self.ctx.storage.put("n", v)
            return v

    async def main():
        kw = {"cluster_snapshot_bytes": int(sys.argv[5])} if len(sys.argv) > 5 else {}
        rt = dobj.Runtime(storage=sys.argv[2], cluster=sys.argv[1], node_addr="127.0.0.1:0", **kw)
        stub = rt.bind("COUNTER", Counter).get_by_name(sys.argv[3])
        for _ in range(int(sys.argv[4])):
            print(await stub.add(), flush=True)
        print("node", rt.node_id, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
""")


def start_node(pg, folder, name, n, *snapshot_bytes):
    """NODE in a process of its own (stdin and stdout piped)."""
    return subprocess.Popen([sys.executable, "-c", NODE, pg.url, str(folder), name, str(n),
                             *map(str, snapshot_bytes)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def stop_node(proc):
    """A start_node process gone (killed if it still runs), its pipes closed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stdin.close()
    proc.stdout.close()
