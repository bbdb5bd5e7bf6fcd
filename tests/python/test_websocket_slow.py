"""A client that does not read (tests/python/slowclient.py: a real client
protocol over a socket with a 4 KiB receive buffer) on every server: what
waits for it in the server is bounded (DOBJ_WS_MAX_BUFFERED, 32 MiB; without
the bound the server grew without limit).  Past the bound the server drops
the connection and its queue: the client sees a 1008 close when the socket
takes it, or the connection end; the object hears a close with 1008
(was_clean False); everybody else goes on."""
import asyncio
import json
import os
import time

import pytest

websockets = pytest.importorskip("websockets")

from slowclient import SlowClient  # noqa: E402
from test_websocket_dev import PROBE, connect  # noqa: E402
from devserver import dev_env, write_project  # noqa: E402
from pg_util import available  # noqa: E402

SLOW = "the client did not read: more than 32 MiB waited for it"


@pytest.fixture
def probe(tmp_path, servers):
    return servers(write_project(tmp_path / "probe", PROBE))


async def test_a_handler_sending_past_32_mib_to_a_client_that_does_not_read(probe):
    """One handler sends 800 messages of 64 KiB (50 MiB), then closes with
    4001: the messages past the bound are dropped, not kept, and the close
    the client sees is the server's 1008, not the object's 4001."""
    b = await connect(probe)
    a = await asyncio.to_thread(SlowClient, probe.port, "/room")
    assert a.send("flood 800")
    # (state 3: the handler closed too, after its sends)
    assert await asyncio.wait_for(b.recv(), 120) == f"closed 1008 {SLOW} False state=3"
    messages, code = await asyncio.to_thread(a.read_to_end)
    assert messages[:1] == ["hello"]
    assert len(messages) < 400  # at most what the socket buffers held
    assert code in (1008, 1006)  # the close frame, if the socket took it
    # The object goes on: its other socket is served.
    await b.send("state")
    assert json.loads(await asyncio.wait_for(b.recv(), 30))["all"] == 1
    await b.close()


async def test_a_client_that_never_answers_the_servers_close_is_let_go(probe):
    """The object closes (4000) and the client neither answers nor closes
    its end: the server ends the connection once its close wait (5 s) ran
    out, and the object hears 1006, was_clean False (RFC 6455 7.1.5: no
    close frame came; workerd says the same), on every server.  The core's
    server held such a connection, its socket and buffers, for good; under
    uvicorn the object heard its own 4000, was_clean True, at once (uvicorn
    hands the app its own close back as the disconnect) and the connection
    stayed for uvicorn's 10 s."""
    b = await connect(probe)
    a = await asyncio.to_thread(SlowClient, probe.port, "/room", 40)
    assert a.send("bye")
    started = time.monotonic()
    messages, code = await asyncio.to_thread(a.read_to_end)  # never answers
    waited = time.monotonic() - started
    assert messages[:1] == ["hello"]
    assert code == 4000
    assert 4.5 < waited < 8.0
    assert await asyncio.wait_for(b.recv(), 30) == "closed 1006  False state=3"
    await b.close()


async def test_a_client_that_answers_the_servers_close_ends_it_cleanly(probe):
    """The same close answered, as a browser does: the object hears the
    client's answer (4000 "done" echoed), was_clean True, once it came, and
    the connection ends without the wait."""
    b = await connect(probe)
    a = await asyncio.to_thread(SlowClient, probe.port, "/room", 40)
    assert a.send("bye")
    started = time.monotonic()
    messages, code = await asyncio.to_thread(a.read_to_end, True)
    assert messages[:1] == ["hello"]
    assert code == 4000
    assert time.monotonic() - started < 4.0
    assert await asyncio.wait_for(b.recv(), 30) == "closed 4000 done True state=3"
    await b.close()


async def test_a_close_stuck_behind_output_the_client_never_reads_is_let_go(probe):
    """The object sends ~6 MiB (under the 32 MiB bound) to a client that
    does not read, then closes: its close frame waits behind that output and
    never goes out.  The close wait counts from the object's close, not from
    the frame leaving: the server ends the connection and the object hears
    1006.  The core's server held it, with its ~6 MiB, until the client read."""
    b = await connect(probe)
    a = await asyncio.to_thread(SlowClient, probe.port, "/room", 60)
    try:
        assert a.send("flood 100")
        got = await asyncio.wait_for(b.recv(), 30)
        assert got.startswith("closed 1006 ") and got.endswith(" False state=3"), got
    finally:
        a.close()
    await b.close()


