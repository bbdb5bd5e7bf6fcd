"""WebSockets and ownership across cluster nodes (docs/cluster.md, "WebSockets
between nodes"), with real processes and real clients: `dobj dev --cluster`
and `dobj-lua dev --cluster` servers of examples/chat on one throw-away
PostgreSQL, the `websockets` library as the browser.

- A node that lost an object (paused past its lease while another node took
  the object over, its lease refused, its fencing epoch refused) closes the
  object's sockets with 1012, those it accepted and those relayed through
  another node, and resets the object: nothing it held back reaches anyone.
- A room with an open socket stays its node's while it hibernates, and is
  released once its last socket closed.
- Chat-like broadcast across nodes on two Lua nodes, and on a Lua node and a
  Python node serving one namespace.
"""
import asyncio
import json
import re
import shutil
import signal

import pytest

from devserver import CHAT, DOBJ_LUA, DevServer, dev_env
from pg_util import Listener, available

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")
websockets = pytest.importorskip("websockets")

TTL, GRACE = 1.5, 0.5  # the fault test's: short, with room for a loaded machine
LOST = 1012  # docs/cluster.md: the node lost the object; reconnect
REASON = "this node lost the Durable Object to another node: reconnect"
ENV = {"DOBJ_CLUSTER_URL": "", "DOBJ_NODE_ADDR": "", "DOBJ_CLUSTER_TTL": "", "DOBJ_CLUSTER_GRACE": ""}


def chat_project(tmp_path, lang, name="chat"):
    """A copy of examples/chat's `lang` project named `name` (the worker's
    name is part of the namespace's key: Python and Lua nodes share a
    namespace when the names match)."""
    d = tmp_path / f"{lang}-{name}"
    if not d.exists():
        shutil.copytree(CHAT / lang, d)
        toml = d / "wrangler.toml"
        toml.write_text(re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', toml.read_text(), count=1))
        # The page is read from two folders up.
        shutil.copy(CHAT / "index.html", tmp_path / "index.html")
    return d


class Nodes:
    """Node processes of one test; each stopped at its end."""

    def __init__(self, pg, tmp_path, kind):
        self.pg, self.tmp, self.kind, self.started = pg, tmp_path, kind, []

    def start(self, lang=None, name="chat", idle=None, ttl=TTL):
        lang = lang or ("lua" if self.kind == "lua" else "python")
        if lang == "lua" and not DOBJ_LUA.exists():
            pytest.skip("dobj-lua dev is not built (make build)")
        project = chat_project(self.tmp, lang, name)
        state = self.tmp / f"state{len(self.started)}"
        args = ["--config", str(project / "wrangler.toml"), "--persist-to", str(state),
                "--cluster", self.pg.url, "--node-addr", "127.0.0.1:0",
                "--cluster-ttl", str(ttl), "--cluster-grace", str(GRACE)]
        if idle is not None:
            args += ["--idle-timeout", str(idle)]
        s = DevServer(self.tmp, *args, lua=lang == "lua", env=dev_env(**ENV),
                      server=None if lang == "lua" else ("uvicorn" if self.kind == "uvicorn" else None))
        s.node = int(re.search(r"cluster: node (\d+) at", s.output()).group(1))
        s.state = state
        self.started.append(s)
        return s

    def stop(self):
        for s in self.started:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGCONT)
            s.kill()


@pytest.fixture(params=["native", "uvicorn", "lua"])
def nodes(request, pg, tmp_path):
    n = Nodes(pg, tmp_path, request.param)
    try:
        yield n
    finally:
        n.stop()


async def join(node, room, name):
    return await websockets.connect(f"ws://127.0.0.1:{node.port}/rooms/{room}?name={name}")


async def recv(ws, timeout=30):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def closed(ws, timeout=30):
    """(close code, reason, messages received before the close), the close
    within timeout."""
    got = []
    with pytest.raises(websockets.ConnectionClosed) as e:
        while True:
            got.append(await asyncio.wait_for(ws.recv(), timeout))
    rcvd = e.value.rcvd
    return (rcvd.code, rcvd.reason, got) if rcvd else (None, None, got)


