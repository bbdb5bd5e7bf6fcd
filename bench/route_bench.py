"""Routing rows of `make bench` (calls between cluster nodes): a throw-away
PostgreSQL (tests/cluster/pgtmp.sh), then
- build/bench_route: remote RPC round trips per second between two nodes (two
  runtimes on two threads over loopback TCP, a C class);
- failover: two Python node processes with the default lease (TTL 3 s, grace
  1 s); one owns an object, the other writes to it through routing; the owner
  is SIGKILLed and the time to the writer's next acknowledged write is taken.
Standard library only (the node processes run in the project's venv)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import servers  # noqa: E402  (bench/servers.py: the throw-away PostgreSQL)
from servers import Unavailable  # noqa: E402

BINARY = os.path.join(ROOT, "build", "bench_route")
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
TTL, GRACE = 3.0, 1.0  # the defaults (docs/cluster.md)

NODE = """
import asyncio, sys, time
import dobj

class Box(dobj.DurableObject):
    async def add(self, n):
        v = (self.ctx.storage.get("n") or 0) + n
        self.ctx.storage.put("n", v)
        return v

async def main():
    url, storage, role = sys.argv[1:4]
    rt = dobj.Runtime(storage=storage, cluster=url, node_addr="127.0.0.1:0")
    stub = rt.bind("FAILOVER", Box).get_by_name("fo")
    if role == "owner":
        await stub.add(1)
        print("ready", flush=True)
        await asyncio.Event().wait()  # until killed
    print("ready", flush=True)
    while True:
        try:
            await asyncio.wait_for(stub.add(1), 30)
            print("ack", time.monotonic(), flush=True)
        except Exception as e:
            print("err", time.monotonic(), str(e)[:100].replace(chr(10), " "), flush=True)
            await asyncio.sleep(0.02)

asyncio.run(main())
"""


def failover(url: str) -> float | None:
    """Seconds from the owner's SIGKILL to the next acknowledged write."""
    work = tempfile.mkdtemp(prefix="dobj-bench-failover-")
    py = VENV_PY if os.path.exists(VENV_PY) else sys.executable
    procs = []
    try:
        owner = subprocess.Popen([py, "-c", NODE, url, os.path.join(work, "a"), "owner"],
                                 stdout=subprocess.PIPE, text=True)
        procs.append(owner)
        if owner.stdout.readline().strip() != "ready":
            return None
        writer = subprocess.Popen([py, "-c", NODE, url, os.path.join(work, "b"), "writer"],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(writer)
        acks = 0
        for line in writer.stdout:
            if line.startswith("ack"):
                acks += 1
                if acks >= 50:
                    break
        killed = time.monotonic()
        owner.send_signal(signal.SIGKILL)
        deadline = killed + 60
        for line in writer.stdout:
            parts = line.split()
            if parts and parts[0] == "ack" and float(parts[1]) > killed:
                return float(parts[1]) - killed
            if time.monotonic() > deadline:
                return None
        return None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
        subprocess.run(["rm", "-rf", work], timeout=60)


def run(seconds: float) -> tuple[dict[str, float], str]:
    """{name: value} and a reason when something could not be measured."""
    got, reasons = {}, []
    try:
        with servers.postgres(ROOT) as url:
            if os.path.exists(BINARY):
                res = subprocess.run([BINARY, url, str(seconds)], capture_output=True, text=True,
                                     timeout=120 + 10 * seconds)
                got.update(servers.name_values(res.stdout))
                if res.returncode:
                    reasons.append(res.stderr.strip()[:200])
            else:
                reasons.append("build/bench_route not built")
            f = failover(url)
    except Unavailable as e:
        return {}, str(e)
    if f is not None:
        got["failover_s"] = f
    else:
        reasons.append("the failover run did not finish")
    return got, "; ".join(reasons)


def rows(got: dict[str, float], reason: str) -> list[str]:
    out = ["", "cluster routing (two nodes on loopback, PostgreSQL 15)"]
    for name, label in (("route_rpc", "remote RPC round trips, 64 in flight"),
                        ("route_rpc_1", "remote RPC round trips, 1 in flight")):
        v = got.get(name)
        out.append(f"  {label:<44} {'n/a' if v is None else f'{v:,.0f}':>10} /s")
    v = got.get("route_rpc")
    if v:
        out.append(f"  remote RPC per node pair: {v / 20000:.2f}x the target (>= 20k/s: "
                   f"{'met' if v >= 20000 else 'NOT met'})")
    f = got.get("failover_s")
    limit = TTL + GRACE + 2
    out.append(f"  {'SIGKILL of an owner -> next acknowledged write':<44} "
               f"{'n/a' if f is None else f'{f:.2f}':>10} s")
    if f is not None:
        out.append(f"  failover with TTL {TTL:g} s, grace {GRACE:g} s: {f:.2f} s (target <= "
                   f"TTL + grace + 2 s = {limit:g} s: {'met' if f <= limit else 'NOT met'})")
    if reason:
        out.append(f"  note: {reason}")
    return out


if __name__ == "__main__":
    print("\n".join(rows(*run(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0))))