async def test_one_slow_reader_in_a_chat_room_is_dropped_and_the_room_goes_on(chat_server):
    """examples/chat: ann reads, slow never does, bob talks (~49 MiB, one
    message at a time): slow leaves with 1008, ann and bob get every message
    in order, and bob was never held back by slow."""
    server = chat_server()
    base = f"ws://127.0.0.1:{server.port}/rooms/lobby?name="
    ann = await websockets.connect(base + "ann", max_size=None, max_queue=None)
    slow = await asyncio.to_thread(SlowClient, server.port, "/rooms/lobby?name=slow")
    assert json.loads(await ann.recv()) == {"type": "join", "name": "slow"}
    bob = await websockets.connect(base + "bob", max_size=None, max_queue=None)
    assert json.loads(await ann.recv()) == {"type": "join", "name": "bob"}
    text = "x" * 64000
    for k in range(800):
        await bob.send(f"{k:04d}{text}")
        event = json.loads(await asyncio.wait_for(bob.recv(), 60))
        if event["type"] == "leave":  # slow's, sent to bob too
            event = json.loads(await asyncio.wait_for(bob.recv(), 60))
        assert (event["type"], event["text"][:4]) == ("message", f"{k:04d}")
    got, left = [], None
    while len(got) < 800:
        event = json.loads(await asyncio.wait_for(ann.recv(), 60))
        if event["type"] == "leave":
            left = event
        else:
            got.append(event["text"][:4])
    assert got == [f"{k:04d}" for k in range(800)]
    if left is None:  # the leave came after the last message
        left = json.loads(await asyncio.wait_for(ann.recv(), 60))
    assert left == {"type": "leave", "name": "slow", "code": 1008}
    messages, code = await asyncio.to_thread(slow.read_to_end)
    assert len(messages) < 400 and code in (1008, 1006)
    names = json.loads(await ask_who(ann))["names"]
    assert names == ["ann", "bob"]
    await ann.close()
    await bob.close()


async def ask_who(ws):
    await ws.send("/who")
    while True:
        m = await asyncio.wait_for(ws.recv(), 30)
        if json.loads(m)["type"] == "who":
            return m


@pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")
async def test_across_cluster_nodes_the_entry_node_drops_a_client_that_does_not_read(
        pg, tmp_path, servers):
    """docs/cluster.md, "WebSockets between nodes": the room lives on node b
    (bob connected there first), slow's connection came in on node a, which
    relays what the room sends: the bound holds on a, and the room on b
    hears slow leave with 1008."""
    from devserver import CHAT, copy_example, dev_env
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DOBJ_CLUSTER_", "DOBJ_NODE_"))}
    for d in ("a", "b"):
        copy_example(tmp_path / d, CHAT)
    a, b = (servers(tmp_path / d / "chat" / "python", "--cluster", pg.url, "--node-addr",
                    "127.0.0.1:0", env=dev_env(**clean)) for d in ("a", "b"))
    room = f"/rooms/slow-{servers.kind}?name="
    bob = await websockets.connect(f"ws://127.0.0.1:{b.port}{room}bob", max_size=None,
                                   max_queue=None)
    slow = await asyncio.to_thread(SlowClient, a.port, f"{room}slow")
    assert json.loads(await asyncio.wait_for(bob.recv(), 30)) == {"type": "join", "name": "slow"}
    text = "x" * 64000
    left = None
    for k in range(800):
        await bob.send(f"{k:04d}{text}")
        event = json.loads(await asyncio.wait_for(bob.recv(), 60))
        if event["type"] == "leave":
            left = event
            event = json.loads(await asyncio.wait_for(bob.recv(), 60))
        assert event["text"][:4] == f"{k:04d}"
    if left is None:
        left = json.loads(await asyncio.wait_for(bob.recv(), 60))
    assert left == {"type": "leave", "name": "slow", "code": 1008}
    messages, code = await asyncio.to_thread(slow.read_to_end)
    assert len(messages) < 400 and code in (1008, 1006)
    await bob.close()