async def test_a_paused_owner_that_lost_its_room_closes_its_sockets_when_it_resumes(nodes, pg):
    """SIGSTOP the room's node past its lease, another node takes the room
    over, SIGCONT: the resumed node closes its client's socket with 1012 as
    soon as it learns it lost the room, and the room goes on elsewhere with
    every acknowledged message."""
    a, b = nodes.start(), nodes.start()
    room = f"paused-{nodes.kind}"
    alice = await join(a, room, "alice")          # the room is a's
    bob = await join(b, room, "bob")              # relayed to a through b
    assert await recv(alice) == {"type": "join", "name": "bob"}
    await bob.send("hi")
    for ws in (alice, bob):
        assert await recv(ws) == {"type": "message", "seq": 1, "name": "bob", "text": "hi"}
    a.proc.send_signal(signal.SIGSTOP)
    try:
        # b finds a silent for a lease TTL: bob's socket goes (the link is lost).
        assert (await closed(bob))[:2] == (1001, "the Durable Object's node went away")
        # Past a's lease and the grace, carol's upgrade makes the room b's.
        await asyncio.sleep(TTL + GRACE)
        carol = await join(b, room, "carol")
        await carol.send("/who")
        assert await recv(carol) == {"type": "who", "names": ["carol"]}
        await carol.send("still here")
        assert await recv(carol) == {"type": "message", "seq": 2, "name": "carol", "text": "still here"}
    finally:
        a.proc.send_signal(signal.SIGCONT)
    # Nothing the room did on a after it lost it (bob's leave) goes out.
    assert await closed(alice) == (LOST, REASON, [])
    a.wait_for(r"cluster: node %d lost its lease" % a.node)
    # Alice comes back through a: the room is b's, her socket relayed there.
    alice = await join(a, room, "alice")
    assert await recv(carol) == {"type": "join", "name": "alice"}
    await alice.send("back")
    for ws in (alice, carol):
        assert await recv(ws) == {"type": "message", "seq": 3, "name": "alice", "text": "back"}
    await alice.close()
    await carol.close()


async def test_a_node_whose_lease_was_refused_closes_accepted_and_relayed_sockets(nodes, pg):
    """The room's node finds its lease refused (it lapsed on the database's
    clock, as for a node cut off past it) while its link to the other node is
    up: the socket it accepted and the one relayed through the other node are
    both closed with 1012; their clients reconnect and talk again."""
    a, b = nodes.start(), nodes.start()
    room = f"refused-{nodes.kind}"
    alice = await join(a, room, "alice")
    bob = await join(b, room, "bob")
    assert await recv(alice) == {"type": "join", "name": "bob"}
    pg.lapse_lease(a.node)
    for ws in (alice, bob):
        assert await closed(ws) == (LOST, REASON, [])
    a.wait_for(r"cluster: node %d lost its lease" % a.node)
    bob = await join(b, room, "bob")
    alice = await join(a, room, "alice")
    assert await recv(bob) == {"type": "join", "name": "alice"}
    await alice.send("again")
    for ws in (alice, bob):
        assert await recv(ws) == {"type": "message", "seq": 1, "name": "alice", "text": "again"}
    await alice.close()
    await bob.close()


async def test_a_refused_fencing_epoch_closes_the_rooms_sockets_and_drops_what_it_sent(nodes, pg):
    """Another incarnation's epoch in PostgreSQL (as after a takeover): the
    room's next write is refused, so the room is reset, what that step sent is
    never delivered, and its sockets are closed with 1012.  A client that
    reconnects finds every acknowledged message and nothing else."""
    a = nodes.start()
    room = f"fenced-{nodes.kind}"
    alice = await join(a, room, "alice")
    await alice.send("one")
    assert await recv(alice) == {"type": "message", "seq": 1, "name": "alice", "text": "one"}
    assert pg.sql(f"UPDATE dobj_owner SET epoch = epoch + 1 WHERE node_id = {a.node} RETURNING 1") == ["1"]
    await alice.send("two")  # its write is refused: "seq 2" never goes out
    assert await closed(alice) == (LOST, REASON, [])
    alice = await join(a, room, "alice")
    await alice.send("three")
    assert await recv(alice) == {"type": "message", "seq": 2, "name": "alice", "text": "three"}
    await alice.close()


