"""The cluster fault test: a real PostgreSQL (pgtmp.sh), three node processes
(tests/cluster/node.py) serving five list objects, four client processes
(tests/cluster/client.py, no node_addr: they call through stubs into the
nodes, each running two clients of the list-append workload), and faults for
a bounded time per seed: SIGKILL a node and restart it, SIGSTOP a node for
2 x TTL then SIGCONT it, kill PostgreSQL and restart it.  Then the history is
checked:

- every acknowledged append is in the final list of its object, once;
- no token is in a list twice, and a call that certainly did not run
  ("was not sent") left no token;
- every list a client read is a prefix of the final list, and no client's
  read goes back in time (shorter than one it completed before invoking);
- epochs never go down along an object's log (dobj_wal);
- no two incarnations of an object released results in overlapping time
  windows (one clock for all processes: CLOCK_MONOTONIC);
- a node paused past its lease comes back as a new node (it was fenced).

    python tests/cluster/fault.py [--seeds N] [--first S] [--seconds T]
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PGTMP = os.path.join(HERE, "pgtmp.sh")
NODE = os.path.join(HERE, "node.py")
CLIENT = os.path.join(HERE, "client.py")
TTL = 1.5
TOOL_ENV = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")}


class Node:
    def __init__(self, url, folder, name, seed, log, script=NODE):
        self.url, self.folder, self.name, self.seed, self.log = url, folder, name, seed, log
        self.script = script
        self.proc = None
        self.runs = 0

    def start(self):
        self.runs += 1
        self.proc = subprocess.Popen([sys.executable, self.script, self.url, self.folder,
                                      f"{self.name}r{self.runs}", str(self.seed * 100 + self.runs)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        proc = self.proc
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stdout:
            try:
                self.log.append(json.loads(line))
            except ValueError:
                pass

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def psql(url, query):
    return subprocess.run(["psql", "-XAtq", url, "-c", query], check=True, capture_output=True,
                          text=True, timeout=30, env=TOOL_ENV).stdout.split()


def final_lists(url, folder):
    import asyncio
    sys.path.insert(0, HERE)
    import dobj
    from node import ListObj  # noqa: E402  (the class the nodes run)

    async def read():
        rt = dobj.Runtime(storage=folder, cluster=url, node_addr="127.0.0.1:0")
        ns = rt.bind("LIST", ListObj)
        out = {}
        for k in range(5):
            for _ in range(20):  # objects of stopped nodes are free once they left
                try:
                    out[k] = (await ns.get_by_name(f"list{k}").read())[1]
                    break
                except dobj.Error:
                    await asyncio.sleep(0.5)
        rt.close()
        return out
    return asyncio.run(read())


def check(log, lists, url):
    problems = []
    ops = [r for r in log if "op" in r]
    for k, items in lists.items():
        if len(items) != len(set(items)):
            problems.append(f"list{k}: duplicate tokens")
    where = {tok: k for k, items in lists.items() for tok in items}
    for r in ops:
        if r["op"] == "append":
            if r["out"] == "ok" and where.get(r["tok"]) != r["obj"]:
                problems.append(f"acknowledged append {r['tok']} to list{r['obj']} is missing")
            if r["out"] == "fail" and r["tok"] in where:
                problems.append(f"append {r['tok']} that never ran is in list{where[r['tok']]}")
        elif r["out"] == "ok":
            final = lists.get(r["obj"], [])
            if r["val"] != final[:len(r["val"])]:
                problems.append(f"a read of list{r['obj']} is not a prefix of the final list")
    by_client = {}
    for r in sorted((r for r in ops if r["op"] == "read" and r["out"] == "ok"), key=lambda r: r["t0"]):
        seen = by_client.setdefault((r["c"], r["obj"]), [])
        for t1, n in seen:
            if t1 < r["t0"] and len(r["val"]) < n:
                problems.append(f"client {r['c']} read list{r['obj']} back in time")
                break
        seen.append((r["t1"], len(r["val"])))
    # A result is released after its handler ended (th) and before its
    # caller saw it (t1; later when the caller's process was paused).  An
    # incarnation still serving after a later one's result was seen, that is
    # a handler of the earlier ending after a t1 of the later, is a definite
    # overlap.  (Incarnations are ordered by their first handler end.)
    spans = {}
    for r in ops:
        if r["out"] == "ok":
            sp = spans.setdefault((r["obj"], r["inc"]), {"first": r["th"], "last": r["th"], "seen": r["t1"]})
            sp["first"] = min(sp["first"], r["th"])
            sp["last"] = max(sp["last"], r["th"])
            sp["seen"] = min(sp["seen"], r["t1"])
    for k in range(5):
        order = sorted((sp for (obj, _), sp in spans.items() if obj == k), key=lambda sp: sp["first"])
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                if a["last"] > b["seen"]:
                    problems.append(f"list{k}: an incarnation served after a later one's result "
                                    f"was released ({a['last']:.3f} > {b['seen']:.3f})")
    bad = psql(url, "SELECT count(*) FROM (SELECT epoch < lag(epoch) OVER (PARTITION BY ns, "
                    "object_id ORDER BY seq) AS down FROM dobj_wal) w WHERE down")
    if bad != ["0"]:
        problems.append(f"epochs went down along a log ({bad[0]} times)")
    return problems


def run_seed(seed, seconds, verbose):
    rng = random.Random(seed)
    out = subprocess.run([PGTMP, "start"], check=True, capture_output=True, text=True,
                         timeout=120, env=TOOL_ENV).stdout.split()
    url, pgdir = out
    lifeline = os.open(os.path.join(pgdir, "lifeline"), os.O_RDWR | os.O_CLOEXEC)
    work = tempfile.mkdtemp(prefix="dobj-fault-")
    log = []
    nodes = [Node(url, os.path.join(work, f"n{i}"), f"n{i}", seed * 10 + i, log) for i in range(3)]
    clients = [Node(url, os.path.join(work, f"c{i}"), f"c{i}", seed * 10 + 5 + i, log, CLIENT)
               for i in range(4)]
    faults = []
    pauses = []  # (node run, paused at, resumed at)
    try:
        for n in nodes + clients:
            n.start()
        end = time.monotonic() + seconds
        time.sleep(2)
        while time.monotonic() < end - 2:
            kind = rng.choice(["kill", "pause", "pg"])
            victim = rng.choice(nodes)
            t = time.monotonic()
            if kind == "kill":
                victim.proc.kill()
                victim.proc.wait()
                time.sleep(0.5 + rng.random())
                victim.start()
            elif kind == "pause":
                victim.proc.send_signal(signal.SIGSTOP)
                time.sleep(2 * TTL)
                victim.proc.send_signal(signal.SIGCONT)
                pauses.append((f"{victim.name}r{victim.runs}", t, time.monotonic()))
            else:
                subprocess.run([PGTMP, "kill", pgdir], check=True, timeout=60, env=TOOL_ENV)
                time.sleep(0.5 + rng.random())
                subprocess.run([PGTMP, "restart", pgdir], check=True, timeout=60, env=TOOL_ENV)
            faults.append((kind, victim.name, t))
            time.sleep(1 + rng.random() * 2)
        time.sleep(max(0.0, end - time.monotonic()))
        for n in clients + nodes:
            n.stop()
        lists = final_lists(url, os.path.join(work, "reader"))
    finally:
        for n in clients + nodes:
            n.stop()
        if "lists" not in locals():  # failed before the check: clean up here
            subprocess.run(["rm", "-rf", work], timeout=60)
    problems = check(log, lists, url)
    acked_total = sum(1 for r in log if r.get("op") == "append" and r.get("out") == "ok")
    if acked_total < 50:
        # A history where nothing succeeded proves nothing: the run must progress.
        problems.append(f"only {acked_total} appends were acknowledged: the workload made no progress")
    ops = [r for r in log if "op" in r]
    beats = [r for r in log if "hb" in r]  # node heartbeats (node.py)
    for run, t0, t1 in pauses:
        before = {r["node"] for r in beats if r["hb"] == run and r["t"] < t0}
        after = {r["node"] for r in beats if r["hb"] == run and r["t"] > t1 + 2 * TTL}
        if before and after and before & after:
            problems.append(f"{run} was paused past its lease and kept its node id {before & after}")
    os.close(lifeline)
    subprocess.run([PGTMP, "stop", pgdir], timeout=60, env=TOOL_ENV)
    subprocess.run(["rm", "-rf", work], timeout=60)
    ops = [r for r in log if "op" in r]
    counts = {o: sum(1 for r in ops if r["out"] == o) for o in ("ok", "fail", "unknown")}
    acked = sum(1 for r in ops if r["op"] == "append" and r["out"] == "ok")
    print(f"seed {seed}: {len(ops)} operations ({counts}), {acked} acknowledged appends, "
          f"faults {[f[0] for f in faults]}, final lengths {[len(lists.get(k, [])) for k in range(5)]}: "
          + ("PASS" if not problems else "FAIL"), flush=True)
    for p in problems[:20]:
        print("  " + p)
    if verbose:
        for r in ops:
            if r["out"] == "unknown":
                print("  unknown:", r.get("err"))
    return not problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=int(os.environ.get("SEEDS", "2")))
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SECONDS_PER_SEED", "20")))
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    ok = all([run_seed(s, args.seconds, args.v) for s in range(args.first, args.first + args.seeds)])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
