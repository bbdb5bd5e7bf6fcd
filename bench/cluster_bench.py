"""Cluster rows of `make bench`: a throw-away PostgreSQL (tests/cluster/pgtmp.sh)
and build/bench_cluster, which measures the raw floor (fenced appends straight
through libpq, 1 and 16 connections) and dobj's durable increments of one
object through the cluster, and 100 objects over 3 node processes.  Standard
library only."""
from __future__ import annotations

import os
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import servers  # noqa: E402  (bench/servers.py: the throw-away PostgreSQL)
from servers import Unavailable  # noqa: E402
BINARY = os.path.join(ROOT, "build", "bench_cluster")
LABELS = {
    "raw_append_1": "raw fenced append, libpq, prepared, 1 connection",
    "raw_append_16": "raw fenced append, libpq, prepared, 16 connections",
    "dobj_inc_1": "dobj durable increment, 1 object, 1 node",
    "raw_append_1_busy50": "  the floor with 50 us of client CPU between appends+",
    "raw_append_1_page": "  the floor of whole 4 KiB pages, 1 connection#",
    "dobj_inc_100": "dobj durable increment, 100 obj, 3 nodes, 16 callers",
    "dobj_inc_100_own": "  the same, each node's callers on its own objects*",
    "raw_append_16_page": "  the floor of whole 4 KiB pages, 16 connections#",
}


def run(seconds: float) -> tuple[dict[str, float], str]:
    """{name: ops/s} and a reason when nothing could be measured.  At least
    2 s per row: the rows a target compares take turns in 4 windows each,
    and shorter windows measure the machine's noise."""
    seconds = max(seconds, 2.0)
    if not os.path.exists(BINARY):
        return {}, "build/bench_cluster not built"
    try:
        with servers.postgres(ROOT) as url:
            res = subprocess.run([BINARY, url, str(seconds)], capture_output=True, text=True,
                                 timeout=60 + 10 * seconds)
    except Unavailable as e:
        return {}, str(e)
    return servers.name_values(res.stdout), (res.stderr.strip() if res.returncode else "")


def rows(got: dict[str, float], reason: str) -> list[str]:
    out = ["", "cluster (PostgreSQL 15 on loopback, synchronous_commit on, fsync on)"]
    for name, label in LABELS.items():
        v = got.get(name)
        out.append(f"  {label:<52} {'n/a' if v is None else f'{v:,.0f}':>10} /s")
    floor = got.get("raw_append_1")
    if floor and got.get("dobj_inc_1"):
        r = got["dobj_inc_1"] / floor
        out.append(f"  one object vs the one-connection floor: {r:.2f}x (target >= 0.8x: "
                   f"{'met' if r >= 0.8 else 'NOT met'})")
    pg_raw, pg_inc = got.get("raw_append_1_pg_cpu_us"), got.get("dobj_inc_1_pg_cpu_us")
    node1, client1 = got.get("dobj_inc_1_cpu_us"), got.get("raw_append_1_cpu_us")
    pg_busy = got.get("raw_append_1_busy50_pg_cpu_us")
    if pg_raw and pg_inc and node1:
        busy = f", {pg_busy:.0f} us for the busy floor's" if pg_busy else ""
        out.append(f"  CPU per operation, one object: PostgreSQL's backend {pg_raw:.0f} us for the "
                   f"floor's append, {pg_inc:.0f} us for dobj's{busy}; the node {node1:.0f} us"
                   + (f" (the floor's libpq client {client1:.0f} us)" if client1 else ""))
    out.append("  (+ what 50 us of a client's own work per append costs on this machine: about "
               "what the node spends on an increment before its append goes)")
    b1, b100 = got.get("dobj_inc_1_row_bytes"), got.get("dobj_inc_100_row_bytes")
    if b1 or b100:
        out.append(f"  (the floors append records of 40 bytes, the size of dobj's: its rows held "
                   f"{b1 or 0:.0f} bytes on average for one object, {b100 or 0:.0f} for 100; "
                   f"# whole pages, what dobj appended per increment before its rows carried "
                   f"changed bytes: for comparison, not a target's floor)")
    page1 = got.get("raw_append_1_page")
    if page1 and got.get("dobj_inc_1"):
        out.append(f"  one object vs the whole-page floor: {got['dobj_inc_1'] / page1:.2f}x")
    out.append("  (3 node processes, callers 6, 5, 5; every caller calls all 100 objects, two "
               "calls in three routed to another node; * no routing, the commit pipeline alone)")
    cpu, cpu_own = got.get("dobj_inc_100_cpu_us"), got.get("dobj_inc_100_own_cpu_us")
    if cpu and cpu_own:
        out.append(f"  node CPU per increment (3 node processes, every thread, not PostgreSQL's): "
                   f"{cpu:.0f} us routed, {cpu_own:.0f} us own")
    floor16 = got.get("raw_append_16")
    if floor16 and got.get("dobj_inc_100"):
        r = got["dobj_inc_100"] / floor16
        out.append(f"  100 objects vs the sixteen-connection floor: {r:.2f}x (target >= 2x: "
                   f"{'met' if r >= 2 else 'NOT met'})")
        if got.get("dobj_inc_100_own"):
            out.append(f"  100 objects, each node's callers on its own objects: "
                       f"{got['dobj_inc_100_own'] / floor16:.2f}x")
    page16 = got.get("raw_append_16_page")
    if page16 and got.get("dobj_inc_100"):
        own = got.get("dobj_inc_100_own")
        out.append(f"  100 objects vs the whole-page sixteen-connection floor: "
                   f"{got['dobj_inc_100'] / page16:.2f}x routed"
                   + (f", {own / page16:.2f}x own" if own else ""))
    if reason:
        out.append(f"  note: {reason}")
    return out


if __name__ == "__main__":
    import sys
    print("\n".join(rows(*run(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0))))
