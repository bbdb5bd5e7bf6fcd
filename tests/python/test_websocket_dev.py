"""WebSockets with the hibernation API through a real `dobj dev`, driven by
real clients (the `websockets` library): the chat example's broadcast order
(examples/chat/python under `dobj dev`, examples/chat/lua under `dobj-lua dev`),
hibernation (the object evicted after a short --idle-timeout and woken by the
next message with its sockets, tags and attachments), auto-response, close
codes both ways, workerd's errors, refused upgrades, Cloudflare's message
size limit, and 1,000 connections to one object."""
import asyncio
import json
import time

import pytest

websockets = pytest.importorskip("websockets")

from devserver import CHAT, write_project  # noqa: E402

# A room that tells the tests what it is: how many instances were made (a
# class attribute of the server process), its tags and attachments, and the
# errors the hibernation API raises.
PROBE = """
import asyncio
import json
import dobj


class Counter(dobj.DurableObject):
    made = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).made += 1

    async def fetch(self, request):
        if request.headers.get("upgrade") != "websocket":
            return dobj.Response("expected Upgrade: websocket", status=426)
        tags = request.url.split("?tags=")[1].split(",") if "?tags=" in request.url else None
        if request.url.endswith("?slow"):  # a client that leaves before the 101 is sent
            await asyncio.sleep(0.3)
        client, server = dobj.WebSocketPair()
        self.ctx.accept_web_socket(server, tags=tags)
        server.send("hello")  # before the handshake completed: delivered after it
        return dobj.Response(None, status=101, web_socket=client)

    async def web_socket_message(self, ws, message):
        cmd, _, arg = message.partition(" ") if isinstance(message, str) else ("bytes", "", "")
        if cmd == "att":
            ws.serialize_attachment({"who": arg, "n": [1, 2.5, None]})
            ws.send("ok")
        elif cmd == "state":
            ws.send(json.dumps({"made": type(self).made, "att": ws.deserialize_attachment(),
                                "tags": self.ctx.get_tags(ws),
                                "all": len(self.ctx.get_web_sockets()),
                                "tagged": len(self.ctx.get_web_sockets(arg or None))}))
        elif cmd == "auto":
            self.ctx.set_web_socket_auto_response(dobj.WebSocketRequestResponsePair("ping", "pong"))
            ws.send(repr(self.ctx.get_web_socket_auto_response()))
        elif cmd == "autots":
            ts = self.ctx.get_web_socket_auto_response_timestamp(ws)
            ws.send("none" if ts is None else ts.isoformat())
        elif cmd == "all":
            for w in self.ctx.get_web_sockets():
                w.send(arg)
        elif cmd == "bye":
            ws.close(4000, "done")
            try:
                ws.send("after close")
            except dobj.Error as exc:
                self.ctx.storage.put("error", str(exc))
        elif cmd == "error":
            ws.send(self.ctx.storage.get("error") or "none")
        elif cmd == "errors":
            out = []
            client, server = dobj.WebSocketPair()
            for attempt in (lambda: server.send("x"),
                            lambda: self.ctx.accept_web_socket(ws),
                            lambda: self.ctx.accept_web_socket(server, tags=[str(i) for i in range(11)]),
                            lambda: self.ctx.accept_web_socket(server, tags=["x" * 257]),
                            lambda: ws.serialize_attachment("x" * 20000),
                            lambda: ws.close(1005),
                            lambda: ws.close(None, "why"),
                            lambda: client.send("x")):
                try:
                    attempt()
                    out.append("no error")
                except dobj.Error as exc:
                    out.append(f"{type(exc).__name__}: {exc}")
            ws.send(json.dumps(out))
        elif cmd == "flood":  # far more than the socket takes at once, then the close
            for i in range(int(arg)):
                ws.send(f"{i:06d}" + "x" * 65530)
            ws.close(4001, "flooded")
        elif cmd == "bytes":
            ws.send(message[::-1])
        elif cmd == "surrogates":  # lone ones, and a pair written as two halves
            for text in ("a\\ud800b", "\\ud83d\\ude00", "x\\udc00\\ud800"):
                ws.send(text)
            ws.close(4002, "r\\ud800")
        else:
            ws.send(message)

    async def web_socket_close(self, ws, code, reason, was_clean):
        for w in self.ctx.get_web_sockets():
            if w != ws:
                w.send(f"closed {code} {reason} {was_clean} state={ws.ready_state}")


async def fetch(request, env, ctx):
    if request.url.endswith("/plain"):
        return dobj.Response("no upgrade here")
    return await env.COUNTER.get_by_name("room").fetch(request)
"""


