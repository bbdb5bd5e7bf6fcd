"""The cluster fault test: a real PostgreSQL (pgtmp.sh), three node processes
(two Python ones, tests/cluster/node.py, and a Lua one, lua_node.lua, serving
one namespace with the same list-append class), four client processes
(client.py: no node_addr, they call through stubs into the nodes wherever
the objects live; two clients of the workload on five objects each), and
faults for a bounded time per seed:
SIGKILL a node and restart it, SIGSTOP a node for 2 x TTL then SIGCONT it,
kill PostgreSQL and restart it.  The next fault waits until every object the
last one affected healed (or the bound passed).  Then the history is checked:

- every acknowledged append is in the final list of its object, once;
- no token is in a list twice, and a call that certainly did not run
  ("was not sent") left no token;
- every list a client read is a prefix of the final list, and no client's
  read goes back in time (shorter than one it completed before invoking);
- epochs never go down along an object's log (dobj_wal);
- no two incarnations of an object released results in overlapping time
  windows (one clock for all processes: CLOCK_REALTIME, the clock Lua has);
- a node paused past its lease comes back as a new node (it was fenced), and
  logs it (heal.py);
- every fault heals within TTL + grace + 2 s: the first acknowledged write on
  each object it affected (heal.py);
- Python and Lua incarnations read lists the other language wrote (counted;
  the prefix checks above hold for them like for any read).

A seed that fails keeps its history (every operation, the nodes' log lines,
the faults and the final lists) in a JSON file whose path it prints.

    python tests/cluster/fault.py [--seeds N] [--first S] [--seconds T]
                                  [--ttl 1.5] [--grace 0.5] [--no-lua]
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

import heal

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PGTMP = os.path.join(HERE, "pgtmp.sh")
NODE = os.path.join(HERE, "node.py")
LUA_NODE = os.path.join(HERE, "lua_node.lua")
CLIENT = os.path.join(HERE, "client.py")
OBJECTS = 5
TTL, GRACE = 1.5, 0.5  # the nodes' lease settings (--ttl, --grace)
TOOL_ENV = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")}


def lua_env():
    """The environment a Lua node needs: LUA_CPATH finding this build's dobj.so."""
    env = dict(os.environ)
    if "LUA_CPATH" not in env:
        env["LUA_CPATH"] = os.path.join(ROOT, "build", "?.so") + ";;"
    return env


class Node:
    """A node process, Python or Lua (`lua`: a deadline, on CLOCK_REALTIME,
    since the Lua node stops by itself; the Python node when stdin closes)."""

    def __init__(self, url, folder, name, seed, log, cond, lua_until=None, script=NODE):
        self.url, self.folder, self.name, self.seed, self.log = url, folder, name, seed, log
        self.cond, self.lua_until, self.script = cond, lua_until, script
        self.proc = None
        self.runs = 0

    @property
    def run(self):
        return f"{self.name}r{self.runs}"

    def start(self):
        self.runs += 1
        seed = str(self.seed * 100 + self.runs)
        if self.lua_until is not None:
            cmd, env = ["lua5.4", LUA_NODE, self.url, self.folder, self.run, seed,
                        repr(self.lua_until), str(TTL), str(GRACE)], lua_env()
        else:
            cmd, env = [sys.executable, self.script, self.url, self.folder, self.run, seed,
                        str(TTL), str(GRACE)], None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        proc = self.proc
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        threading.Thread(target=self._read_log, args=(proc, self.run), daemon=True).start()

    def _read_log(self, proc, run):
        """The node's log (stderr): kept as records, and shown."""
        for line in proc.stderr:
            sys.stderr.write(f"  [{run}] {line}")
            with self.cond:
                self.log.append({"stderr": run, "line": line.rstrip("\n"), "t": time.time()})
                self.cond.notify_all()

    def _read(self, proc):
        for line in proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.log.append(rec)
                self.cond.notify_all()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.stdin.close()
            try:
                # A Lua node ends at its deadline.
                self.proc.wait(timeout=30 + max(0.0, (self.lua_until or 0) - time.time()))
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
        for k in range(OBJECTS):
            for _ in range(20):  # objects of stopped nodes are free once they left
                try:
                    out[k] = (await ns.get_by_name(f"list{k}").read())[1]
                    break
                except dobj.Error:
                    await asyncio.sleep(0.5)
        rt.close()
        return out
    return asyncio.run(read())


