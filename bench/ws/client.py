"""The WebSocket bench's load client (bench/ws_bench.py runs it as its own
process, never inside a server under test).

    python bench/ws/client.py URL --connections 32 --window 8 --seconds 5

Opens `connections` WebSockets to URL; each keeps `window` 64-byte text
messages in flight: it sends one whenever an echo comes back, and checks that
every echo is what it sent, in order.  Prints one JSON line: echoes per
second over the measured time, the echoes counted, mismatches.

The framing is the `websockets` library's sans-I/O protocol
(websockets.client.ClientProtocol) on a plain asyncio Protocol (uvloop when
installed): no task or future per message, so that the client costs far less
per message than the servers it loads.
"""
import argparse
import asyncio
import json
import time
from collections import deque
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

PAD = "x" * 56


class Conn(asyncio.Protocol):
    def __init__(self, uri, window, ready):
        self.ws = ClientProtocol(uri, max_size=None)
        self.window = window
        self.ready = ready
        self.open = False
        self.counting = False
        self.stopped = False
        self.sent = 0
        self.got = 0
        self.counted = 0
        self.bad = 0
        self.inflight = deque()
        self.drained = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def flush(self):
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)

    def send_one(self):
        msg = f"{self.sent:08d}{PAD}"
        self.inflight.append(msg)
        self.ws.send_text(msg.encode())
        self.sent += 1

    def data_received(self, data):
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if event.status_code != 101:
                    raise SystemExit(f"the server answered {event.status_code}, not 101")
                self.open = True
                self.ready.set_result(None) if not self.ready.done() else None
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                expected = self.inflight.popleft()
                if event.data.decode() != expected:
                    self.bad += 1
                self.got += 1
                if self.counting:
                    self.counted += 1
                if not self.stopped:
                    self.send_one()
                elif not self.inflight and self.drained and not self.drained.done():
                    self.drained.set_result(None)
        self.flush()

    def start(self):
        self.counting = True
        for _ in range(self.window):
            self.send_one()
        self.flush()

    def connection_lost(self, exc):
        for fut in (self.ready, self.drained):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc}"))


async def main(args):
    loop = asyncio.get_running_loop()
    uri = parse_uri(args.url)
    u = urlsplit(args.url)
    conns = []
    for _ in range(args.connections):
        ready = loop.create_future()
        _, c = await loop.create_connection(lambda: Conn(uri, args.window, ready),
                                            u.hostname, u.port)
        await asyncio.wait_for(ready, 30)
        conns.append(c)
    for c in conns:
        c.start()
    await asyncio.sleep(args.seconds)
    counted = 0
    for c in conns:
        c.counting = False
        counted += c.counted
        c.stopped = True
        c.drained = loop.create_future()
        if not c.inflight:
            c.drained.set_result(None)
    await asyncio.wait_for(asyncio.gather(*(c.drained for c in conns)), 60)
    for c in conns:
        c.ws.send_close(1000)
        c.flush()
        c.transport.close()
    print(json.dumps({"echoes": counted, "per_second": counted / args.seconds,
                      "mismatched": sum(c.bad for c in conns)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args))