def peak_rss_kib(pid):
    """The peak resident size of process pid (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def sanitized():
    """ASan keeps freed memory (its quarantine): peak sizes say nothing then."""
    return "libasan" in os.environ.get("LD_PRELOAD", "") or "ASAN_OPTIONS" in os.environ


def flood(client, total, message):
    """Send `message` until `total` bytes went or the server stopped taking
    them: the bytes sent."""
    while client.sent < total and client.send(message):
        pass
    return client.sent


async def test_an_echo_fed_by_a_client_that_does_not_read(probe):
    """The client sends 64 KiB messages as fast as it can and reads nothing:
    the server reads it only as fast as the object handles its messages
    (backpressure), the echoes wait up to the bound, then the connection is
    dropped (the object hears 1008) and the client can send no more.  Before,
    the server read all 160 MiB at once and kept every message and echo."""
    b = await connect(probe)
    before = peak_rss_kib(probe.proc.pid)
    a = await asyncio.to_thread(SlowClient, probe.port, "/room", 60)
    sent = asyncio.ensure_future(asyncio.to_thread(flood, a, 160 << 20, b"x" * 65536))
    assert await asyncio.wait_for(b.recv(), 120) == f"closed 1008 {SLOW} False state=2"
    sent = await asyncio.wait_for(sent, 120)
    assert sent < 100 << 20  # 32 MiB of echoes waiting, the rest in TCP buffers
    if not sanitized():
        grown = peak_rss_kib(probe.proc.pid) - before
        assert grown < 100 << 10, f"the server grew by {grown} KiB"
    a.close()
    await b.close()


FLOOD = """
import hashlib

import dobj


class Counter(dobj.DurableObject):
    n = 0

    async def fetch(self, request):
        client, server = dobj.WebSocketPair()
        self.ctx.accept_web_socket(server)
        return dobj.Response(None, status=101, web_socket=client)

    async def web_socket_message(self, ws, message):
        if message == "done":
            for w in self.ctx.get_web_sockets():
                if w != ws:
                    w.send(f"done {self.n}")
            return
        for _ in range(60):  # slower than the network: messages would pile up
            hashlib.sha256(message).digest()
        self.n += 1
        if self.n == 64:  # 4 MiB handled: the client was held back by now
            for w in self.ctx.get_web_sockets():
                if w != ws:
                    w.send("got 64")


async def fetch(request, env, ctx):
    # one object per test run: a node of an earlier run may still hold its own
    return await env.COUNTER.get_by_name(request.url.rsplit("/", 1)[1]).fetch(request)
"""


@pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")
async def test_a_client_flooding_an_object_on_another_node_is_read_as_fast_as_it_is_handled(
        pg, tmp_path, servers):
    """The object lives on node b (a watcher connected there first); a client
    of node a sends 96 MiB of 64 KiB messages as fast as it can, faster than
    the object handles them.  Node a stops reading it once what b has not
    acknowledged handling passes DOBJ_WS_MAX_BACKLOG (the local rule, across
    nodes), so neither node holds more than a few MiB of it; every message
    arrives, in order.  Before, a read everything at once and b queued it
    all (b grew by about the 96 MiB)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DOBJ_CLUSTER_", "DOBJ_NODE_"))}
    a, b = (servers(write_project(tmp_path / d, FLOOD), "--cluster", pg.url, "--node-addr",
                    "127.0.0.1:0", env=dev_env(**clean)) for d in ("a", "b"))
    path = f"/flood-{servers.kind}"
    watcher = await websockets.connect(f"ws://127.0.0.1:{b.port}{path}")  # the object is b's
    before = {s: peak_rss_kib(s.proc.pid) for s in (a, b)}
    flooder = await asyncio.to_thread(SlowClient, a.port, path, 60)
    total, message = 96 << 20, b"x" * 65536
    assert await asyncio.wait_for(asyncio.to_thread(flood, flooder, total, message), 300) == total
    assert flooder.send("done")
    assert await asyncio.wait_for(watcher.recv(), 300) == "got 64"
    assert await asyncio.wait_for(watcher.recv(), 300) == f"done {total // len(message)}"
    if not sanitized():
        for s in (a, b):
            grown = peak_rss_kib(s.proc.pid) - before[s]
            assert grown < 40 << 10, f"node {s.port} grew by {grown} KiB"
    flooder.close()
    await watcher.close()


@pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")
async def test_a_flooding_client_held_back_when_the_objects_node_goes_away_is_closed(
        pg, tmp_path, servers):
    """Node a holds back a client that floods an object of node b (what b
    has not acknowledged passed the bound); b is killed: a closes the client
    with 1001 and reads it again (nothing will acknowledge what it held), so
    the client's close goes through and the connection ends."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DOBJ_CLUSTER_", "DOBJ_NODE_"))}
    a, b = (servers(write_project(tmp_path / d, FLOOD), "--cluster", pg.url, "--node-addr",
                    "127.0.0.1:0", env=dev_env(**clean)) for d in ("a", "b"))
    path = f"/gone-{servers.kind}"
    watcher = await websockets.connect(f"ws://127.0.0.1:{b.port}{path}")  # the object is b's
    flooder = await asyncio.to_thread(SlowClient, a.port, path, 30)
    sent = asyncio.ensure_future(asyncio.to_thread(flood, flooder, 256 << 20, b"x" * 65536))
    assert await asyncio.wait_for(watcher.recv(), 120) == "got 64"
    b.proc.kill()
    # (before, a never read the client again: its sends, then its reads,
    # timed out after 30 s)
    await asyncio.wait_for(sent, 120)
    messages, code = await asyncio.wait_for(asyncio.to_thread(flooder.read_to_end, True), 120)
    assert code == 1001
    flooder.close()
    await watcher.close()


AUTO = """
import dobj


class Counter(dobj.DurableObject):
    async def fetch(self, request):
        client, server = dobj.WebSocketPair()
        self.ctx.accept_web_socket(server)
        self.ctx.set_web_socket_auto_response(dobj.WebSocketRequestResponsePair("ping", "p" * 2048))
        return dobj.Response(None, status=101, web_socket=client)

    async def web_socket_message(self, ws, message):
        ws.send(message)

    async def web_socket_close(self, ws, code, reason, was_clean):
        for w in self.ctx.get_web_sockets():
            if w != ws:
                w.send(f"closed {code} {reason} {was_clean}")


async def fetch(request, env, ctx):
    return await env.COUNTER.get_by_name("auto").fetch(request)
"""


async def test_auto_responses_to_a_client_that_does_not_read_are_bounded(tmp_path, servers):
    """The runtime answers "ping" without waking the object: those answers
    wait for the client under the same bound (they grew without one)."""
    server = servers(write_project(tmp_path / "auto", AUTO))
    b = await websockets.connect(f"ws://127.0.0.1:{server.port}/")
    a = await asyncio.to_thread(SlowClient, server.port, "/", 60)
    sent = asyncio.ensure_future(asyncio.to_thread(flood, a, 40000 * 4, "ping"))
    assert await asyncio.wait_for(b.recv(), 120) == f"closed 1008 {SLOW} False"
    await asyncio.wait_for(sent, 120)
    a.close()
    await b.close()


async def test_a_ping_flood_from_a_client_that_does_not_read_is_not_read(tmp_path, servers):
    """wslay answers pings itself: once the pongs waiting for a client that
    does not read reach the bound, the server stops reading it (its pings
    wait in TCP buffers), instead of growing."""
    if servers.kind == "uvicorn":
        pytest.skip("uvicorn answers pings itself, unbounded (left alone)")
    server = servers(write_project(tmp_path / "auto", AUTO))
    a = await asyncio.to_thread(SlowClient, server.port, "/", 5)
    before = peak_rss_kib(server.proc.pid)

    def pings():
        ping = b"p" * 125
        while a.sent < 200 << 20:
            a.proto.send_ping(ping)
            try:
                a._flush()
            except OSError:  # the send timed out: the server stopped reading
                return a.sent
            a.sent += len(ping)
        return a.sent

    sent = await asyncio.wait_for(asyncio.to_thread(pings), 120)
    assert sent < 100 << 20
    if not sanitized():
        grown = peak_rss_kib(server.proc.pid) - before
        assert grown < 100 << 10, f"the server grew by {grown} KiB"
    a.close()
