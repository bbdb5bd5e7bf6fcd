"""HTTP requests per second through `workerd serve`, `dobj dev` and `dobj-lua dev`.

    python3 bench/http_bench.py [--seconds S] [--runs N] [--only workerd,workerd_mem,py,lua,py_bare]

Part of `make bench` (bench/run.py calls run_all); also runs alone.  Standard
library only, plus `wrk` (Debian package) as the load generator.

The same project on every server (see bench/README.md, "HTTP"):
examples/workers/python-counter (`dobj dev`), examples/workers/lua-counter
(`dobj-lua dev`) and bench/http/counter.js (`workerd serve`, config
bench/http/counter.capnp.in): an entry that forwards each request to the
Durable Object named by the URL path, whose fetch reads a count from its
durable storage, adds one, writes it and returns it.  wrk (2 threads, 32
connections, keep-alive) sends GET /obj0 .. /obj31 in turn (bench/http/paths.lua).

Each server is one process on a free port (the dobj servers and uvicorn pick
one and print it; workerd is handed a listening socket) with its
storage in a temporary folder; after a warm-up run (not counted) the best of
`runs` wrk runs is kept.  Then the counts are read back: their sum must cover
every response wrk counted (a lost write shows).  The server is stopped with
SIGTERM (then SIGKILL) to its process group, with bounded waits, and dies
with this process if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
HTTP = os.path.join(BENCH, "http")
sys.path.insert(0, os.path.join(BENCH, "workerd"))
sys.path.insert(0, BENCH)

import driver  # noqa: E402  (bench/workerd/driver.py: install())
import servers  # noqa: E402  (bench/servers.py: the server processes)
from servers import Unavailable  # noqa: E402

OBJECTS = 32          # /obj0 .. /obj31 (bench/http/paths.lua)
THREADS = 2
CONNECTIONS = 32

# name -> label (the order of the table)
SERVERS = {"workerd": "workerd, localDisk", "workerd_mem": "workerd, in memory",
           "py": "dobj dev (Python, core server)", "py_uvicorn": "dobj dev --server uvicorn",
           "lua": "dobj-lua dev (Lua)", "py_bare": "uvicorn, bare app"}
# Servers without the counter (reference rows): no counts to check.
NO_COUNTS = {"py_bare"}


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# ------------------------------------------------------------ the servers
# The servers that take port 0 and print the port they got ("Ready on" is
# dobj's, "Uvicorn running on" uvicorn's); workerd is handed a listening
# socket (uvicorn's --fd takes it for a Unix socket and leaves Nagle on).
READY_LINE = r"(?:Ready on|Uvicorn running on) http://127\.0\.0\.1:(\d+)"
PRINTS_PORT = {"py", "py_uvicorn", "lua", "py_bare"}


def workerd_server(tmp: str, port: int, fd: int,
                   storage: str = 'localDisk = "do"') -> tuple[list[str], dict]:
    try:
        binary, _version = driver.install()
    except driver.Unavailable as e:
        raise Unavailable(str(e))
    with open(os.path.join(HTTP, "counter.capnp.in")) as f:
        config = f.read().replace("@ADDRESS@", f"127.0.0.1:{port}")
        config = config.replace("@STORAGE@", f"({storage})")
    with open(os.path.join(tmp, "config.capnp"), "w") as f:
        f.write(config)
    shutil.copy(os.path.join(HTTP, "counter.js"), tmp)
    os.makedirs(os.path.join(tmp, "do"))
    return ([binary, "serve", "config.capnp", "--experimental", f"--socket-fd=http={fd}"],
            driver.NO_PRELOAD)


def venv_python() -> str:
    return servers.venv_python(ROOT)


def python_server(tmp: str, port: int, fd: int, server: str = "native") -> tuple[list[str], dict]:
    py = venv_python()
    probe = subprocess.run([py, "-m", "dobj", "dev", "--help"], capture_output=True, text=True,
                           timeout=60, cwd=tmp)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"`python -m dobj dev` does not run: {last}")
    project = os.path.join(ROOT, "examples", "workers", "python-counter", "wrangler.toml")
    return [py, "-m", "dobj", "dev", "--config", project, "--ip", "127.0.0.1",
            "--port", str(port), "--persist-to", os.path.join(tmp, "state"),
            "--server", server], {}


def python_uvicorn_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict]:
    return python_server(tmp, port, fd, "uvicorn")


def bare_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict]:
    """uvicorn with the settings `dobj dev` uses (its HTTP parser and event
    loop chosen by uvicorn: httptools and uvloop when installed)."""
    py = venv_python()
    probe = subprocess.run([py, "-c", "import uvicorn"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise Unavailable("uvicorn is not installed in the venv")
    return [py, "-m", "uvicorn", "--app-dir", HTTP, "bare_asgi:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "info",
            "--lifespan", "off", "--no-server-header"], {}


def lua_command() -> list[str] | None:
    return servers.lua_command(ROOT)


def lua_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict]:
    cmd = lua_command()
    if cmd is None:
        raise Unavailable("dobj-lua not found (build/bin/dobj-lua, bindings/lua/bin/dobj-lua or on PATH)")
    project = os.path.join(ROOT, "examples", "workers", "lua-counter", "wrangler.toml")
    env = {"LUA_CPATH": os.path.join(ROOT, "build", "?.so") + ";;"}
    return [*cmd, "dev", "--config", project, "--ip", "127.0.0.1", "--port", str(port),
            "--persist-to", os.path.join(tmp, "state")], env


def workerd_memory_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict]:
    return workerd_server(tmp, port, fd, "inMemory = void")


COMMANDS = {"workerd": workerd_server, "workerd_mem": workerd_memory_server,
            "py": python_server, "py_uvicorn": python_uvicorn_server, "lua": lua_server,
            "py_bare": bare_server}


def counter_ready(port: int) -> bool:
    """Ready when the entry answers through an object (a different name
    from the measured ones)."""
    status, body = get(port, "/ready", timeout=2)
    if status == 200 and body.strip().isdigit():
        return True
    raise Unavailable(f"GET /ready answered {status} {body[:200]!r}")


class Server(servers.ServerProcess):
    """One server process on a free port, in its own temporary folder."""

    def __init__(self, name: str):
        super().__init__(name, lambda tmp, port: COMMANDS[name](tmp, port, self.listen_fd),
                         counter_ready, tmp_prefix="dobj-httpbench-",
                         port_line=READY_LINE if name in PRINTS_PORT else None)

    def counts(self) -> int:
        """The sum of the counts of /obj0 .. /obj31 before this read."""
        total = 0
        for i in range(OBJECTS):
            status, body = get(self.port, f"/obj{i}")
            if status != 200:
                raise Unavailable(f"GET /obj{i} answered {status} {body[:200]!r}")
            total += int(body) - 1
        return total


# ------------------------------------------------------------ wrk
def wrk(port: int, seconds: float) -> dict:
    cmd = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
           "--timeout", "10s", "-s", os.path.join(HTTP, "paths.lua"), f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                         stdin=subprocess.DEVNULL)
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    done = re.search(r"(\d+) requests in", text)
    if out.returncode != 0 or not rps or not done:
        raise Unavailable("wrk failed: " + " | ".join((out.stderr or text).strip().splitlines()[-3:]))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"rps": float(rps.group(1)), "requests": int(done.group(1)),
            "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


def measure(name: str, seconds: float, runs: int, warmup: float,
            log=sys.stderr) -> tuple[float, float | None, list[str]]:
    """(best req/s, server CPU us per request over the measured runs, notes)
    for one server; raises Unavailable."""
    notes = []
    with Server(name) as server:
        sent = measured = 0
        for i in range(runs + 1):
            if i == 1:
                cpu0 = server.cpu_seconds()
            r = wrk(server.port, warmup if i == 0 else seconds)
            sent += r["requests"]
            measured += r["requests"] if i else 0
            if r["non2xx"] or r["socket_errors"]:
                notes.append(f"{r['non2xx']} non-2xx responses, {r['socket_errors']} socket "
                             f"errors in {r['requests']} (log: {server.log_tail()})")
            if i == 0:
                best = 0.0
                print(f"bench: {SERVERS[name]}: warm-up {r['rps']:,.0f} req/s", file=log, flush=True)
            else:
                best = max(best, r["rps"])
        cpu1 = server.cpu_seconds()
        cpu = (cpu1 - cpu0) / measured * 1e6 if None not in (cpu0, cpu1) and measured else None
        # Every response wrk counted is in the counts; at most one request per
        # connection per run was cut off by wrk and may have counted too.
        if name not in NO_COUNTS:
            total = server.counts()
            if not sent <= total <= sent + CONNECTIONS * (runs + 1):
                notes.append(f"the objects counted {total:,} requests, wrk {sent:,}")
    return best, cpu, notes


def wrk_missing() -> str | None:
    return None if shutil.which("wrk") else "wrk not found (apt-get install wrk; make bench installs it)"


def run_all(seconds: float, runs: int, warmup: float, only=None, log=sys.stderr):
    """{name: req/s or None}, {name: server CPU us per request}, {name: reason}, [notes]."""
    results, cpu, reasons, notes = {}, {}, {}, []
    missing = wrk_missing()
    for name, label in SERVERS.items():
        if only and name not in only:
            continue
        results[name] = None
        if missing:
            reasons[name] = missing
            continue
        print(f"bench: HTTP, {label} ...", file=log, flush=True)
        try:
            results[name], cpu[name], more = measure(name, seconds, runs, warmup, log)
            notes.extend(f"{label}: {n}" for n in more)
        except (Unavailable, OSError, subprocess.SubprocessError, ValueError) as e:
            reasons[name] = str(e) or type(e).__name__
    return results, cpu, reasons, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5, help="length of one wrk run (default 5)")
    ap.add_argument("--runs", type=int, default=2, help="wrk runs per server, best kept (default 2)")
    ap.add_argument("--warmup", type=float, default=2, help="warm-up run, not counted (default 2)")
    ap.add_argument("--only", default="", help="comma-separated servers: workerd,workerd_mem,py,py_uvicorn,lua,py_bare")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that servers are stopped
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results, cpu, reasons, notes = run_all(args.seconds, args.runs, args.warmup, only)
    base = results.get("workerd")
    for name, v in results.items():
        ratio = f"{v / base:6.2f}x workerd" if v and base else ""
        us = f"{cpu[name]:6.1f} us CPU/request" if cpu.get(name) else ""
        print(f"{SERVERS[name]:<22} {'n/a' if v is None else f'{v:,.0f}':>10} req/s  "
              f"{us:<20} {ratio}".rstrip())
    for name, why in reasons.items():
        print(f"n/a: {SERVERS[name]}: {why}")
    for n in notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
