"""The real WebSocket client of tests/lua/websocket_dev_spec.lua (the
`websockets` library): `python ws_client.py SCENARIO PORT` runs the scenario
against a `dobj-lua dev` on PORT and prints "ok", or the first failure."""
import asyncio
import os
import sys
import time

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from slowclient import SlowClient  # noqa: E402  (tests/python/slowclient.py)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def connect(port, path="/", tags=None):
    ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}" + (f"?tags={tags}" if tags else ""),
                                  max_size=None)
    check(await ws.recv() == "hello", "the greeting sent before the handshake")
    return ws


async def ask(ws, msg):
    await ws.send(msg)
    return await asyncio.wait_for(ws.recv(), 30)


async def probe(port):
    """tests/lua/ws (its Probe) served with --idle-timeout 0.5."""
    a = await connect(port, tags="red,x")
    b = await connect(port, tags="blue")
    check(await ask(a, "att alice") == "ok", "att")
    got = await ask(a, "state")
    check(got == "made=1 who=alice tags=red,x all=2 state=1", got)
    await asyncio.sleep(1.5)  # hibernated: evicted, connections kept
    got = await ask(a, "state")
    check(got == "made=2 who=alice tags=red,x all=2 state=1", got)
    await a.send("all")
    check(await b.recv() == "to all" and await a.recv() == "to all", "broadcast after waking")
    await a.send(b"abc")
    check(await a.recv() == b"cba", "binary")
    await a.close(4001, "gone")
    got = await asyncio.wait_for(b.recv(), 30)
    check(got == "closed 4001 gone true", got)
    await b.send("bye")
    try:
        await asyncio.wait_for(b.recv(), 30)
        check(False, "no close")
    except websockets.ConnectionClosed as e:
        check((e.rcvd.code, e.rcvd.reason) == (4000, "done"), str(e.rcvd))
    # 32 MiB + 1 closes with 1009.
    c = await connect(port)
    try:
        await c.send(b"x" * ((32 << 20) + 1))
        await asyncio.wait_for(c.recv(), 60)
        check(False, "no close for a message over 32 MiB")
    except websockets.ConnectionClosed as e:
        check(e.rcvd.code == 1009, str(e.rcvd))
    # 1,000 connections to one object, one broadcast.
    started = time.monotonic()
    many = await asyncio.gather(*(connect(port) for _ in range(1000)))
    await many[0].send("all")
    got = await asyncio.gather(*(asyncio.wait_for(m.recv(), 60) for m in many))
    check(got == ["to all"] * 1000, "a broadcast to 1000")
    await asyncio.gather(*(m.close() for m in many))
    check(time.monotonic() - started < 120, "1000 connections in bounded time")


async def flood(port):
    """~19 MiB sent from one handler, then a close: every message arrives,
    in order, before the close (the close went out first and the queued
    messages were dropped)."""
    a = await connect(port)
    await a.send("flood 300")
    for i in range(300):
        m = await asyncio.wait_for(a.recv(), 60)
        check((m[:6], len(m)) == (f"{i:06d}", 65536), f"message {i}: {m[:6]!r}, {len(m)} bytes")
    try:
        await asyncio.wait_for(a.recv(), 60)
        check(False, "no close after the flood")
    except websockets.ConnectionClosed as e:
        check((e.rcvd.code, e.rcvd.reason) == (4002, "flooded"), str(e.rcvd))


async def slow(port):
    """A client that does not read while one handler sends it 50 MiB: past
    32 MiB waiting in the server the connection is dropped with its queue
    (1008; without the bound the server kept it all), the object hears the
    close, and its other socket is served on."""
    b = await connect(port)
    a = await asyncio.to_thread(SlowClient, port, "/")
    check(a.send("flood 800"), "the flood command")
    got = await asyncio.wait_for(b.recv(), 120)
    reason = "the client did not read: more than 32 MiB waited for it"
    check(got == f"closed 1008 {reason} false", got)
    messages, code = await asyncio.to_thread(a.read_to_end)
    check(messages[:1] == ["hello"] and len(messages) < 400,
          f"{len(messages)} messages reached the client that did not read")
    check(code in (1008, 1006), f"close code {code}")
    got = await ask(b, "state")
    check(got.endswith("all=1 state=1"), got)