async def test_a_node_cut_off_from_postgresql_past_its_lease_closes_its_sockets(nodes, pg):
    """PostgreSQL goes away: past TTL + grace without a renewal, another node
    may own the room, so the node resets it and closes its sockets with 1012
    (before, they stayed open on a node that dropped what they sent).  Once
    PostgreSQL is back, the room goes on with every acknowledged message."""
    a = nodes.start()
    room = f"cut-off-{nodes.kind}"
    alice = await join(a, room, "alice")
    await alice.send("one")
    assert await recv(alice) == {"type": "message", "seq": 1, "name": "alice", "text": "one"}
    pg.kill()
    try:
        assert await closed(alice) == (LOST, REASON, [])
        a.wait_for(r"cluster: node %d could not renew its lease for TTL \+ grace" % a.node)
    finally:
        pg.restart()
    a.wait_for(r"cluster: node %d lost its lease" % a.node)  # refused once PostgreSQL is back
    alice = await join(a, room, "alice")
    await alice.send("two")
    assert await recv(alice) == {"type": "message", "seq": 2, "name": "alice", "text": "two"}
    await alice.close()


@pytest.mark.parametrize("langs", [("lua", "lua"), ("lua", "python"), ("python", "lua")])
async def test_chat_broadcast_across_nodes(pg, tmp_path, langs):
    """examples/chat on two nodes (two `dobj-lua dev`, or a Lua and a Python
    one serving one namespace: the same worker name, the same class in each
    language): clients on both nodes join one room, every message reaches
    everyone in order, leaves cross nodes; when the room's node stops, a
    client of the other node reconnects and the room goes on there, in the
    other language, from what PostgreSQL holds."""
    n = Nodes(pg, tmp_path, "native")
    try:
        a, b = n.start(langs[0]), n.start(langs[1])
        room = "across-" + "-".join(langs)
        alice = await join(a, room, "alice")  # the room is a's: a's language runs it
        bob = await join(b, room, "bob")
        carol = await join(b, room, "carol")
        dave = await join(a, room, "dave")
        everyone = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}
        order = list(everyone)
        for i, name in enumerate(order):
            for later in order[i + 1:]:
                assert await recv(everyone[name]) == {"type": "join", "name": later}
        await carol.send("/who")
        assert await recv(carol) == {"type": "who", "names": sorted(order)}
        for seq, name in enumerate(order, 1):
            await everyone[name].send(f"hi from {name}")
            for ws in everyone.values():
                assert await recv(ws) == {"type": "message", "seq": seq, "name": name,
                                          "text": f"hi from {name}"}
        await bob.close()
        for name in ("alice", "carol", "dave"):
            assert await recv(everyone[name]) == {"type": "leave", "name": "bob", "code": 1000}
        # The room's node stops: carol's relayed socket is closed by b.
        assert a.stop() == 0
        assert (await closed(carol))[:2] == (1001, "the Durable Object's node went away")
        for ws in (alice, dave):
            await closed(ws)
        carol = await join(b, room, "carol")
        await carol.send("/who")
        assert await recv(carol) == {"type": "who", "names": ["carol"]}
        await carol.send("after")
        assert await recv(carol) == {"type": "message", "seq": 5, "name": "carol", "text": "after"}
        await carol.close()
    finally:
        n.stop()


RELEASED = """
CREATE OR REPLACE FUNCTION dobj_test_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.node_id IS NULL AND OLD.node_id IS NOT NULL THEN
    PERFORM pg_notify('dobj_released', OLD.node_id::text);
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS dobj_test_released ON dobj_owner;
CREATE TRIGGER dobj_test_released AFTER UPDATE ON dobj_owner
  FOR EACH ROW EXECUTE FUNCTION dobj_test_released();
"""


