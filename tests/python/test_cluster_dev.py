"""Cluster settings of a project and the cluster commands, on a real
PostgreSQL (tests/cluster/pgtmp.sh): `dobj cluster init` (exit status per
failure), `dobj dev --cluster` over real HTTP with two servers on one
database, the `[dobj.cluster]` table and DOBJ_CLUSTER_* variables with their
precedence (flag > environment > file), and Runtime.from_config picking them
up."""
import asyncio
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import dobj
import dobj.cluster
from devserver import copy_example, dev_env
from log_util import DobjLog
from pg_util import available

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")

DOBJ = str(Path(sys.executable).parent / "dobj")
BAD_URL = "postgresql://dobj@127.0.0.1/x?bogus=1"
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("DOBJ_CLUSTER_", "DOBJ_NODE_"))}


@pytest.fixture(autouse=True)
def no_cluster_environ(monkeypatch):
    for k in list(os.environ):
        if k.startswith(("DOBJ_CLUSTER_", "DOBJ_NODE_")):
            monkeypatch.delenv(k)


def closed_port():
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, env=None):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=env or CLEAN)


def get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_cluster_init_console_command_and_its_exit_status(pg):
    out = run(DOBJ, "cluster", "init", pg.url)
    assert (out.returncode, out.stdout) == (0, "dobj cluster schema version 5\n")
    # `python -m dobj.cluster init` is the same command.
    out = run(sys.executable, "-m", "dobj.cluster", "init", pg.url)
    assert (out.returncode, out.stdout) == (0, "dobj cluster schema version 5\n")
    out = run(DOBJ, "cluster", "init", BAD_URL)
    assert out.returncode == 2
    assert out.stderr == 'dobj cluster init: invalid PostgreSQL URL: invalid URI query parameter: "bogus"\n'
    out = run(DOBJ, "cluster", "init", f"postgresql://dobj@127.0.0.1:{closed_port()}/x", "--timeout", "1")
    assert out.returncode == 1
    assert out.stderr.startswith("dobj cluster init: cannot connect to PostgreSQL: ")
    assert out.stderr.count("\n") == 1
    out = run(DOBJ, "cluster", "init", pg.url, "--timeout", "-1")
    assert out.returncode == 2 and "timeout" in out.stderr
    # 0 s is refused, as cluster_timeout=0 and DOBJ_CLUSTER_TIMEOUT=0 are
    # (it meant the C API's "the default": 2 s).
    out = run(DOBJ, "cluster", "init", pg.url, "--timeout", "0")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == "dobj cluster init: --timeout: must be a number of seconds above 0\n"
    with pytest.raises(dobj.Error, match=r"^timeout: must be a number of seconds above 0$"):
        dobj.cluster.init(pg.url, timeout=0)
    assert dobj.cluster.init(pg.url, timeout=1.5) == 5
    out = run(DOBJ, "cluster")
    assert out.returncode == 2 and "usage: dobj cluster" in out.stderr
    pg.sql("UPDATE dobj_schema_version SET version = 7")
    try:
        out = run(DOBJ, "cluster", "init", pg.url)
        assert out.returncode == 3
        assert "version 7, newer than this dobj's (5)" in out.stderr
        assert pg.sql("SELECT version FROM dobj_schema_version") == ["7"]  # left alone
    finally:
        pg.sql("UPDATE dobj_schema_version SET version = 5")