async def unanswered(port):
    """The object closes (4000) and the client neither answers nor closes:
    the server cuts the connection after its close wait (5 s) and the
    object hears 1006, was_clean false (RFC 6455 7.1.5), as on `dobj dev`'s
    two servers; a client that answers ends it at once, and the object
    hears the answer (4000 "done" echoed), was_clean true."""
    b = await connect(port)
    a = await asyncio.to_thread(SlowClient, port, "/", 40)
    check(a.send("bye"), "the bye command")
    started = time.monotonic()
    messages, code = await asyncio.to_thread(a.read_to_end)
    waited = time.monotonic() - started
    check(messages[:1] == ["hello"] and code == 4000, f"{messages[:1]} {code}")
    check(4.5 < waited < 8.0, f"cut after {waited:.1f} s")
    got = await asyncio.wait_for(b.recv(), 30)
    check(got == "closed 1006  false", got)
    a = await asyncio.to_thread(SlowClient, port, "/", 40)
    check(a.send("bye"), "the bye command")
    started = time.monotonic()
    messages, code = await asyncio.to_thread(a.read_to_end, True)
    check(code == 4000 and time.monotonic() - started < 4.0, f"{code}")
    got = await asyncio.wait_for(b.recv(), 30)
    check(got == "closed 4000 done true", got)
    await b.close()


def _flood(client, total, send):
    while client.sent < total and send():
        pass
    return client.sent


async def echo(port):
    """A client that sends 64 KiB messages as fast as it can and reads
    nothing: read only as fast as the object handles them, the echoes wait
    up to 32 MiB, then it is dropped (1008) and can send no more (the
    server read all 160 MiB at once before, and kept every echo)."""
    b = await connect(port)
    a = await asyncio.to_thread(SlowClient, port, "/", 60)
    sent = asyncio.ensure_future(asyncio.to_thread(_flood, a, 160 << 20, lambda: a.send("x" * 65536)))
    got = await asyncio.wait_for(b.recv(), 120)
    reason = "the client did not read: more than 32 MiB waited for it"
    check(got == f"closed 1008 {reason} false", got)
    sent = await asyncio.wait_for(sent, 120)
    check(sent < 100 << 20, f"{sent} bytes taken from a client that did not read")
    a.close()


async def pings(port):
    """Pings from a client that does not read: wslay answers them itself;
    once the pongs waiting reach 32 MiB the client is not read any more (its
    sends stall) instead of the server growing."""
    a = await asyncio.to_thread(SlowClient, port, "/", 5)
    ping = b"p" * 125

    def one():
        a.proto.send_ping(ping)
        try:
            a._flush()
        except OSError:  # timed out: the server stopped reading
            return False
        a.sent += len(ping)
        return True

    sent = await asyncio.wait_for(asyncio.to_thread(_flood, a, 200 << 20, one), 120)
    check(sent < 100 << 20, f"{sent} bytes of pings taken from a client that did not read")
    a.close()


async def fragments(port):
    """A message in 70,000 one-byte fragments: refused as too large (1009),
    as each fragment costs the server its own allocations."""
    b = await connect(port)
    a = await asyncio.to_thread(SlowClient, port, "/")

    await asyncio.to_thread(a.send_fragmented, 70001)
    got = await asyncio.wait_for(b.recv(), 60)
    check(got == "closed 1009  false", got)
    messages, code = await asyncio.to_thread(a.read_to_end)
    check(code == 1009, f"close code {code}")


if __name__ == "__main__":
    scenario, port = sys.argv[1], int(sys.argv[2])
    try:
        asyncio.run({"probe": probe, "flood": flood, "slow": slow, "echo": echo,
                     "pings": pings, "fragments": fragments, "unanswered": unanswered}[scenario](port))
    except Exception as exc:  # noqa: BLE001  (reported to the spec)
        print(f"FAILED: {type(exc).__name__}: {exc}")
        sys.exit(1)
    print("ok")