@pytest.fixture
def probe(tmp_path, servers):
    d = write_project(tmp_path / "probe", PROBE)
    return servers(d, "--idle-timeout", "0.5")


def url(server, path="/room", tags=None):
    return f"ws://127.0.0.1:{server.port}{path}" + (f"?tags={','.join(tags)}" if tags else "")


async def connect(server, path="/room", tags=None, greeting=True, **kw):
    ws = await websockets.connect(url(server, path, tags), **kw)
    if greeting:
        assert await ws.recv() == "hello"
    return ws


async def ask(ws, message):
    await ws.send(message)
    return await asyncio.wait_for(ws.recv(), 30)


@pytest.fixture
def chat(chat_server):
    """examples/chat/python under `dobj dev`, examples/chat/lua under `dobj-lua dev`."""
    return chat_server()


async def test_chat_example_broadcasts_every_message_in_one_order(chat):
    server = chat
    base = f"ws://127.0.0.1:{server.port}/rooms/lobby?name="
    clients = [await websockets.connect(base + n) for n in ("ann", "bob", "cy")]
    # The joins: bob's reaches ann, cy's reaches ann and bob.
    assert json.loads(await clients[0].recv()) == {"type": "join", "name": "bob"}
    for c in clients[:2]:
        assert json.loads(await c.recv()) == {"type": "join", "name": "cy"}

    async def chatter(i, c):
        for k in range(20):
            await c.send(f"{i}-{k}")

    await asyncio.gather(*(chatter(i, c) for i, c in enumerate(clients)))
    seen = []
    for c in clients:
        events = [json.loads(await asyncio.wait_for(c.recv(), 30)) for _ in range(60)]
        seen.append([(e["seq"], e["name"], e["text"]) for e in events])
    assert seen[0] == seen[1] == seen[2]  # one order for everybody
    assert [s for s, _, _ in seen[0]] == list(range(1, 61))
    for i, name in enumerate(("ann", "bob", "cy")):  # each sender's own order kept
        assert [t for _, n, t in seen[0] if n == name] == [f"{i}-{k}" for k in range(20)]
    assert await ask(clients[0], "ping") == "pong"
    await clients[1].close(4001, "gone")
    for c in (clients[0], clients[2]):
        assert json.loads(await c.recv()) == {"type": "leave", "name": "bob", "code": 4001}
    names = json.loads(await ask(clients[2], "/who"))["names"]
    assert names == ["ann", "cy"]
    for c in clients:
        await c.close()
    assert server.wait_for(r"GET /rooms/lobby\S* 101 Switching Protocols")
    assert server.stop() == 0, server.output()


async def test_a_clients_close_ends_the_connection_at_once(chat):
    """The closing handshake ends with the server closing TCP: a lone socket
    (nothing else in the room to make the server run again) is not left
    until the client's own close timeout (it took 10 s on the core server)."""
    ws = await websockets.connect(f"ws://127.0.0.1:{chat.port}/rooms/alone?name=ann",
                                  close_timeout=30)
    assert await ask(ws, "ping") == "pong"
    await asyncio.wait_for(ws.close(), 5)
    assert ws.close_code == 1000


