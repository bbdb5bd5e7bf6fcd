"""`make bench`: dobj's IDs and stub.fetch side by side with workerd.

    python3 bench/run.py [--seconds S] [--runs N] [--only SIDES] [--json FILE]

Standard library only.  Every side runs in its own process and is driven the
same way (bench/bench_ids.c, bench_py.py, bench_lua.lua answer "OP N" lines;
workerd answers HTTP requests, see bench/workerd/): for each figure the loop
count is calibrated so that one run takes about S seconds, and the best of N
runs is kept.  A side that is missing (not built yet, no npm...) is shown as
n/a with the reason; the bench itself does not fail for it.
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
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(BENCH, "workerd"))
sys.path.insert(0, BENCH)

import driver  # noqa: E402  (bench/workerd/driver.py)
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
    OPS = {"fetch": "stub_fetch_nobody", "fetch_body": "stub_fetch"}

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


def c_side(log) -> ProcSide:
    exe = os.path.join(ROOT, "build", "bench_ids")
    if os.access(exe, os.X_OK):
        if os.path.getmtime(exe) < os.path.getmtime(os.path.join(BENCH, "bench_ids.c")):
            print("bench: warning: build/bench_ids is older than bench/bench_ids.c", file=log)
        return ProcSide([exe, "--serve"])
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
                            os.path.join(BENCH, "bench_ids.c"), *libs, "-o", out],
                           capture_output=True, text=True)
        if r.returncode == 0:
            break
    if r.returncode != 0:
        raise SideError("build/bench_ids not built; building it by hand failed: "
                        + " | ".join(r.stderr.strip().splitlines()[-2:]))
    side = ProcSide([out, "--serve"])
    side.note = "built by hand into bench/.build (build/bench_ids missing)"
    return side


def make_sides(log) -> dict:
    """name -> (label, factory or None, reason)."""
    sides = {"workerd": ("workerd", WorkerdSide, "")}
    sides["c"] = ("C core", lambda: c_side(log), "")
    venv_py = os.environ.get("DOBJ_BENCH_PYTHON") or os.path.join(ROOT, ".venv", "bin", "python")
    if os.access(venv_py, os.X_OK):
        sides["py"] = ("Python binding", lambda: ProcSide(
            [venv_py, os.path.join(BENCH, "bench_py.py"), "dobj"]), "")
    else:
        sides["py"] = ("Python binding", None,
                       ".venv/bin/python missing (python3 -m venv .venv && .venv/bin/pip install .)")
    lua = shutil.which("lua5.4")
    so = os.path.join(ROOT, "build", "dobj.so")
    if lua and os.path.exists(so):
        sides["lua"] = ("Lua binding", lambda: ProcSide(
            [lua, os.path.join(BENCH, "bench_lua.lua")],
            {"LUA_CPATH": os.path.join(ROOT, "build", "?.so") + ";;"}), "")
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
]
# The workerd figure each row is compared with.
BASE = {**{op: ("workerd", op) for op in ID_OPS}, "stub.fetch": ("workerd", "fetch")}
# (figure, side, op) -> [(what, side, op, factor)]: the targets.
TARGETS = {
    ("id_from_name", "py", "id_from_name"): [("workerd", "workerd", "id_from_name", 5),
                                             ("pure Python", "pure", "id_from_name", 8)],
    **{(op, "c", op): [("workerd", "workerd", op, 10)] for op in ID_OPS},
    ("stub.fetch", "py", "fetch_sync"): [("workerd", "workerd", "fetch", 10)],
    ("stub.fetch", "py", "fetch_async"): [("workerd", "workerd", "fetch", 10)],
    ("stub.fetch", "lua", "fetch_main"): [("workerd", "workerd", "fetch", 20)],
    ("stub.fetch", "lua", "fetch_task"): [("workerd", "workerd", "fetch", 20)],
}


def measure(side, op: str, seconds: float, runs: int) -> float:
    n = 100 if "fetch" in op else 2000
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
    ap.add_argument("--runs", type=int, default=3, help="runs per figure, best kept (default 3)")
    ap.add_argument("--only", default="", help="comma-separated sides: workerd,c,py,lua,pure")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that cleanup runs
    log = sys.stderr
    started = time.monotonic()

    sides = make_sides(log)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results: dict = {}   # (side, op) -> ops/s
    errors: dict = {}    # side -> reason (n/a)
    notes: list[str] = []
    want_hex = pure_ids.PureNamespace("bench-key").id_from_name("x").to_string()
    versions = {}

    for key, (label, factory, why) in sides.items():
        if only and key not in only:
            errors[key] = "skipped (--only)"
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
            for figure, s, op, _ in ROWS:
                if s != key:
                    continue
                try:
                    results[(key, op)] = measure(side, op, args.seconds, args.runs)
                except (SideError, OSError, ValueError) as e:
                    results[(key, op)] = None
                    notes.append(f"{label} {op}: failed: {e}")
        except (SideError, OSError) as e:
            errors[key] = str(e) or type(e).__name__
        finally:
            if side is not None:
                side.close()

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
    out.append(f"best of {args.runs} runs of ~{args.seconds:g} s; ratios are to workerd "
               "measured in this run; unique key 'bench-key', name 'x'")
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
        base = results.get(BASE[figure])
        targets = TARGETS.get((figure, s, op), [])
        if v is None:
            ops = "n/a"
            ratio = ""
        else:
            ops = f"{v:,.0f}"
            ratio = f"{v / base:.2f}x" if base else "n/a"
        lines = []
        for what, ts, top, factor in targets:
            total += 1
            ref = results.get((ts, top))
            if v is None or not ref:
                unmeasured += 1
                lines.append((f">= {factor}x {what}", "n/a"))
                continue
            r = v / ref
            ok = r >= factor
            met_count += ok
            extra = f" ({r:.1f}x)" if ts != "workerd" else ""
            lines.append((f">= {factor}x {what}{extra}", "yes" if ok else "NO"))
        first = lines[0] if lines else ("", "")
        out.append(f"{fig:<15} {label:<24} {ops:>12} {ratio:>10}  {first[0]:<28} {first[1]}".rstrip())
        for t, m in lines[1:]:
            out.append(f"{'':<15} {'':<24} {'':>12} {'':>10}  {t:<28} {m}")
    out.append("")
    out.append(f"targets met: {met_count} of {total}"
               + (f", {unmeasured} could not be checked (n/a)" if unmeasured else ""))
    for key, reason in errors.items():
        out.append(f"n/a: {sides[key][0]}: {reason}")
    for n in notes:
        out.append(f"note: {n}")
    ref = {"id_from_name": 310e3, "id_from_string": 360e3, "new_unique_id": 320e3, "fetch": 14e3}
    seen = [f"{op} {results[('workerd', op)] / 1e3:,.0f}k vs ~{r / 1e3:,.0f}k"
            for op, r in ref.items() if results.get(("workerd", op))]
    if seen:
        out.append("note: workerd here vs the reference's figures (section 8): " + ", ".join(seen))
        # The targets were set against those figures: show that view too.
        vs_ref = [f"{sides[s][0]} {op} {results[(s, op)] / ref[base]:.1f}x"
                  for (fig, s, op), tl in TARGETS.items() for (_, ts, base, _) in tl[:1]
                  if ts == "workerd" and results.get((s, op))]
        if vs_ref:
            out.append("note: the same rows against the reference's workerd figures: "
                       + ", ".join(vs_ref))
    out.append("note: 'status only' awaits the Response without reading its body (the ratios use "
               "it: workerd's faster figure); dobj's Response already holds its body")
    out.append(f"({time.monotonic() - started:.0f} s)")
    print("\n".join(out), flush=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"figures": {f"{s}:{op}": v for (s, op), v in results.items()},
                       "na": errors, "notes": notes}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
