"""Calls between the nodes of a cluster (docs/cluster.md, "Routing"), on a real
PostgreSQL: node processes (tests/python/route_node.py) calling each other's
objects by fetch and RPC, errors arriving as the object raised them, a call in
flight when its owner is SIGKILLed failing with `retryable`, a call that
reaches a node after the object moved away (NOT_OWNER) followed to the new
owner, a client without node_addr that never claims, and hostile bytes on a
node's port."""
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import dobj
from pg_util import HeldLock, available
from route_util import NODE, Node
from wire_util import HELLO, call_frame, connect, frame, result_of, split_frames

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")


@pytest.fixture
def nodes(pg, tmp_path):
    made = []

    def make(name, **kw):
        n = Node(pg, tmp_path / name, **kw)
        made.append(n)
        return n

    yield make
    for n in made:
        if n.proc.poll() is None and n.proc.returncode is None:
            try:
                os.kill(n.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        n.close()


def test_two_nodes_call_each_others_objects(nodes):
    a, b = nodes("a"), nodes("b")
    pa = a.call("on-a", "whoami")["ok"]  # a claims it
    pb = b.call("on-b", "whoami")["ok"]
    assert pa != pb
    assert b.call("on-a", "whoami") == {"tag": 2, "ok": pa}  # routed to a
    assert a.call("on-b", "whoami")["ok"] == pb                # and back
    assert [b.call("on-a", "add", 2)["ok"], a.call("on-a", "add", 3)["ok"]] == [2, 5]
    # Values travel in V8's format: nested containers, bytes, big integers.
    assert b.call("on-a", "echo", [1, 2.5, "x", None], {"k": [True]})["ok"] == [[[1, 2.5, "x", None], {"k": [True]}], {}]
    assert b.reply(b.send(name="on-a", method="echo", args=[1], kwargs={"k": "v"}))["ok"] == [[1], {"k": "v"}]
    # fetch: method, URL, body, status and headers go and come back.
    r = b.reply(b.send("fetch", name="on-a", path="/p?q=1", body="hello"))
    assert r["ok"] == [201, str(pa), "POST http://do/p?q=1 hello"]
    # A call made inside an object on b, to an object on a.
    assert b.call("on-b", "call", "on-a", "add", 1)["ok"] == 6


def test_errors_arrive_as_the_object_raised_them(nodes):
    a, b = nodes("a"), nodes("b")
    a.call("err", "whoami")
    e = b.call("err", "boom", "bad value")
    assert (e["type"], e["err"], e["remote"], e["retryable"]) == ("ValueError", "bad value", True, False)
    # KeyError's str() is its key's repr: the caller's KeyError is made from
    # the key, not from that repr (which came back as "'k'" in quotes again).
    e = b.call("err", "missing", "k")
    assert (e["type"], e["err"], e["remote"], e["retryable"]) == ("KeyError", "'k'", True, False)
    e = b.call("err", "custom")  # a class only the object's node has: a dobj.Error
    assert (e["type"], e["err"], e["remote"], e["retryable"]) == ("Error", "custom failure", True, False)
    e = b.call("err", "nosuch")
    assert e["type"] == "Error" and "does not implement the method" in e["err"] and e["remote"]
    assert e["retryable"] is False


def test_a_call_in_flight_when_the_owner_is_killed_is_retryable(nodes, pg):
    a, b = nodes("a"), nodes("b")
    a.call("doomed", "add", 1)
    tag = b.send(name="doomed", method="slow", args=[30])
    time.sleep(0.5)  # the call is in a's handler now
    t0 = time.monotonic()
    a.kill()
    e = b.reply(tag)
    assert e["retryable"] is True and e["remote"] is False
    assert "may or may not have run" in e["err"]
    assert time.monotonic() - t0 < 5
    # The next call finds the object again once a's lease lapsed (TTL 1.5 s +
    # grace 0.5 s), with every acknowledged write.
    deadline = time.monotonic() + 15
    while True:
        r = b.call("doomed", "add", 1)
        if "ok" in r or time.monotonic() > deadline:
            break
        assert r["retryable"] is True and "was not sent" in r["err"], r
        time.sleep(0.2)
    assert r["ok"] == 2


def test_a_call_to_a_paused_owner_fails_retryable_instead_of_hanging(nodes):
    a, b = nodes("a"), nodes("b")
    a.call("paused", "add", 1)
    tag = b.send(name="paused", method="slow", args=[0.5])
    a.kill(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        e = b.reply(tag)
    finally:
        a.kill(signal.SIGCONT)
    # a stops answering pings: after one lease TTL (1.5 s) the call fails.
    assert e["retryable"] is True and "did not answer" in e["err"], e
    assert time.monotonic() - t0 < 1.5 + 2


async def test_a_call_follows_an_object_that_moved(nodes, pg, tmp_path):
    a, b = nodes("a", idle=0.3), nodes("b")
    assert a.call("mover", "add", 1)["ok"] == 1
    assert b.call("mover", "add", 1)["ok"] == 2          # b caches: a owns it
    # a evicts it (idle), and this process (a node too) takes it over.
    import route_node
    rt = dobj.Runtime(storage=str(tmp_path / "c"), cluster=pg.url, node_addr="127.0.0.1:0")
    ns = rt.bind("ROUTE", route_node.Box)
    hexid = str(ns.id_from_name("mover"))
    deadline = time.monotonic() + 10
    while pg.sql(f"SELECT node_id IS NULL FROM dobj_owner WHERE ns = 'ROUTE' "
                 f"AND object_id = decode('{hexid}', 'hex')") != ["t"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert await ns.get_by_name("mover").add(1) == 3
    # b sends to a (its cache), a answers NOT_OWNER, b looks again: here.
    tag = b.send(name="mover", method="add", args=[1])
    r = await asyncio.get_running_loop().run_in_executor(None, b.reply, tag)
    assert r["ok"] == 4
    assert await ns.get_by_name("mover").whoami() == os.getpid()
    rt.close()


def test_a_client_without_node_addr_never_claims(nodes, pg):
    a = nodes("a")
    c = nodes("client", addr=None)
    assert c.addr is None
    assert c.call("placed", "add", 5)["ok"] == 5
    assert c.call("placed", "whoami")["ok"] == a.proc.pid
    owner = pg.sql("SELECT o.node_id FROM dobj_owner o WHERE o.ns = 'ROUTE' AND o.node_id = %d" % c.node_id)
    assert owner == []


def table_lock(pg, table):
    """A table locked ACCESS EXCLUSIVE from psql until release(): every
    statement that reads it waits meanwhile (a slow PostgreSQL)."""
    return HeldLock(pg, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';")


async def test_a_clients_lookup_waiting_for_postgresql_delays_no_other_call(nodes, pg, tmp_path):
    import route_node
    a = nodes("a")
    rt = dobj.Runtime(storage=str(tmp_path / "c"), cluster=pg.url)  # a pure client
    ns = rt.bind("ROUTE", route_node.Box)
    known = ns.get_by_name("known")
    assert await known.whoami() == a.proc.pid  # looked up once, then known
    lock = table_lock(pg, "dobj_owner")
    try:
        # The lookup of "unknown" waits for the lock off the runtime's
        # thread; the call to "known" goes out and comes back meanwhile.
        pending = asyncio.ensure_future(ns.get_by_name("unknown").whoami())
        await asyncio.sleep(0)
        assert await asyncio.wait_for(known.whoami(), 1.5) == a.proc.pid
        assert not pending.done()
    finally:
        lock.release()
    assert await pending == a.proc.pid
    rt.close()


def test_a_stub_passed_to_another_node_is_called_there(nodes):
    """A stub inside RPC arguments crosses nodes and becomes a stub of the
    receiving node's runtime; calling through it routes as any call."""
    a, b = nodes("a"), nodes("b")
    a.call("on-a", "whoami")
    b.call("on-b", "whoami")
    assert a.call("t-a", "add", 10)["ok"] == 10
    # on-a (node a) hands on-b (node b) a stub of t-a; on-b calls it: back to a.
    assert a.call("on-a", "pass_stub", "on-b", "t-a", "add", 1)["ok"] == 11
    assert a.call("on-a", "pass_stub", "on-b", "t-a", "whoami")["ok"] == a.proc.pid
    # A stub of an object nobody holds yet: b calls it first, so b claims it.
    assert a.call("on-a", "pass_stub", "on-b", "fresh", "whoami")["ok"] == b.proc.pid
    assert a.call("fresh", "add", 2)["ok"] == 2  # routed to b
    assert b.call("fresh", "whoami")["ok"] == b.proc.pid


def test_a_stub_returned_by_another_node_is_callable(nodes):
    a, b = nodes("a"), nodes("b")
    a.call("on-a", "whoami")
    b.call("on-b", "whoami")
    b.call("r-b", "add", 5)
    a.call("r-a", "add", 7)
    assert a.call("on-a", "take", "on-b", "r-b", "add", 1)["ok"] == ["Stub", "r-b", 6]
    assert a.call("on-a", "take", "on-b", "r-a", "add", 1)["ok"] == ["Stub", "r-a", 8]
    assert a.call("on-a", "take", "on-b", "r-b", "whoami")["ok"] == ["Stub", "r-b", b.proc.pid]


def test_ids_round_trip_through_another_node(nodes):
    a, b = nodes("a"), nodes("b")
    a.call("on-a", "whoami")
    b.call("on-b", "whoami")
    assert a.call("on-a", "id_trip", "on-b", "n1")["ok"] == ["DurableObjectId", True, "n1", True, None, "Stub"]
    assert b.call("on-b", "id_trip", "on-a", "")["ok"] == ["DurableObjectId", True, "", True, None, "Stub"]


def test_a_stub_of_a_namespace_the_other_node_lacks_is_a_clear_error(nodes):
    a, b = nodes("a", extra=True), nodes("b")
    a.call("lack-a", "whoami")
    b.call("lack-b", "whoami")
    e = a.call("lack-a", "pass_other", "lack-b")  # arguments for b
    assert e["type"] == "Error" and e["retryable"] is False, e
    assert f"cannot be received on node {b.node_id}" in e["err"]
    assert f"a stub of namespace 'OTHER', which node {b.node_id} does not serve" in e["err"]
    e = b.call("lack-a", "give_other")           # a result for b: it ran on a
    assert e["type"] == "Error" and e["retryable"] is False and e["remote"] is False, e
    assert f"the result from node {a.node_id} cannot be received here" in e["err"]
    assert "namespace 'OTHER'" in e["err"]
    # Both nodes still serve.
    assert b.call("lack-a", "add", 1)["ok"] == 1 and a.call("lack-b", "add", 1)["ok"] == 1


def test_a_websocket_to_an_object_on_another_node(nodes):
    """docs/cluster.md, "WebSockets between nodes": the client's socket stays on
    the entry node (a), the object (on b) accepts it; messages, tags,
    attachments, getWebSockets, hibernation and closes work across."""
    a, b = nodes("a"), nodes("b", idle=0.3)
    assert b.call("room", "whoami")["ok"] == b.proc.pid  # b owns it
    assert a.reply(a.send("ws_open", name="room", ws=1, ws_tag="t1"))["ok"] == 101
    assert a.ws_next(1) == {"msg": f"hello from {b.proc.pid}"}
    assert a.reply(a.send("ws_send", ws=1, msg="who"))["ok"]
    who = json.loads(a.ws_next(1)["msg"])
    assert who[:4] == [b.proc.pid, ["t1"], {"pid": b.proc.pid}, 1]
    # The object hibernates (idle 0.3 s) and stays b's: the next message
    # constructs it there again, with the same socket, tags and attachment.
    time.sleep(1.2)
    assert a.call("room", "whoami")["ok"] == b.proc.pid
    assert a.reply(a.send("ws_send", ws=1, msg="who"))["ok"]
    again = json.loads(a.ws_next(1)["msg"])
    assert again[:4] == who[:4] and again[4] > who[4]
    # The object closes; then the client answers.
    a.send("ws_send", ws=1, msg="close")
    assert a.ws_next(1) == {"close": [4000, "bye"]}
    assert a.reply(a.send("ws_close", ws=1, code=4000, reason="bye"))["ok"]
    assert a.call("room", "closed")["ok"] == [4000, "bye", True, 1]
    # A second socket, closed by the client first.
    assert a.reply(a.send("ws_open", name="room", ws=2, ws_tag="t2"))["ok"] == 101
    assert a.ws_next(2)["msg"].startswith("hello")
    assert a.reply(a.send("ws_send", ws=2, msg="x"))["ok"]
    assert a.ws_next(2) == {"msg": "echo:x"}
    assert a.reply(a.send("ws_close", ws=2, code=4001, reason="done"))["ok"]
    assert a.call("room", "closed")["ok"] == [4001, "done", True, 1]


def test_a_websocket_between_nodes_outlives_the_idle_bound_of_their_connection(nodes):
    """Node connections with nothing on them are closed (after 10 TTLs by the
    caller, 20 by the called node: docs/cluster.md, "Routing"); one that
    carries a WebSocket is not, however long the socket stays quiet (a
    hibernating room)."""
    a, b = nodes("a", ttl=0.4), nodes("b", idle=0.3, ttl=0.4)
    assert b.call("room", "whoami")["ok"] == b.proc.pid  # b owns it
    assert a.reply(a.send("ws_open", name="room", ws=1, ws_tag="t1"))["ok"] == 101
    assert a.ws_next(1) == {"msg": f"hello from {b.proc.pid}"}
    time.sleep(8.5)  # past both bounds (4 s, 8 s), nothing sent
    assert a.reply(a.send("ws_send", ws=1, msg="x"))["ok"]
    assert a.ws_next(1) == {"msg": "echo:x"}
    assert a.reply(a.send("ws_close", ws=1, code=4001, reason="done"))["ok"]


def test_nodes_with_different_ttls_close_idle_connections_quietly(nodes):
    """The called node closes an idle connection after 20 of its TTLs (5 s
    here), the caller after 10 of its own (15 s): the caller learns the
    called node's bound (in its pong) and closes first, quietly, so a call
    after 5.5 s idle goes through.  (It failed: the caller took the called
    node's close for a failed node and refused calls to it for a TTL.)"""
    a, b = nodes("a", ttl=1.5), nodes("b", ttl=0.25)
    pb = b.call("idle-room", "whoami")["ok"]  # b owns it
    assert a.call("idle-room", "whoami")["ok"] == pb
    time.sleep(5.5)
    r = a.call("idle-room", "whoami")
    assert r.get("ok") == pb, r


def test_a_websocket_whose_caller_gave_up_is_closed(nodes):
    """The 101 reaches the entry node after its call timed out: nobody will
    serve the socket, so the object hears a close (1006) at once."""
    a, b = nodes("a", call_timeout=0.3), nodes("b")
    b.call("late-room", "whoami")
    e = a.reply(a.send("ws_open", name="late-room", ws=1, ws_tag="slow"))
    assert e["retryable"] is True and "call timeout" in e["err"], e
    time.sleep(1.5)  # the 101 comes ~0.7 s after the timeout; a closes it at once
    # The close went on a's connection to b before this call: its event ran first.
    assert a.call("late-room", "closed")["ok"] == [1006, "", False, 1]


def test_a_websocket_is_closed_when_its_objects_node_dies(nodes):
    a, b = nodes("a"), nodes("b")
    b.call("doomed-room", "whoami")
    assert a.reply(a.send("ws_open", name="doomed-room", ws=1))["ok"] == 101
    assert a.ws_next(1)["msg"].startswith("hello")
    b.kill()
    assert a.ws_next(1) == {"close": [1001, "the Durable Object's node went away"]}
    # Input after that goes nowhere, without an error.
    assert a.reply(a.send("ws_send", ws=1, msg="late"))["ok"]


def refused(addr, payload, close=False):
    """Send bytes to a node's port; True when the node closed the connection."""
    with connect(addr) as s:
        s.sendall(payload)
        if close:
            return True
        s.settimeout(10)
        try:
            return s.recv(65536) == b""
        except ConnectionResetError:
            return True


def test_hostile_bytes_on_a_nodes_port_are_refused(nodes):
    a = nodes("a")
    a.call("hostile", "add", 1)
    assert refused(a.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")           # garbage
    assert refused(a.addr, struct.pack(">I", 0xFFFFFFF0) + b"\x01")        # a huge claimed frame
    assert refused(a.addr, HELLO + struct.pack(">I", 500 << 20) + b"\x02")  # over the limit
    assert refused(a.addr, HELLO + frame(9))                                # unknown type
    assert refused(a.addr, HELLO + frame(3, b"\x00" * 30))                  # a RESULT to a server
    assert refused(a.addr, HELLO + frame(6, b"\x00" * 9))                   # WebSocket output to a server
    assert refused(a.addr, HELLO + frame(8, b"\x00" * 8))                   # a GOAWAY to a server
    assert refused(a.addr, HELLO + struct.pack(">I", 1000) + b"\x02abc", close=True)  # closed mid-frame
    # Lies inside a CALL frame: answered with an error or ignored, never a crash.
    for body in [b"", b"\x00" * 8, b"\x00" * 8 + b"\x02\x01\xff\xff", b"\x00" * 8 + b"\x02\x01\x00\x05ROUTE" + b"\x01" * 32 + b"\xff\xff\xff\xfe",
                 b"\x00" * 8 + b"\x02\x01\x00\x05ROUTE" + b"\x01" * 32 + b"\xff\xff\xff\xff\x00\x03add" + b"\xff\x0f\x6f"]:
        with connect(a.addr) as s:
            s.sendall(HELLO + frame(2, body))
            s.settimeout(2)
            try:
                s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                pass
    # WebSocket input for links that do not exist, or cut short: ignored.
    for body in [b"", b"\x00" * 8, b"\x00" * 9 + b"hi", b"\x00" * 7 + b"\x01\x02\x0f", b"\xff" * 9]:
        with connect(a.addr) as s:
            s.sendall(HELLO + frame(7, body))
    # The node still serves.
    assert a.call("hostile", "add", 1)["ok"] == 2
    assert a.proc.poll() is None


LUA_NODE = os.path.join(os.path.dirname(NODE), "..", "lua", "route_node.lua")
LUA_SO = os.path.join(os.path.dirname(NODE), "..", "..", "build", "dobj.so")


@pytest.mark.skipif(not os.path.exists(LUA_SO) or not __import__("shutil").which("lua5.4"),
                    reason="the Lua module (make build) and lua5.4 are needed")
def test_a_python_node_and_a_lua_node_serve_one_namespace(nodes, pg, tmp_path):
    """docs/cluster.md: a namespace may be served by nodes of both languages
    when its class exists in both with the same methods."""
    build = os.path.dirname(os.path.abspath(LUA_SO))
    lua = subprocess.Popen(["lua5.4", LUA_NODE, pg.url, str(tmp_path / "lua"), "127.0.0.1:0", "lua-owned"],
                           stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, LUA_CPATH=f"{build}/?.so;;"))
    try:
        lua_id = int(lua.stdout.readline().split()[1])
        a = nodes("a")
        assert a.call("py-owned", "add", 1)["ok"] == 1
        assert a.call("lua-owned", "whoami")["ok"] == f"lua:{lua_id}"
        assert a.call("lua-owned", "add", 2)["ok"] == 2
        assert a.call("lua-owned", "echo", 1, "x", [True, None])["ok"] == [1, "x", [True, None]]
        # An empty list reaches Lua marked dobj.array, so it comes back a list.
        assert a.call("lua-owned", "echo", [], {})["ok"] == [[], {}]
        r = a.reply(a.send("fetch", name="lua-owned", path="/l", body="hi"))
        assert r["ok"] == [201, str(lua_id), "POST http://do/l hi"]
        e = a.call("lua-owned", "boom", "from lua")
        assert (e["type"], e["err"], e["remote"], e["retryable"]) == ("Error", "from lua", True, False)
        # The Lua node's object calls the Python node's.
        assert a.call("lua-owned", "call", "py-owned", "add", 5)["ok"] == 6
        assert a.call("lua-owned", "call", "py-owned", "whoami")["ok"] == a.proc.pid
        # Stubs and IDs cross between the languages too.
        assert a.call("py-owned", "pass_stub", "lua-owned", "py-two", "add", 3)["ok"] == 3
        assert a.call("py-owned", "take", "lua-owned", "py-two", "add", 1)["ok"] == ["Stub", "py-two", 4]
        assert a.call("py-owned", "take", "lua-owned", "lua-owned", "whoami")["ok"] == \
            ["Stub", "lua-owned", f"lua:{lua_id}"]
        # A Lua name that is not UTF-8 text: Python's s.name raised
        # UnicodeDecodeError; the Lua node now refuses to make it.
        e = a.call("py-owned", "take_latin1", "lua-owned", "caf\u00e9")
        assert (e["type"], e["remote"]) == ("Error", True)
        assert "a Durable Object name must be UTF-8 text (byte 4 is not)" in e["err"]
        assert a.call("py-owned", "take_latin1", "lua-owned", "cafe")["ok"] == ["Stub", "cafe"]
        assert a.call("py-owned", "id_trip", "lua-owned", "n2")["ok"] == \
            ["DurableObjectId", True, "n2", True, None, "Stub"]
        # A WebSocket served here whose object is the Lua node's.
        assert a.reply(a.send("ws_open", name="lua-owned", ws=9))["ok"] == 101
        assert a.ws_next(9) == {"msg": f"hello from {lua_id}"}
        assert a.reply(a.send("ws_send", ws=9, msg="who"))["ok"]
        assert a.ws_next(9) == {"msg": f"{lua_id} lua-tag {lua_id} 1"}
    finally:
        lua.kill()
        lua.wait()
        lua.stdout.close()


def rpc_answer(addr, ref):
    """Send a node a CALL whose one argument is a host object of `ref` bytes
    (a stub or an ID as nodes write them); the RESULT's status and message."""
    payload = b"\xff\x0fA\x01\\" + bytes([len(ref)]) + ref + b"$\x00\x01"
    # The object's own ID must be one ROUTE makes (the node refuses others).
    target = bytes.fromhex(str(dobj.Runtime().bind("ROUTE", dobj.DurableObject).id_from_name("hostile-ref")))
    call = (struct.pack(">QBBH", 7, 2, 1, 5) + b"ROUTE" + target + b"\xff\xff\xff\xff"
            + struct.pack(">H", 4) + b"echo" + payload)
    cid, status, message, _ = result_of(addr, frame(2, call))
    assert cid == 7
    return status, message


def test_hostile_stubs_in_a_call_are_refused(nodes):
    a = nodes("a")
    a.call("hostile-ref", "add", 1)
    # A forged ID for ROUTE (its MAC does not match), a stub of a namespace
    # the node lacks (odd bytes shown as '?'), an ID of 31 bytes, a name flag
    # of 2, an unknown kind.
    status, msg = rpc_answer(a.addr, b"\x01\x00\x05ROUTE" + b"\x02" * 32 + b"\x00")
    assert status == 1 and "a stub that is not of namespace 'ROUTE'" in msg, msg
    status, msg = rpc_answer(a.addr, b"\x02\x00\x05NO\x00\xffX" + b"\x02" * 32 + b"\x00")
    assert status == 1 and "an ID of namespace 'NO??X', which node" in msg, msg
    for bad in [b"\x01\x00\x05ROUTE" + b"\x02" * 31, b"\x01\x00\x05ROUTE" + b"\x02" * 32 + b"\x02",
                b"\x03\x00\x05ROUTE" + b"\x02" * 32 + b"\x00", b"\x01\xff\xffROUTE", b""]:
        status, msg = rpc_answer(a.addr, bad)
        assert status == 1 and "malformed RPC arguments: a malformed stub or ID" in msg, (bad, msg)
    # A stub's name must match its ID.
    status, msg = rpc_answer(a.addr, b"\x01\x00\x05ROUTE" + b"\x02" * 32 + b"\x01name")
    assert status == 1 and "not of namespace 'ROUTE'" in msg, msg
    assert a.call("hostile-ref", "add", 1)["ok"] == 2


def test_a_leaving_node_says_how_far_it_read_each_connection(nodes):
    """A node that closes stops reading calls and sends each peer a GOAWAY
    with the stream position it read to: every call before it is answered,
    none after it ran (the caller sends those again where the object goes
    next; docs/cluster.md, "Leaving")."""
    a = nodes("a")
    a.call("goaway-wire", "add", 0)  # a owns it
    oid = bytes.fromhex(str(dobj.Runtime().bind("ROUTE", dobj.DurableObject).id_from_name("goaway-wire")))
    sock = connect(a.addr)
    sock.sendall(HELLO)
    sent = []  # (call id, start, end) in the stream a reads
    got = bytearray()
    done = threading.Event()
    resets = []

    def write():
        pos = len(HELLO)
        for call_id in range(1, 5001):
            f = call_frame(call_id, b"ROUTE", oid, b"goaway-wire", b"add", [1])
            try:
                sock.sendall(f)
            except OSError:
                return
            sent.append((call_id, pos, pos + len(f)))
            pos += len(f)
            if done.is_set():
                return
            time.sleep(0.0005)

    def read():
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError as e:
                resets.append(e)
                chunk = b""
            if not chunk:
                done.set()
                return
            got.extend(chunk)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    time.sleep(0.4)
    a.close()
    for t in threads:
        t.join(30)
    sock.close()
    # The node half-closed and waited for this end: a reset (a close with
    # the unread calls in its socket) may drop what was not delivered yet.
    assert not resets, resets
    frames, rest = split_frames(bytes(got))
    assert not rest
    goaways = [body for kind, body in frames if kind == 8]
    assert len(goaways) == 1 and len(goaways[0]) == 8, frames[-3:]
    read_to = struct.unpack(">Q", goaways[0])[0]
    results = {}
    for kind, body in frames:
        if kind == 3:
            call_id, status, _, _, mlen = struct.unpack(">QBBiI", body[:18])
            assert call_id not in results
            results[call_id] = (status, body[18:18 + mlen].decode())
    assert read_to == len(HELLO) or read_to in {end for _, _, end in sent}
    read = [c for c, start, end in sent if end <= read_to]
    unread = [c for c, start, end in sent if start >= read_to]
    assert read and unread, (len(read), len(unread))  # calls on both sides of it
    assert set(results) == set(read)
    # Answered: run (0), or "not the owner" (2) once the object was released.
    assert {status for status, _ in results.values()} <= {0, 2}, set(results.values())
    ran = sum(1 for status, _ in results.values() if status == 0)
    b = nodes("b")
    assert b.call("goaway-wire", "add", 0)["ok"] == ran


def test_a_caller_sends_again_the_calls_a_leaving_node_did_not_read(nodes, pg):
    """The caller's side of GOAWAY, with a stand-in for the object's node
    (its address in dobj_node pointed at this test's socket): a call after
    the position it names goes again, to the object's real node, and runs
    once; a GOAWAY that claims more than was sent fails the connection."""
    a = nodes("a")
    assert a.call("goaway-caller", "add", 1)["ok"] == 1
    with socket.create_server(("127.0.0.1", 0)) as stand_in:
        fake = "127.0.0.1:%d" % stand_in.getsockname()[1]

        def first_call(caller):
            """What caller wrote up to its CALL: the connection and the
            CALL's stream position."""
            pg.sql(f"UPDATE dobj_node SET addr = '{fake}' WHERE node_id = {a.node_id}")
            tag = caller.send(name="goaway-caller", method="add", args=[1])
            conn, _ = stand_in.accept()
            conn.settimeout(10)
            got = b""
            while not any(kind == 2 for kind, _ in split_frames(got)[0]):
                got += conn.recv(65536)
            pos = 0
            for kind, body in split_frames(got)[0]:
                if kind == 2:
                    break
                pos += 5 + len(body)
            pg.sql(f"UPDATE dobj_node SET addr = '{a.addr}' WHERE node_id = {a.node_id}")
            return tag, conn, pos

        b = nodes("b")
        tag, conn, pos = first_call(b)
        conn.sendall(frame(8, struct.pack(">Q", pos)))  # read up to the CALL, not it
        assert b.reply(tag)["ok"] == 2
        # A second GOAWAY (it could name calls already sent again) fails it.
        conn.sendall(frame(8, struct.pack(">Q", 0)))
        conn.settimeout(5)
        while conn.recv(65536):  # its pings, then b closes it
            pass
        conn.close()
        c = nodes("c")
        tag, conn, pos = first_call(c)
        conn.sendall(frame(8, struct.pack(">Q", 1 << 40)))
        e = c.reply(tag)
        conn.close()
    assert e["retryable"] is True and "a malformed GOAWAY frame" in e["err"], e
    assert a.call("goaway-caller", "add", 0)["ok"] == 2