def test_dev_cluster_two_servers_share_one_database(pg, tmp_path, servers):
    """Two `dobj dev --cluster` processes on one database, each with its own
    state folder: an object lives on one node at a time, and what one node
    wrote is what the next one sees."""
    a_dir, b_dir = copy_example(tmp_path / "a"), copy_example(tmp_path / "b")
    # Ports free now (fixed ones collided with other runs of the suite on the machine).
    pa, pb = closed_port(), closed_port()
    a = servers(a_dir, "--cluster", pg.url, "--node-addr", f"127.0.0.1:{pa}", env=dev_env(**CLEAN))
    b = servers(b_dir, "--cluster", pg.url, "--node-addr", f"127.0.0.1:{pb}", env=dev_env(**CLEAN))
    # Printed before "Ready".
    node_a = int(re.search(rf"\[dobj\] cluster: node (\d+) at 127\.0\.0\.1:{pa}\n", a.output()).group(1))
    node_b = int(re.search(rf"\[dobj\] cluster: node (\d+) at 127\.0\.0\.1:{pb}\n", b.output()).group(1))
    assert node_a != node_b
    assert pg.url not in a.output()  # the URL may hold a password: never printed
    # One object per server kind (the database is the module's, each test
    # runs on both servers of dobj dev).
    shared = f"shared-{servers.kind}"
    assert [get(a.port, shared)[1] for _ in range(3)] == ["1", "2", "3"]
    # The object is active on a: b's request reaches it there (routing).
    assert get(b.port, shared) == (200, "4")
    assert a.stop() == 0  # releases its objects
    assert get(b.port, shared) == (200, "5")  # a's writes, restored from PostgreSQL
    assert pg.sql("SELECT count(*) FROM dobj_owner WHERE node_id = %d" % node_b) == ["1"]


async def test_dev_cluster_websocket_to_a_room_on_the_other_node(pg, tmp_path, servers):
    """docs/cluster.md, "WebSockets between nodes", over real HTTP: the chat
    example on two `dobj dev --cluster` servers; bob's connection to b makes
    the room b's, alice connects to a and talks to it there."""
    websockets = pytest.importorskip("websockets")
    import json
    from devserver import CHAT
    for d in ("a", "b"):
        copy_example(tmp_path / d, CHAT)
    a = servers(tmp_path / "a" / "chat" / "python", "--cluster", pg.url, "--node-addr", "127.0.0.1:0",
                env=dev_env(**CLEAN))
    b = servers(tmp_path / "b" / "chat" / "python", "--cluster", pg.url, "--node-addr", "127.0.0.1:0",
                env=dev_env(**CLEAN))
    room = f"/rooms/across-{servers.kind}"

    async def recv(ws):
        return json.loads(await asyncio.wait_for(ws.recv(), 30))

    async with websockets.connect(f"ws://127.0.0.1:{b.port}{room}?name=bob") as bob:
        async with websockets.connect(f"ws://127.0.0.1:{a.port}{room}?name=alice") as alice:
            assert await recv(bob) == {"type": "join", "name": "alice"}
            await alice.send("/who")
            assert await recv(alice) == {"type": "who", "names": ["alice", "bob"]}
            await alice.send("hi")
            for ws in (alice, bob):
                assert await recv(ws) == {"type": "message", "seq": 1, "name": "alice", "text": "hi"}
            await alice.send("ping")  # answered by b's runtime (the auto-response)
            assert await asyncio.wait_for(alice.recv(), 30) == "pong"
            await bob.send("yo")
            for ws in (alice, bob):
                assert await recv(ws) == {"type": "message", "seq": 2, "name": "bob", "text": "yo"}
        assert await recv(bob) == {"type": "leave", "name": "alice", "code": 1000}


def test_dev_cluster_prints_the_address_it_listens_on(pg, tmp_path, servers):
    s = servers(copy_example(tmp_path), "--cluster", pg.url, "--node-addr", "127.0.0.1:0",
                env=dev_env(**CLEAN))
    port = int(re.search(r"\[dobj\] cluster: node \d+ at 127\.0\.0\.1:(\d+)\n", s.output()).group(1))
    assert port != 0


def test_dev_cluster_without_node_addr_serves_on_a_port_the_system_picks(pg, tmp_path, servers):
    """`dobj dev --cluster URL` alone was a pure client: it served no object,
    every request went to another node (or failed without one)."""
    s = servers(copy_example(tmp_path), "--cluster", pg.url, env=dev_env(**CLEAN))
    node, port = re.search(r"\[dobj\] cluster: node (\d+) at 127\.0\.0\.1:(\d+)\n", s.output()).groups()
    assert port != "0"
    assert get(s.port, f"own-{servers.kind}") == (200, "1")
    assert pg.sql(f"SELECT count(*) FROM dobj_owner WHERE node_id = {node}") == ["1"]


