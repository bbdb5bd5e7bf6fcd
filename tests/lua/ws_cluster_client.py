"""The real WebSocket clients of tests/lua/cluster_ws_dev_spec.lua (the
`websockets` library): `python ws_cluster_client.py SCENARIO ...` runs the
scenario against two `dobj-lua dev --cluster` nodes serving examples/chat
and prints "ok", or the first failure."""
import asyncio
import json
import subprocess
import sys

import websockets

LOST = (1012, "this node lost the Durable Object to another node: reconnect")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def join(port, room, name):
    return await websockets.connect(f"ws://127.0.0.1:{port}/rooms/{room}?name={name}")


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 30))


async def closed(ws):
    """(code, reason) of ws's close, after everything it received before."""
    try:
        while True:
            got = await asyncio.wait_for(ws.recv(), 30)
            raise AssertionError(f"a message before the close: {got!r}")
    except websockets.ConnectionClosed as e:
        return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, None)


async def chat(port_a, port_b, room):
    """Clients on both nodes in one room (a's): joins, messages and leaves
    reach everyone, in order, across the nodes."""
    people = {}
    for name, port in (("alice", port_a), ("bob", port_b), ("carol", port_b), ("dave", port_a)):
        people[name] = await join(port, room, name)
        for earlier in list(people)[:-1]:
            got = await recv(people[earlier])
            check(got == {"type": "join", "name": name}, f"{earlier} got {got}")
    await people["carol"].send("/who")
    got = await recv(people["carol"])
    check(got == {"type": "who", "names": sorted(people)}, str(got))
    for seq, name in enumerate(people, 1):
        await people[name].send(f"hi from {name}")
        for other, ws in people.items():
            got = await recv(ws)
            want = {"type": "message", "seq": seq, "name": name, "text": f"hi from {name}"}
            check(got == want, f"{other} got {got}")
    await people["bob"].close()
    for name in ("alice", "carol", "dave"):
        got = await recv(people[name])
        check(got == {"type": "leave", "name": "bob", "code": 1000}, f"{name} got {got}")
    for name in ("alice", "carol", "dave"):
        await people[name].close()


async def lost(port_a, port_b, room, url, node_a):
    """a's lease lapses on the database's clock while both nodes run: a
    closes the socket it accepted and the one relayed through b with 1012;
    the clients reconnect and the room goes on."""
    alice = await join(port_a, room, "alice")
    bob = await join(port_b, room, "bob")
    check(await recv(alice) == {"type": "join", "name": "bob"}, "bob's join")
    subprocess.run(["psql", "-XAtq", url, "-c", "UPDATE dobj_node SET lease_until = now() - "
                    f"interval '1 hour' WHERE node_id = {int(node_a)}"], check=True, timeout=30)
    for name, ws in (("alice", alice), ("bob", bob)):
        got = await closed(ws)
        check(got == LOST, f"{name}'s close: {got}")
    bob = await join(port_b, room, "bob")
    alice = await join(port_a, room, "alice")
    check(await recv(bob) == {"type": "join", "name": "alice"}, "alice's join again")
    await alice.send("again")
    for ws in (alice, bob):
        got = await recv(ws)
        check(got == {"type": "message", "seq": 1, "name": "alice", "text": "again"}, str(got))
    await alice.close()
    await bob.close()


if __name__ == "__main__":
    scenario, args = sys.argv[1], sys.argv[2:]
    try:
        asyncio.run({"chat": chat, "lost": lost}[scenario](*args))
    except Exception as exc:  # noqa: BLE001  (reported to the spec)
        print(f"FAILED: {type(exc).__name__}: {exc}")
        sys.exit(1)
    print("ok")