async def test_the_page_is_served(chat):
    """Both servers serve the one page, examples/chat/index.html."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{chat.port}/", timeout=30) as r:
        page = r.read().decode()
    assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert page == (CHAT / "index.html").read_text(encoding="utf-8")


async def test_hibernation_wakes_a_fresh_instance_with_the_same_sockets(probe):
    a = await connect(probe, tags=["red", "x"])
    b = await connect(probe, tags=["blue"])
    assert await ask(a, "att alice") == "ok"
    before = json.loads(await ask(a, "state red"))
    assert before == {"made": 1, "att": {"who": "alice", "n": [1, 2.5, None]},
                      "tags": ["red", "x"], "all": 2, "tagged": 1}
    # Only open sockets: evicted after the idle timeout (0.5 s), connections kept.
    await asyncio.sleep(1.5)
    after = json.loads(await ask(a, "state blue"))
    assert after == {"made": 2, "att": {"who": "alice", "n": [1, 2.5, None]},
                     "tags": ["red", "x"], "all": 2, "tagged": 1}
    # The woken instance reaches the other socket too.
    await a.send("all hi")
    assert await b.recv() == "hi" and await a.recv() == "hi"
    await a.close()
    await b.close()


async def test_auto_response_is_answered_without_waking_the_object(probe):
    a = await connect(probe)
    assert await ask(a, "auto") == "WebSocketRequestResponsePair('ping', 'pong')"
    assert await ask(a, "autots") == "none"
    await asyncio.sleep(1.5)  # hibernated
    started = time.time()
    assert await ask(a, "ping") == "pong"
    state = json.loads(await ask(a, "state"))
    assert state["made"] == 2  # woken by "state", not by "ping"
    ts = await ask(a, "autots")
    from datetime import datetime
    assert abs(datetime.fromisoformat(ts).timestamp() - started) < 5
    await a.close()


async def test_close_codes_both_ways(probe):
    a = await connect(probe)
    b = await connect(probe)
    await a.close(4001, "gone away")
    assert await b.recv() == "closed 4001 gone away True state=2"
    # The object closes: the client sees its code and reason; a send after
    # its own close() is workerd's error.
    await b.send("bye")
    with pytest.raises(websockets.ConnectionClosed) as info:
        await asyncio.wait_for(b.recv(), 30)
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "done")
    c = await connect(probe)
    assert await ask(c, "error") == "Can't call WebSocket send() after close()."
    await c.close()


async def test_errors_are_workerds(probe):
    a = await connect(probe)
    errors = json.loads(await ask(a, "errors"))
    assert errors == [
        "Error: You must call one of accept() or state.acceptWebSocket() on this WebSocket "
        "before sending messages.",
        "Error: Cannot call `acceptWebSocket()` if the WebSocket was already accepted via "
        "`accept()`",
        "Error: a Hibernatable WebSocket cannot have more than 10 tags",
        f"Error: \"{'x' * 257}\" is longer than the max tag length (256 characters).",
        "Error: A WebSocket 'attachment' cannot be larger than 16384 bytes.'attachment' "
        "was 20006 bytes.",
        "Error: Invalid WebSocket close code: 1005.",
        "Error: If you specify a WebSocket close reason, you must also specify a code.",
        "Error: this is the client end of a WebSocketPair: return it in a 101 Response (the "
        "server serves it) and accept the server end",
    ]
    await a.close()


async def test_binary_messages_and_a_refused_upgrade(probe):
    a = await connect(probe)
    await a.send(b"\x00\x01\x02")
    assert await a.recv() == b"\x02\x01\x00"
    await a.close()
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url(probe, "/plain"))
    assert info.value.response.status_code == 200 or info.value.response.status_code == 403


async def test_a_flood_waits_in_the_server_and_arrives_in_order_with_the_close_last(probe):
    """~19 MiB sent from one handler: what the socket does not take waits in
    the server (written as the client reads), every message in order, and
    the close goes out only after them."""
    a = await connect(probe, max_size=None)
    await a.send("flood 300")
    for i in range(300):
        m = await asyncio.wait_for(a.recv(), 60)
        assert (m[:6], len(m)) == (f"{i:06d}", 65536)
    with pytest.raises(websockets.ConnectionClosed) as info:
        await asyncio.wait_for(a.recv(), 60)
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "flooded")


async def test_a_message_over_32_mib_closes_with_1009(probe):
    a = await connect(probe, max_size=None)
    # The server closes as soon as the frame's length is known: the close
    # may reach the client while it is still sending.
    with pytest.raises(websockets.ConnectionClosed) as info:
        await a.send(b"x" * ((32 << 20) + 1))
        await asyncio.wait_for(a.recv(), 60)
    assert info.value.rcvd.code == 1009


async def test_a_message_in_too_many_fragments_closes_with_1009(probe):
    """The core server keeps each fragment with its own allocations: past
    65,536 fragments a message is refused as too large (2 million one-byte
    fragments, far under the 32 MiB limit, grew it by 200 MB)."""
    if probe.kind == "uvicorn":
        pytest.skip("uvicorn's `websockets` joins fragments into one buffer")
    from slowclient import SlowClient
    b = await connect(probe)
    a = await asyncio.to_thread(SlowClient, probe.port, "/room")

    await asyncio.to_thread(a.send_fragmented, 70001)
    assert await asyncio.wait_for(b.recv(), 60) == "closed 1009  False state=2"
    messages, code = await asyncio.to_thread(a.read_to_end)
    assert (messages, code) == (["hello"], 1009)
    await b.close()


async def test_a_text_message_that_is_not_utf8_closes_with_1007(probe):
    """RFC 6455 8.1 (the core server did not check: the message reached the
    handler, whose decoding failed, and the connection stayed open)."""
    from slowclient import SlowClient
    b = await connect(probe)
    a = await asyncio.to_thread(SlowClient, probe.port, "/room")
    a.proto.send_text(b"caf\xc3(")
    a._flush()
    assert (await asyncio.wait_for(b.recv(), 30)).startswith("closed 1007 ")
    messages, code = await asyncio.to_thread(a.read_to_end)
    # (uvicorn may close before the greeting sent with the 101 went out)
    assert code == 1007 and messages in (["hello"], [])
    await b.close()


async def test_lone_surrogates_in_a_sent_string_go_as_u_fffd(probe):
    """A str with a lone surrogate raised UnicodeEncodeError.  The WebSocket
    standard (and workerd, for a close reason) sends U+FFFD for each; a pair
    of halves is its character, as in a JavaScript string."""
    ws = await connect(probe)
    await ws.send("surrogates")
    got = [await asyncio.wait_for(ws.recv(), 30) for _ in range(3)]
    assert got == ["a\ufffdb", "\U0001F600", "x\ufffd\ufffd"]
    with pytest.raises(websockets.ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 30)
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4002, "r\ufffd")


async def test_a_client_that_leaves_before_the_upgrade_completes_is_not_kept(probe):
    # It stayed in the object's list (and the server's) until the server
    # stopped: the object never heard that it closed.
    a = await connect(probe)
    reader, writer = await asyncio.open_connection("127.0.0.1", probe.port)
    writer.write(b"GET /room?slow HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    await writer.drain()
    writer.close()
    assert (await asyncio.wait_for(a.recv(), 30)).startswith("closed 1006 ")
    assert json.loads(await ask(a, "state"))["all"] == 1


async def test_a_thousand_connections_to_one_object(probe):
    started = time.monotonic()
    clients = await asyncio.gather(*(connect(probe) for _ in range(1000)))
    await clients[0].send("all everyone")
    got = await asyncio.gather(*(asyncio.wait_for(c.recv(), 60) for c in clients))
    assert got == ["everyone"] * 1000
    state = json.loads(await ask(clients[1], "state"))
    assert state["all"] == 1000
    await asyncio.gather(*(c.close() for c in clients))
    assert time.monotonic() - started < 120


WORKERS = """
import json
from workers import (DurableObject, Response, WebSocketPair, WebSocketRequestResponsePair,
                     WorkerEntrypoint)