def test_dev_cluster_ttl_and_grace_flags_win_over_the_environment(pg, tmp_path, servers):
    s = servers(copy_example(tmp_path), "--cluster", pg.url, "--cluster-ttl", "0.5",
                "--cluster-grace", "0", env=dev_env(**CLEAN, DOBJ_CLUSTER_TTL="9"))
    node = re.search(r"\[dobj\] cluster: node (\d+)", s.output()).group(1)
    left = float(pg.sql(f"SELECT extract(epoch FROM lease_until - now()) FROM dobj_node WHERE node_id = {node}")[0])
    assert left <= 0.5


@pytest.mark.parametrize("flags, message", [
    (["--cluster-ttl", "inf"], "--cluster-ttl: must be a finite number of seconds"),
    (["--cluster-ttl", "1e9"], "--cluster-ttl: the lease time to live must be a number of seconds from 0.1 to 86400"),
    (["--cluster-grace", "-1"], "--cluster-grace: the grace period must be 0 or more seconds"),
])
def test_dev_bad_cluster_time_flag_is_one_line_and_exit_2(pg, tmp_path, flags, message):
    out = run(DOBJ, "dev", "--port", "0", "--cluster", pg.url, "--config", str(copy_example(tmp_path)), *flags)
    assert (out.returncode, out.stderr) == (2, f"dobj dev: {message}\n")


def test_dev_bad_cluster_flag_is_one_line_and_exit_2(tmp_path):
    d = copy_example(tmp_path)
    out = run(DOBJ, "dev", "--port", "0", "--cluster", BAD_URL, "--config", str(d))
    assert out.returncode == 2
    assert out.stderr == ('dobj dev: --cluster: invalid PostgreSQL URL: invalid URI query '
                          'parameter: "bogus"\n')


def test_dev_unreachable_database_is_one_line_and_exit_1(tmp_path):
    d = copy_example(tmp_path)
    env = dict(CLEAN, DOBJ_CLUSTER_TIMEOUT="1")
    out = run(DOBJ, "dev", "--port", "0", "--cluster", f"postgresql://dobj@127.0.0.1:{closed_port()}/x",
              "--config", str(d), env=env)
    assert out.returncode == 1
    assert out.stderr.startswith("dobj dev: cluster: cannot connect to PostgreSQL: ")
    assert out.stderr.count("\n") == 1


CONFIG = """\
name = "t"
main = "src/entry.py"
[[durable_objects.bindings]]
name = "COUNTER"
class_name = "Counter"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["Counter"]
[dobj.cluster]
url = "{url}"
node_addr = "127.0.0.1:18303"
ttl = 2.5
grace = 0
"""


def project(tmp_path, url):
    d = copy_example(tmp_path)
    (d / "wrangler.toml").write_text(CONFIG.format(url=url))
    return d


async def test_from_config_takes_the_config_table(pg, tmp_path):
    d = project(tmp_path, pg.url)
    cfg = dobj.load_config(d)
    assert cfg.cluster == dobj.ClusterSettings(url=pg.url, node_addr="127.0.0.1:18303", ttl=2.5,
                                               grace=0.0, timeout=None)
    rt = dobj.Runtime.from_config(d)
    try:
        assert rt.node_id is not None
        assert pg.sql(f"SELECT addr FROM dobj_node WHERE node_id = {rt.node_id}") == ["127.0.0.1:18303"]
        assert (await rt.default.fetch("http://x/cfg")).text() == "1"
    finally:
        rt.close()