def prefix_detail(r, final, ops):
    """Where a read and the final list part, and what the append of the
    token read there became."""
    val = r["val"]
    i = next((i for i, (a, b) in enumerate(zip(val, final)) if a != b), min(len(val), len(final)))
    tok = val[i] if i < len(val) else None
    app = next((a for a in ops if a["op"] == "append" and a.get("tok") == tok), None)
    return (f" (client {r['c']}, incarnation {r['inc']}, read {len(val)} items, first difference "
            f"at {i}: read {tok!r}, final {final[i] if i < len(final) else None!r}; the append of "
            f"{tok!r}: {app and {k: app.get(k) for k in ('out', 'inc', 'err', 't0', 't1')}}; "
            f"the read: t0 {r['t0']:.3f} th {r['th']:.3f} t1 {r['t1']:.3f})")


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
                problems.append(f"a read of list{r['obj']} is not a prefix of the final list"
                                + prefix_detail(r, final, ops))
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
    for k in range(OBJECTS):
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


def run_seed(seed, seconds, verbose, lua=True):
    rng = random.Random(seed)
    bound = TTL + GRACE + 2
    out = subprocess.run([PGTMP, "start"], check=True, capture_output=True, text=True,
                         timeout=120, env=TOOL_ENV).stdout.split()
    url, pgdir = out
    lifeline = os.open(os.path.join(pgdir, "lifeline"), os.O_RDWR | os.O_CLOEXEC)
    work = tempfile.mkdtemp(prefix="dobj-fault-")
    log = []
    cond = threading.Condition()
    start = time.time()
    end = start + seconds
    # n0, n1: Python; l2: Lua (a deadline a little past the end: the
    # harness stops the nodes at the end).
    nodes = [Node(url, os.path.join(work, f"n{i}"), f"n{i}", seed * 10 + i, log, cond)
             for i in range(2)]
    nodes.append(Node(url, os.path.join(work, "l2"), "l2" if lua else "n2", seed * 10 + 2, log, cond,
                      lua_until=end + 1 if lua else None))
    clients = [Node(url, os.path.join(work, f"c{i}"), f"c{i}", seed * 10 + 5 + i, log, cond,
                    script=CLIENT) for i in range(4)]
    faults = []  # {kind, victim, rel, since, objects}
    pauses = []  # (node run, paused at, resumed at)
    try:
        for n in nodes + clients:
            n.start()
        time.sleep(2)
        # Each fault leaves time to heal and to be measured before the end.
        while time.time() < end - bound - 1:
            kind = rng.choice(["kill", "pause", "pg"])
            # A node that holds objects (routing places every object on one
            # node while the membership stays: a fault elsewhere would test
            # and measure nothing); the Lua node first when it holds some.
            with cond:
                holders = {heal.run_of(inc) for inc in heal.last_incarnations(log, time.time()).values()}
            holding = [n for n in nodes if n.run in holders] or nodes
            victim = nodes[2] if not faults and nodes[2] in holding else rng.choice(holding)
            t = time.time()
            with cond:
                hit = heal.affected(log, kind, victim.run, t, OBJECTS)
                first = len(log)
            fault = {"kind": kind, "victim": victim.run if kind != "pg" else "PostgreSQL",
                     "rel": t - start, "since": t, "objects": hit, "first": first}
            if kind == "kill":
                victim.proc.kill()
                victim.proc.wait()
                time.sleep(0.5 + rng.random())
                victim.start()
            elif kind == "pause":
                victim.proc.send_signal(signal.SIGSTOP)
                time.sleep(2 * TTL)
                victim.proc.send_signal(signal.SIGCONT)
                pauses.append((fault["victim"], t, time.time()))
            else:
                subprocess.run([PGTMP, "kill", pgdir], check=True, timeout=60, env=TOOL_ENV)
                time.sleep(0.5 + rng.random())
                subprocess.run([PGTMP, "restart", pgdir], check=True, timeout=60, env=TOOL_ENV)
                fault["since"] = time.time()  # nothing can heal while it is down
            faults.append(fault)
            # The next fault once this one healed (or its bound passed).
            with cond:
                cond.wait_for(lambda: heal.healed(log, fault),
                              timeout=max(0.0, fault["since"] + bound + 0.5 - time.time()))
            time.sleep(0.5 + rng.random() * 1.5)
        time.sleep(max(0.0, end - time.time()))
        for n in clients + nodes:
            n.stop()
        lists = final_lists(url, os.path.join(work, "reader"))
    finally:
        for n in clients + nodes:
            n.stop()
        if "lists" not in locals():  # failed before the check: clean up here
            subprocess.run(["rm", "-rf", work], timeout=60)
    problems = check(log, lists, url)
    # The nodes compact every few writes (node.py): how far, per object.
    snaps = psql(url, "SELECT coalesce(string_agg(seq::text, '/' ORDER BY seq), 'none') "
                      "FROM dobj_snapshot")[0]
    acked_total = sum(1 for r in log if r.get("op") == "append" and r.get("out") == "ok")
    if acked_total < 50:
        # A history where nothing succeeded proves nothing: the run must progress.
        problems.append(f"only {acked_total} appends were acknowledged: the workload made no progress")
    ops = [r for r in log if "op" in r]
    for run, t0, t1 in pauses:
        before = {r["node"] for r in ops if r["c"].startswith(run + ".") and r["t1"] < t0}
        after = {r["node"] for r in ops if r["c"].startswith(run + ".") and r["t0"] > t1 + 2 * TTL}
        if before and after and before & after:
            problems.append(f"{run} was paused past its lease and kept its node id {before & after}")
    problems += heal.check_paused_logged(log, pauses)
    heal_problems, figures = heal.check_heal(log, faults, bound)
    problems += heal_problems
    py_saw_lua, lua_saw_py = heal.cross_language(log)
    os.close(lifeline)
    subprocess.run([PGTMP, "stop", pgdir], timeout=60, env=TOOL_ENV)
    subprocess.run(["rm", "-rf", work], timeout=60)
    ops = [r for r in log if "op" in r]
    counts = {o: sum(1 for r in ops if r["out"] == o) for o in ("ok", "fail", "unknown")}
    acked = sum(1 for r in ops if r["op"] == "append" and r["out"] == "ok")
    heals = ", ".join(f"{kind} {min(ts):.2f}-{max(ts):.2f} s ({len(ts)})"
                      for kind, ts in sorted(figures.items()))
    print(f"seed {seed}: {len(ops)} operations ({counts}), {acked} acknowledged appends, "
          f"faults {[(f['kind'], f['victim']) for f in faults]}, "
          f"final lengths {[len(lists.get(k, [])) for k in range(OBJECTS)]}, "
          f"snapshots at seq {snaps}; "
          f"healed in {heals or 'nothing measured'} (bound {bound:.1f} s); "
          f"reads across languages: Python saw Lua's {py_saw_lua}, Lua saw Python's {lua_saw_py}: "
          + ("PASS" if not problems else "FAIL"), flush=True)
    HEALS.append(figures)
    for p in problems[:20]:
        print("  " + p)
    if problems:
        # The history, the faults and the final lists, for a look afterwards
        # (which incarnation served what, when, relative to the faults).
        fd, kept = tempfile.mkstemp(prefix=f"dobj-fault-seed{seed}-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"seed": seed, "problems": problems, "faults": faults, "pauses": pauses,
                       "lists": lists, "log": log}, f)
        print(f"  the history is kept in {kept}")
    if verbose:
        for r in ops:
            if r["out"] == "unknown":
                print("  unknown:", r.get("err"))
    return not problems


HEALS = []  # per seed: {fault kind: [heal seconds, ...]}


def main():
    global TTL, GRACE
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=int(os.environ.get("SEEDS", "2")))
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SECONDS_PER_SEED", "20")))
    ap.add_argument("--ttl", type=float, default=TTL, help="the nodes' lease TTL (seconds)")
    ap.add_argument("--grace", type=float, default=GRACE, help="the nodes' grace (seconds)")
    ap.add_argument("--no-lua", action="store_true", help="three Python nodes")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    TTL, GRACE = args.ttl, args.grace
    ok = all([run_seed(s, args.seconds, args.v, not args.no_lua)
              for s in range(args.first, args.first + args.seeds)])
    every = {}
    for figures in HEALS:
        for kind, ts in figures.items():
            every.setdefault(kind, []).extend(ts)
    print("heal times over all seeds (TTL %.1f s, grace %.1f s): " % (TTL, GRACE) + ", ".join(
        f"{kind} median {sorted(ts)[len(ts) // 2]:.2f} s, max {max(ts):.2f} s (n={len(ts)})"
        for kind, ts in sorted(every.items())), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
