"""The WebSocket bench's load client (bench/ws_bench.py runs it as its own
process, never inside a server under test).

    python bench/ws/client.py URL --connections 32 --window 8 --seconds 5

Opens `connections` WebSockets to URL (the `websockets` library, asyncio,
uvloop when installed); each keeps `window` messages in flight: it sends a
64-byte text message whenever fewer than `window` echoes are outstanding, and
counts the echoes it gets back.  Prints one JSON line: echoes per second over
the measured time, the echoes counted, and whether every echo matched (in
order) what its connection sent.
"""
import argparse
import asyncio
import json
import time

import websockets


async def one(ws, window, stop_at, counts, bad):
    async with ws:
        sent = got = 0
        queue = []
        while time.monotonic() < stop_at:
            while sent - got < window:
                msg = f"{sent:08d}" + "x" * 56
                queue.append(msg)
                await ws.send(msg)
                sent += 1
            echo = await ws.recv()
            if echo != queue[got]:
                bad.append((queue[got], echo))
            got += 1
        counts.append(got)
        # Drain what is still in flight so the server is not left writing.
        while got < sent:
            await ws.recv()
            got += 1


async def main(args):
    counts, bad = [], []
    conns = await asyncio.gather(*(websockets.connect(args.url, max_queue=None, compression=None)
                                   for _ in range(args.connections)))
    start = time.monotonic()
    stop_at = start + args.seconds
    await asyncio.gather(*(one(ws, args.window, stop_at, counts, bad) for ws in conns))
    elapsed = time.monotonic() - start
    # Each connection stops counting at stop_at; the drain after it is not counted.
    del elapsed
    print(json.dumps({"echoes": sum(counts), "per_second": sum(counts) / args.seconds,
                      "mismatched": len(bad)}))


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