class Counter(DurableObject):
    async def fetch(self, request):
        client, server = WebSocketPair.new().object_values()
        self.ctx.acceptWebSocket(server, ["t1"])
        server.serializeAttachment({"n": 1})
        self.ctx.setWebSocketAutoResponse(WebSocketRequestResponsePair("ping", "pong"))
        return Response(None, status=101, web_socket=client)

    async def webSocketMessage(self, ws, message):
        ws.send(json.dumps({"msg": message, "tags": self.ctx.getTags(ws),
                            "att": ws.deserializeAttachment(), "state": ws.readyState,
                            "n": len(self.ctx.getWebSockets("t1")),
                            "auto": self.ctx.getWebSocketAutoResponse().response,
                            "ts": self.ctx.getWebSocketAutoResponseTimestamp(ws) is not None}))

    async def webSocketClose(self, ws, code, reason, wasClean):
        for w in self.ctx.getWebSockets():
            if w != ws:
                w.send(f"left {code}")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return await self.env.COUNTER.getByName("r").fetch(request)
"""


async def test_python_workers_code_with_the_javascript_names(tmp_path, servers):
    d = write_project(tmp_path / "pyw", WORKERS, config="""\
        name = "pyw"
        main = "src/entry.py"
        compatibility_flags = ["python_workers"]
        [[durable_objects.bindings]]
        name = "COUNTER"
        class_name = "Counter"
        [[migrations]]
        tag = "v1"
        new_sqlite_classes = ["Counter"]
        """.replace("        ", ""))
    server = servers(d)
    a = await connect(server, "/", greeting=False)
    b = await connect(server, "/", greeting=False)
    assert await ask(a, "ping") == "pong"
    assert json.loads(await ask(a, "hi")) == {"msg": "hi", "tags": ["t1"], "att": {"n": 1},
                                              "state": 1, "n": 2, "auto": "pong", "ts": True}
    await b.close(4005)
    assert await a.recv() == "left 4005"
    await a.close()


async def test_sigterm_closes_open_websockets_and_stops(probe):
    a = await connect(probe)
    assert await ask(a, "echo") == "echo"
    probe.proc.terminate()
    with pytest.raises(websockets.ConnectionClosed) as info:
        await asyncio.wait_for(a.recv(), 30)
    assert info.value.rcvd.code == 1012  # uvicorn's "service restart"
    assert probe.wait() == 0
    assert "Traceback" not in probe.output()