async def test_a_loaded_project_is_a_node_and_two_loads_take_two_folders(pg, tmp_path, monkeypatch):
    """What each worker of `uvicorn --workers` does (test_cluster_workers.py).
    Before: a pure client (no address: it served nothing), and the second
    load failed on the namespace folder the first held."""
    d = copy_example(tmp_path)
    monkeypatch.setenv("DOBJ_CLUSTER_URL", pg.url)
    assert dobj.load_config(d).cluster.node_addr == "127.0.0.1:0"
    a = dobj.Runtime.from_config(d)
    b = dobj.Runtime.from_config(d)
    try:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", a.node_addr) and a.node_addr != "127.0.0.1:0"
        assert pg.sql(f"SELECT addr FROM dobj_node WHERE node_id = {b.node_id}") == [b.node_addr]
        assert (await a.default.fetch("http://x/a")).text() == "1"
        assert (await b.default.fetch("http://x/b")).text() == "1"
        state = d / ".wrangler" / "state" / "v3" / "do"
        assert [p.name for p in (state / ".node-2").iterdir()] == \
            [p.name for p in state.iterdir() if p.name != ".node-2"]
    finally:
        a.close()
        b.close()


async def test_precedence_flag_over_environment_over_file(pg, tmp_path, monkeypatch):
    d = project(tmp_path, BAD_URL)  # the file's URL is never used below
    monkeypatch.setenv("DOBJ_CLUSTER_URL", pg.url)
    monkeypatch.setenv("DOBJ_NODE_ADDR", "127.0.0.1:18304")
    monkeypatch.setenv("DOBJ_CLUSTER_TTL", "4")
    cfg = dobj.load_config(d)
    assert cfg.cluster == dobj.ClusterSettings(url=pg.url, node_addr="127.0.0.1:18304", ttl=4.0,
                                               grace=0.0, timeout=None)
    rt = dobj.Runtime.from_config(d, node_addr="127.0.0.1:18305")  # a keyword is a flag
    try:
        assert pg.sql(f"SELECT addr FROM dobj_node WHERE node_id = {rt.node_id}") == ["127.0.0.1:18305"]
    finally:
        rt.close()
    # The flag's URL over the environment's: a bad one is refused, naming it.
    with pytest.raises(dobj.ConfigError, match=r"the cluster URL given \(--cluster, cluster=\): "
                       "invalid PostgreSQL URL"):
        dobj.Runtime.from_config(d, cluster=BAD_URL)
    monkeypatch.delenv("DOBJ_CLUSTER_URL")
    with pytest.raises(dobj.ConfigError, match=r"wrangler.toml: dobj.cluster.url: invalid PostgreSQL URL"):
        dobj.load_config(d)
    monkeypatch.setenv("DOBJ_CLUSTER_TTL", "soon")
    with pytest.raises(dobj.ConfigError, match="environment variable DOBJ_CLUSTER_TTL=soon: not a number"):
        dobj.load_config(d)
    # `dobj dev` takes the environment the same way.
    out = run(DOBJ, "dev", "--port", "0", "--config", str(d), env=dict(CLEAN, DOBJ_CLUSTER_TTL="soon"))
    assert out.returncode == 1
    assert out.stderr == "dobj dev: environment variable DOBJ_CLUSTER_TTL=soon: not a number of seconds\n"


async def test_a_node_that_lost_its_lease_logs_it(pg, tmp_path):
    """A node that finds its lease lapsed (as after a pause past it) logs it
    on the "dobj" logger, and goes on as a new node."""
    with DobjLog() as log:
        rt = dobj.Runtime(storage=str(tmp_path), cluster=pg.url, cluster_ttl=0.2, cluster_grace=0)
        try:
            old = rt.node_id
            pg.lapse_lease(old)
            await log.wait()  # the next renewal, within 50 ms
            assert log.lines == [f"cluster: node {old} lost its lease (the process was paused or cut off "
                                 f"past it); its objects were reset, and it joined again as node {rt.node_id}"]
            assert rt.node_id != old
        finally:
            rt.close()
