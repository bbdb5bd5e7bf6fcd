"""`make bench`: dobj's IDs, stub.fetch, storage, RPC and HTTP side by side with workerd.

    python3 bench/run.py [--seconds S] [--store-seconds S] [--runs N] [--only SIDES]
                         [--http-seconds S] [--http-runs N] [--json FILE]

Standard library only.  Every side runs in its own process and is driven the
same way (bench/bench_ids.c, bench_py.py, bench_lua.lua answer "OP N" lines;
workerd answers HTTP requests, see bench/workerd/): for each figure the loop
count is calibrated so that one run takes about S seconds, and the best of N
runs is kept.  A side that is missing (not built yet, no npm...) is shown as
n/a with the reason; the bench itself does not fail for it.  Storage lives
in a temporary directory (one folder per side) removed at the end.  The HTTP
rows come last, from bench/http_bench.py: one server process at a time
loaded by wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(BENCH, "workerd"))
sys.path.insert(0, BENCH)

import driver  # noqa: E402  (bench/workerd/driver.py)
import http_bench  # noqa: E402
import pure_ids  # noqa: E402

ID_OPS = ("id_from_name", "id_from_string", "new_unique_id")
REQUEST_TIMEOUT = 120.0


class SideError(Exception):
    pass


# ------------------------------------------------------------------ sides
class ProcSide:
    """A bench process speaking the "OP N" -> "ok SECONDS|-" line protocol."""

    def __init__(self, cmd: list[str], env: dict | None = None):
        self.cmd, self.env = cmd, env
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        self._hex = ""
        self.note = ""

    def start(self) -> None:
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        # The first command doubles as the readiness check ("ready" lines
        # before it are skipped); it also tells which ID the side computes.
        try:
            self.proc.stdin.write(b"hex\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        line = "ready"
        while line == "ready":
            line = self._line(60)
        if not line.startswith("ok "):
            raise SideError(line.removeprefix("error ") or self._stderr())
        self._hex = line[3:]

    def _stderr(self) -> str:
        if self.proc and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace").strip()
            return " | ".join(err.splitlines()[-3:]) or f"exited with {self.proc.returncode}"
        return "no answer"

    def _line(self, timeout: float) -> str:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SideError(f"timed out after {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise SideError(self._stderr())
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").strip()

    def ask(self, command: str) -> str:
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        line = self._line(REQUEST_TIMEOUT)
        if not line.startswith("ok"):
            raise SideError(line.removeprefix("error "))
        return line[3:]

    def run(self, op: str, n: int) -> float:
        t0 = time.perf_counter()
        out = self.ask(f"{op} {n}")
        outside = time.perf_counter() - t0
        return outside if out == "-" else float(out)

    def hex(self) -> str:
        return self._hex

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            f.close()


class WorkerdSide:
    OPS = {"fetch": "stub_fetch_nobody", "fetch_body": "stub_fetch"}  # else the same name

    def __init__(self):
        self.wd: driver.Workerd | None = None
        self.version = ""
        self.notes: list[str] = []

    def start(self) -> None:
        try:
            binary, self.version = driver.install()
            self.wd = driver.Workerd(binary)
            self.wd.__enter__()
        except driver.Unavailable as e:
            raise SideError(str(e))
        fails = driver.check_golden(self.wd)
        if fails:
            self.notes.append("workerd golden vectors MISMATCH: " + "; ".join(fails))
        else:
            self.notes.append(f"{self.version}: golden vectors and error messages match "
                              "the reference (6 IDs, 2 messages)")

    def run(self, op: str, n: int) -> float:
        return self.wd.run(self.OPS.get(op, op), n)

    def hex(self) -> str:
        return self.wd.last("id_from_name")

    def close(self) -> None:
        if self.wd:
            self.wd.stop()
            self.wd = None


C_SOURCES = ("bench_ids.c", "bench_storage.c")


def c_side(log, env: dict) -> ProcSide:
    exe = os.path.join(ROOT, "build", "bench_ids")
    if os.access(exe, os.X_OK):
        for src in C_SOURCES:
            if os.path.getmtime(exe) < os.path.getmtime(os.path.join(BENCH, src)):
                print(f"bench: warning: build/bench_ids is older than bench/{src}", file=log)
        return ProcSide([exe, "--serve"], env)
    # Not built by CMake (yet): build it by hand from the core's sources.
    src_dir = os.path.join(ROOT, "core", "src")
    srcs = sorted(os.path.join(src_dir, f) for f in os.listdir(src_dir) if f.endswith(".c")) \
        if os.path.isdir(src_dir) else []
    cc = shutil.which("cc") or shutil.which("gcc")
    if not srcs or not cc:
        raise SideError("build/bench_ids not built, and no C compiler or core sources")
    out = os.path.join(BENCH, ".build", "bench_ids")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    print("bench: build/bench_ids missing; building bench/.build/bench_ids by hand", file=log)
    # The core's own dependencies grow with it: try the fuller link line first.
    for libs in (["-lcrypto", "-lsqlite3", "-lffi", "-lpthread", "-ldl", "-lm"],
                 ["-lcrypto", "-lpthread"]):
        r = subprocess.run([cc, "-O2", "-I", os.path.join(ROOT, "core", "include"), *srcs,
                            *(os.path.join(BENCH, f) for f in C_SOURCES), *libs, "-o", out],
                           capture_output=True, text=True)
        if r.returncode == 0:
            break
    if r.returncode != 0:
        raise SideError("build/bench_ids not built; building it by hand failed: "
                        + " | ".join(r.stderr.strip().splitlines()[-2:]))
    side = ProcSide([out, "--serve"], env)
    side.note = "built by hand into bench/.build (build/bench_ids missing)"
    return side


def side_env(store: str, name: str) -> dict:
    """Environment of a dobj side: its storage folder and the native libraries."""
    folder = os.path.join(store, name)
    os.makedirs(folder, exist_ok=True)
    return {"DOBJ_BENCH_STORE": folder,
            "DOBJ_BENCH_NATIVE": os.path.join(ROOT, "build", "libbench_native.so"),
            "DOBJ_BENCH_RATE": os.path.join(ROOT, "build", "librate.so")}


def make_sides(log, store: str) -> dict:
    """name -> (label, factory or None, reason)."""
    sides = {"workerd": ("workerd", WorkerdSide, "")}
    sides["c"] = ("C core", lambda: c_side(log, side_env(store, "c")), "")
    venv_py = os.environ.get("DOBJ_BENCH_PYTHON") or os.path.join(ROOT, ".venv", "bin", "python")
    if os.access(venv_py, os.X_OK):
        sides["py"] = ("Python binding", lambda: ProcSide(
            [venv_py, os.path.join(BENCH, "bench_py.py"), "dobj"], side_env(store, "py")), "")
    else:
        sides["py"] = ("Python binding", None,
                       ".venv/bin/python missing (python3 -m venv .venv && .venv/bin/pip install .)")
    lua = shutil.which("lua5.4")
    so = os.path.join(ROOT, "build", "dobj.so")
    if lua and os.path.exists(so):
        sides["lua"] = ("Lua binding", lambda: ProcSide(
            [lua, os.path.join(BENCH, "bench_lua.lua")],
            {"LUA_CPATH": os.path.join(ROOT, "build", "?.so") + ";;",
             **side_env(store, "lua")}), "")
    else:
        sides["lua"] = ("Lua binding", None,
                        "lua5.4 not found" if not lua else "build/dobj.so not built")
    sides["pure"] = ("pure Python (hmac)", lambda: ProcSide(
        [sys.executable, os.path.join(BENCH, "bench_py.py"), "pure"]), "")
    return sides


# (figure, side, op, label)
ROWS = [
    *[(op, s, op, None) for op in ID_OPS for s in ("workerd", "c", "py", "lua", "pure")],
    ("stub.fetch", "workerd", "fetch", "workerd (status only)"),
    ("stub.fetch", "workerd", "fetch_body", "workerd (body read)"),
    ("stub.fetch", "py", "fetch_sync", "Python, def fetch"),
    ("stub.fetch", "py", "fetch_async", "Python, async def fetch"),
    ("stub.fetch", "lua", "fetch_main", "Lua, main chunk"),
    ("stub.fetch", "lua", "fetch_task", "Lua, rt:spawn task"),
    # Storage (issue 3): one call doing a loop of N puts / gets of small values
    # to distinct keys, on disk.
    ("storage put", "workerd", "store_kv_put", "workerd, sync kv.put"),
    ("storage put", "workerd", "store_put", "workerd, await put"),
    ("storage put", "c", "store_put", "C core"),
    ("storage put", "py", "store_put", "Python binding"),
    ("storage put", "lua", "store_put", "Lua binding"),
    ("storage get", "workerd", "store_kv_get", "workerd, sync kv.get"),
    ("storage get", "workerd", "store_get", "workerd, await get"),
    ("storage get", "c", "store_get", "C core"),
    ("storage get", "py", "store_get", "Python binding"),
    ("storage get", "lua", "store_get", "Lua binding"),
    # Round trips of a call that reads a counter, adds one, writes it and
    # replies after the commit (output gate), sequential, on disk.
    ("durable inc", "workerd", "store_inc_rpc", "workerd, RPC"),
    ("durable inc", "workerd", "store_inc_fetch", "workerd, fetch"),
    ("durable inc", "c", "store_inc", "C core, fetch"),
    ("durable inc", "py", "store_inc", "Python, fetch"),
    ("durable inc", "py", "store_inc_rpc", "Python, RPC"),
    ("durable inc", "lua", "store_inc", "Lua, fetch"),
    ("durable inc", "lua", "store_inc_rpc", "Lua, RPC"),
    # Flatness: random existing keys of an object with 1 thousand / 1 million keys.
    ("kv get, flat", "c", "flat_get_1k", "C core, 1k keys"),
    ("kv get, flat", "c", "flat_get_1m", "C core, 1M keys"),
    ("kv put, flat", "c", "flat_put_1k", "C core, 1k keys"),
    ("kv put, flat", "c", "flat_put_1m", "C core, 1M keys"),
    # RPC (issue 4): sequential `await stub.add(5)` round trips.
    ("rpc add", "workerd", "rpc_add", "workerd, await stub.add"),
    ("rpc add", "py", "rpc_add", "Python -> Python"),
    ("rpc add", "lua", "rpc_add", "Lua -> Lua, main chunk"),
    ("rpc add", "py", "native_add", "Python -> native"),
    ("rpc add", "lua", "native_add", "Lua -> native"),
    ("rpc add", "c", "native_add", "C -> native"),
    ("rpc add", "py", "native_take", "Python -> librate take"),
    ("rpc add", "lua", "native_take", "Lua -> librate take"),
    # HTTP (issue 8): requests per second through one server process loaded by
    # wrk (32 connections), each request counted by the Durable Object named
    # by its path (bench/http_bench.py).  Side "http", op = the server.
    *[("http counter", "http", name, label) for name, label in http_bench.SERVERS.items()],
]
# The workerd figure(s) each row is compared with: the faster one in this run.
BASE = {**{op: [("workerd", op)] for op in ID_OPS}, "stub.fetch": [("workerd", "fetch")],
        "storage put": [("workerd", "store_kv_put"), ("workerd", "store_put")],
        "storage get": [("workerd", "store_kv_get"), ("workerd", "store_get")],
        "durable inc": [("workerd", "store_inc_rpc"), ("workerd", "store_inc_fetch")],
        "rpc add": [("workerd", "rpc_add")],
        # workerd on disk, as `wrangler dev` runs the project (dobj's state is
        # on disk too); the in-memory row is shown for reference.
        "http counter": [("http", "workerd")],
        "kv get, flat": [], "kv put, flat": []}
# Ops measured with --store-seconds (the storage and RPC rows).
NEW_FIGURES = {"storage put", "storage get", "durable inc", "kv get, flat", "kv put, flat",
               "rpc add"}
# (figure, side, op) -> [(what, side, op, factor)]: the targets.
TARGETS = {
    ("id_from_name", "py", "id_from_name"): [("workerd", "workerd", "id_from_name", 5),
                                             ("pure Python", "pure", "id_from_name", 8)],
    **{(op, "c", op): [("workerd", "workerd", op, 10)] for op in ID_OPS},
    ("stub.fetch", "py", "fetch_sync"): [("workerd", "workerd", "fetch", 10)],
    ("stub.fetch", "py", "fetch_async"): [("workerd", "workerd", "fetch", 10)],
    ("stub.fetch", "lua", "fetch_main"): [("workerd", "workerd", "fetch", 20)],
    ("stub.fetch", "lua", "fetch_task"): [("workerd", "workerd", "fetch", 20)],
    ("storage put", "py", "store_put"): [("workerd kv.put", "workerd", "store_kv_put", 3)],
    ("storage get", "py", "store_get"): [("workerd kv.get", "workerd", "store_kv_get", 3)],
    # (None: the faster workerd row of the figure)
    **{("durable inc", s, op): [("workerd", "workerd", None, 10)]
       for s, op in (("c", "store_inc"), ("py", "store_inc"), ("py", "store_inc_rpc"),
                     ("lua", "store_inc"), ("lua", "store_inc_rpc"))},
    # Flat: the 1M-key figure at least half the 1k-key one (cost within 2x).
    ("kv get, flat", "c", "flat_get_1m"): [("1k keys", "c", "flat_get_1k", 0.5)],
    ("kv put, flat", "c", "flat_put_1m"): [("1k keys", "c", "flat_put_1k", 0.5)],
    ("rpc add", "py", "rpc_add"): [("workerd", "workerd", "rpc_add", 10)],
    ("rpc add", "lua", "rpc_add"): [("workerd", "workerd", "rpc_add", 10)],
    ("rpc add", "py", "native_add"): [("workerd", "workerd", "rpc_add", 30)],
    ("http counter", "http", "py"): [("workerd", "http", "workerd", 3)],
    ("http counter", "http", "lua"): [("workerd", "http", "workerd", 3)],
}


def measure(side, op: str, seconds: float, runs: int) -> float:
    n = 100 if any(w in op for w in ("fetch", "inc", "rpc", "native")) else 2000
    probe = min(0.1, seconds / 4)
    while True:
        t = side.run(op, n)
        if t >= probe:
            break
        n *= 2 if t > probe / 4 else 8
    n = max(1, int(n * seconds / t))
    side.run(op, max(1, n // 3))  # warm-up (workerd's JIT, caches), not counted
    return max(n / side.run(op, n) for _ in range(runs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.75, help="length of one run (default 0.75)")
    ap.add_argument("--store-seconds", type=float, default=0.4,
                    help="length of one run of the storage and RPC figures (default 0.4)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure, best kept (default 3)")
    ap.add_argument("--http-seconds", type=float, default=4,
                    help="length of one wrk run of the HTTP rows (default 4)")
    ap.add_argument("--http-runs", type=int, default=2,
                    help="wrk runs per HTTP server, best kept (default 2)")
    ap.add_argument("--only", default="",
                    help="comma-separated sides: workerd,c,py,lua,pure,http,cluster")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that cleanup runs
    log = sys.stderr
    started = time.monotonic()

    store = tempfile.mkdtemp(prefix="dobj-bench-")
    try:
        return bench(args, log, started, store)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def workerd_base(results: dict, figure: str):
    """The faster of the workerd figures a row is compared with (None if none)."""
    got = [results.get(b) for b in BASE[figure]]
    got = [v for v in got if v]
    return max(got) if got else None


def bench(args, log, started: float, store: str) -> int:
    sides = make_sides(log, store)
    sides["http"] = ("HTTP", None, "")  # measured after the others (below)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results: dict = {}   # (side, op) -> ops/s
    errors: dict = {}    # side -> reason (n/a)
    notes: list[str] = []
    na_ops: dict = {}    # reason -> [label op] (a feature missing from a side)
    want_hex = pure_ids.PureNamespace("bench-key").id_from_name("x").to_string()
    versions = {}

    for key, (label, factory, why) in sides.items():
        if only and key not in only:
            errors[key] = "skipped (--only)"
            continue
        if key == "http":
            continue
        if factory is None:
            errors[key] = why
            continue
        side = None
        try:
            side = factory()
            if getattr(side, "note", ""):
                notes.append(f"{label}: {side.note}")
            print(f"bench: {label} ...", file=log, flush=True)
            side.start()
            if isinstance(side, WorkerdSide):
                notes.extend(side.notes)
                versions["workerd"] = side.version
            got = side.hex()
            if got != want_hex:
                notes.append(f"{label}: WRONG ID for bench-key/'x': {got} (want {want_hex})")
            for figure, s, op, row_label in ROWS:
                if s != key:
                    continue
                seconds = args.store_seconds if figure in NEW_FIGURES else args.seconds
                try:
                    results[(key, op)] = measure(side, op, seconds, args.runs)
                except (SideError, OSError, ValueError) as e:
                    results[(key, op)] = None
                    if str(e).startswith("n/a: "):
                        na_ops.setdefault(str(e)[5:], []).append(f"{figure}: {row_label or label}")
                    else:
                        notes.append(f"{label} {op}: failed: {e}")
        except (SideError, OSError) as e:
            errors[key] = str(e) or type(e).__name__
        finally:
            if side is not None:
                side.close()

    http_started = time.monotonic()
    http_cpu: list = []
    if not only or "http" in only:
        got, cpu, reasons, more = http_bench.run_all(args.http_seconds, args.http_runs, 1.0,
                                                     log=log)
        http_cpu = [f"{http_bench.SERVERS[n]} {us:.0f}" for n, us in cpu.items() if us]
        results.update({("http", name): v for name, v in got.items()})
        for name, reason in reasons.items():
            na_ops.setdefault(reason, []).append(f"http counter: {http_bench.SERVERS[name]}")
        notes.extend(more)

    # ------------------------------------------------------------ table
    out = []
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    out.append(f"dobj bench — {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs {cpu}, "
               f"Python {platform.python_version()}, {versions.get('workerd', 'workerd n/a')}")
    out.append(f"best of {args.runs} runs of ~{args.seconds:g} s (storage and RPC: "
               f"~{args.store_seconds:g} s); ratios are to workerd measured in this run "
               "(its faster row where it has two); IDs: unique key 'bench-key', name 'x'")
    out.append("")
    hdr = f"{'figure':<15} {'implementation':<24} {'ops/s':>12} {'x workerd':>10}  {'target':<28} met"
    out.append(hdr)
    out.append("-" * len(hdr))
    met_count = total = unmeasured = 0
    last_fig = None
    for figure, s, op, label in ROWS:
        label = label or sides[s][0]
        fig = figure if figure != last_fig else ""
        last_fig = figure
        v = results.get((s, op))
        base = workerd_base(results, figure)
        targets = TARGETS.get((figure, s, op), [])
        if v is None:
            ops = "n/a"
            ratio = ""
        else:
            ops = f"{v:,.0f}"
            ratio = f"{v / base:.2f}x" if base else ("n/a" if BASE[figure] else "")
        lines = []
        for what, ts, top, factor in targets:
            total += 1
            ref = workerd_base(results, figure) if top is None else results.get((ts, top))
            if v is None or not ref:
                unmeasured += 1
                lines.append((f">= {factor}x {what}", "n/a"))
                continue
            r = v / ref
            ok = r >= factor
            met_count += ok
            extra = f" ({r:.2g}x)" if ts not in ("workerd", "http") else ""
            lines.append((f">= {factor:g}x {what}{extra}", "yes" if ok else "NO"))
        first = lines[0] if lines else ("", "")
        out.append(f"{fig:<15} {label:<24} {ops:>12} {ratio:>10}  {first[0]:<28} {first[1]}".rstrip())
        for t, m in lines[1:]:
            out.append(f"{'':<15} {'':<24} {'':>12} {'':>10}  {t:<28} {m}")
    out.append("")
    out.append(f"targets met: {met_count} of {total}"
               + (f", {unmeasured} could not be checked (n/a)" if unmeasured else ""))
    for key, reason in errors.items():
        out.append(f"n/a: {sides[key][0]}: {reason}")
    for reason, rows in na_ops.items():
        out.append(f"n/a: {', '.join(rows)}: {reason}")
    for n in notes:
        out.append(f"note: {n}")
    ref = {"id_from_name": 310e3, "id_from_string": 360e3, "new_unique_id": 320e3, "fetch": 14e3,
           "rpc_add": 28e3, "store_put": 67e3, "store_get": 86e3, "store_kv_put": 390e3,
           "store_kv_get": 130e3, "store_inc_rpc": 3.1e3}
    seen = [f"{op} {results[('workerd', op)] / 1e3:,.0f}k vs ~{r / 1e3:,.0f}k"
            for op, r in ref.items() if results.get(("workerd", op))]
    if seen:
        out.append("note: workerd here vs the reference's figures (section 8): " + ", ".join(seen))
        # The targets were set against those figures: show that view too.
        vs_ref = [f"{sides[s][0]} {op} {results[(s, op)] / ref[base or BASE[fig][0][1]]:.1f}x"
                  for (fig, s, op), tl in TARGETS.items() for (_, ts, base, _) in tl[:1]
                  if ts == "workerd" and (base or BASE[fig][0][1]) in ref
                  and results.get((s, op))]
        if vs_ref:
            out.append("note: the same rows against the reference's workerd figures: "
                       + ", ".join(vs_ref))
    out.append("note: 'status only' awaits the Response without reading its body (the ratios use "
               "it: workerd's faster figure); dobj's Response already holds its body")
    out.append("note: storage is on disk on every side (workerd localDisk with enableSql, dobj "
               "Runtime(storage=DIR) in a temporary folder, removed at the end); flat rows: random "
               "existing keys, the target compares 1M keys with 1k keys, not with workerd")
    if results.get(("http", "workerd")):
        out.append(
            f"note: http counter: {http_bench.OBJECTS} objects (/obj0../obj{http_bench.OBJECTS - 1}), "
            f"wrk -t{http_bench.THREADS} -c{http_bench.CONNECTIONS}, best of {args.http_runs} runs of "
            f"~{args.http_seconds:g} s after a 1 s warm-up ({time.monotonic() - http_started:.0f} s "
            "in all); workerd's localDisk SQLite fsyncs each commit, dobj's WAL does not (it "
            "survives a process kill, not a power cut)")
        if http_cpu:
            out.append("note: http counter, server CPU time (all its threads) per request, us: "
                       + "; ".join(http_cpu))
        mem = results.get(("http", "workerd_mem"))
        vs = [f"{http_bench.SERVERS[s]} {results[('http', s)] / mem:.2f}x"
              for s in ("py", "lua") if mem and results.get(("http", s))]
        if vs:
            out.append("note: http counter against workerd in memory: " + ", ".join(vs))
    if not only or "cluster" in only:
        import cluster_bench  # bench/cluster_bench.py: PostgreSQL rows
        out.extend(cluster_bench.rows(*cluster_bench.run(args.store_seconds)))
        import route_bench  # bench/route_bench.py: calls between nodes, failover
        out.extend(route_bench.rows(*route_bench.run(args.store_seconds)))
    out.append(f"({time.monotonic() - started:.0f} s)")
    print("\n".join(out), flush=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"figures": {f"{s}:{op}": v for (s, op), v in results.items()},
                       "na": errors, "notes": notes}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