async def hibernating(a, pg, room):
    """alice's socket in `room` on node a, the room evicted past a's idle
    timeout (0.3 s) and kept a's by the socket."""
    alice = await join(a, room, "alice")
    await alice.send("one")
    assert await recv(alice) == {"type": "message", "seq": 1, "name": "alice", "text": "one"}
    await asyncio.sleep(1)
    assert pg.sql(f"SELECT count(*) FROM dobj_owner WHERE node_id = {a.node}") == ["1"]
    return alice


async def close_and_see_released(alice, a, pg):
    """Close the room's last socket: node a gives the claim back
    (PostgreSQL says so: the NOTIFY of the trigger, no polling)."""
    pg.sql(RELEASED)
    released = Listener(pg.url, "dobj_released")
    try:
        await alice.close()
        assert await asyncio.to_thread(released.wait, 30) == str(a.node)
    finally:
        released.close()
    assert pg.sql(f"SELECT count(*) FROM dobj_owner WHERE node_id = {a.node}") == ["0"]


async def test_a_room_stays_on_its_node_while_a_socket_is_open_and_goes_after_the_last(nodes, pg):
    """Hibernation in a cluster: a room with an open socket stays its node's
    while it is evicted between messages (the next message wakes it there,
    with its sockets); once its last socket closed, its next eviction
    releases it (PostgreSQL says so: a NOTIFY from a trigger on the owner
    table, no polling), and another node takes it at once."""
    a, b = nodes.start(idle=0.3), nodes.start()
    room = f"sticky-{nodes.kind}"
    alice = await hibernating(a, pg, room)
    await alice.send("two")
    assert await recv(alice) == {"type": "message", "seq": 2, "name": "alice", "text": "two"}
    await close_and_see_released(alice, a, pg)
    bob = await join(b, room, "bob")  # claimed by b: a holds it no more
    assert pg.sql(f"SELECT count(*) FROM dobj_owner WHERE node_id = {b.node}") == ["1"]
    await bob.send("three")
    assert await recv(bob) == {"type": "message", "seq": 3, "name": "bob", "text": "three"}
    await bob.close()


async def test_a_hibernating_room_is_released_when_its_last_socket_goes_even_if_it_cannot_wake(
        nodes, pg):
    """A room hibernates on its node with one socket, and its data in
    PostgreSQL is damaged meanwhile, so the last socket's close cannot wake
    it (the restore fails).  Its claim goes back anyway when that socket
    leaves (PostgreSQL says so: the NOTIFY of the trigger), without waking
    it; before, the room stayed its node's as long as the node lived."""
    a = nodes.start(idle=0.3)
    room = f"unwakeable-{nodes.kind}"
    alice = await hibernating(a, pg, room)
    # One bit of each of its log rows; the node's copy is not taken as current.
    pg.sql(f"UPDATE dobj_wal SET frames = set_byte(frames, 20, get_byte(frames, 20) # 16) "
           f"WHERE object_id IN (SELECT object_id FROM dobj_owner WHERE node_id = {a.node})")
    markers = list(a.state.rglob("*-seq"))
    assert markers
    for f in markers:
        f.unlink()
    await close_and_see_released(alice, a, pg)


async def test_a_hibernating_room_closed_while_postgresql_is_away_is_released_once_it_is_back(
        nodes, pg):
    """PostgreSQL is away (for less than the lease: the node keeps it) when
    a hibernating room's last socket closes: the close cannot wake the room
    and the claim cannot be given back then; it is, once a renewal finds
    PostgreSQL back (before, the room stayed its node's)."""
    a = nodes.start(idle=0.3, ttl=10)
    room = f"away-{nodes.kind}"
    alice = await hibernating(a, pg, room)
    owned = f"SELECT count(*) FROM dobj_owner WHERE node_id = {a.node}"
    pg.sql(RELEASED)
    pg.kill()
    try:
        await alice.close()
        # The close's wake and the give-back fail meanwhile (a refused
        # connection fails at once; nothing reports them).
        await asyncio.sleep(3)
    finally:
        pg.restart()
    released = Listener(pg.url, "dobj_released")
    try:
        if pg.sql(owned) != ["0"]:
            assert await asyncio.to_thread(released.wait, 30) == str(a.node)
    finally:
        released.close()
    assert pg.sql(owned) == ["0"]
