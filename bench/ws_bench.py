"""WebSocket messages per second echoed by one Durable Object: `dobj dev`
(Python), `dobj-lua dev` (Lua) and `workerd serve`.

    python3 bench/ws_bench.py [--seconds S] [--runs N] [--pin]
                              [--only workerd,py,py_uvicorn,lua,py_bare,c_bare]

Part of `make bench`; also runs alone (after `make build venv`).  The same
project on every server: examples/chat/python's /echo (`dobj dev`),
examples/chat/lua's (`dobj-lua dev`) and bench/ws/echo.js (`workerd serve`,
config bench/ws/echo.capnp.in): the entry forwards the upgrade to one Echo
object, which accepts it with the hibernation API (ctx.acceptWebSocket) and
sends every message back from webSocketMessage.

The load client is build/ws_load (bench/ws/ws_load.c: C, one thread, epoll),
a separate process, the same command for every server: 32 connections, each
keeping 8 messages of 64 bytes in flight, every echo checked in order.  Every
row reports the CPU share its server (all threads) and the client used over
the run (1.00 = one core busy all the time): the client uses well under one
core.  With --pin (two CPUs or more) the server runs on CPU 0 and the client
on CPU 1 (taskset), so that neither takes the other's core; by default the
scheduler places them (workerd's threads may then use both cores).  The "bare C echo" row (`ws_load echo`, no object) shows
the client's own ceiling.  Each server is one process on a free port (the
dobj servers, uvicorn and ws_load pick one and print it; workerd is handed a
listening socket) with its state in a temporary folder; after a warm-up run
(not counted) the best of `runs` runs is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
WS = os.path.join(BENCH, "ws")
sys.path.insert(0, os.path.join(BENCH, "workerd"))
sys.path.insert(0, BENCH)

import driver  # noqa: E402  (bench/workerd/driver.py: install())
import servers  # noqa: E402  (bench/servers.py: the server processes)
from servers import Unavailable  # noqa: E402

CONNECTIONS = 32
WINDOW = 8
SIZE = 64

SERVERS = {"workerd": "workerd serve", "py": "dobj dev (Python, core server)",
           "py_uvicorn": "dobj dev --server uvicorn", "lua": "dobj-lua dev (Lua)",
           "py_bare": "uvicorn, bare echo", "c_bare": "bare C echo (ws_load)"}


def ws_load() -> str:
    path = os.path.join(ROOT, "build", "ws_load")
    if not os.access(path, os.X_OK):
        raise Unavailable("build/ws_load missing (make build)")
    return path


def pinning(enabled: bool) -> tuple[list[str], list[str]]:
    """The taskset prefixes of (server, client): CPU 0 and CPU 1, or none."""
    if not enabled or (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return [], []
    return ["taskset", "-c", "0"], ["taskset", "-c", "1"]


def venv_python() -> str:
    return servers.venv_python(ROOT)


# The servers that take port 0 and print the port they got ("Ready on" is
# dobj's, "Uvicorn running on" uvicorn's); workerd is handed a listening
# socket (uvicorn's --fd takes it for a Unix socket and leaves Nagle on).
READY_LINE = r"(?:Ready on|Uvicorn running on) http://127\.0\.0\.1:(\d+)"
PRINTS_PORT = {"py", "py_uvicorn", "lua", "py_bare", "c_bare"}


def workerd_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict, str]:
    try:
        binary, _version = driver.install()
    except driver.Unavailable as e:
        raise Unavailable(str(e))
    with open(os.path.join(WS, "echo.capnp.in")) as f:
        config = f.read().replace("@ADDRESS@", f"127.0.0.1:{port}")
    with open(os.path.join(tmp, "config.capnp"), "w") as f:
        f.write(config)
    shutil.copy(os.path.join(WS, "echo.js"), tmp)
    return ([binary, "serve", "config.capnp", "--experimental", f"--socket-fd=http={fd}"],
            driver.NO_PRELOAD, "/echo")


def python_server(tmp: str, port: int, fd: int, server: str = "native") -> tuple[list[str], dict, str]:
    py = venv_python()
    project = os.path.join(ROOT, "examples", "chat", "python", "wrangler.toml")
    return [py, "-m", "dobj", "dev", "--config", project, "--ip", "127.0.0.1",
            "--port", str(port), "--persist-to", os.path.join(tmp, "state"),
            "--server", server], {}, "/echo"


def python_uvicorn_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict, str]:
    return python_server(tmp, port, fd, "uvicorn")


def bare_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict, str]:
    py = venv_python()
    return [py, "-m", "uvicorn", "--app-dir", WS, "bare_echo:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "info",
            "--lifespan", "off", "--ws", "websockets-sansio"], {}, "/echo"


def lua_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict, str]:
    project = os.path.join(ROOT, "examples", "chat", "lua", "wrangler.toml")
    if not os.path.exists(project):
        raise Unavailable("examples/chat/lua is missing")
    cmd = servers.lua_command(ROOT)
    if cmd is None:
        raise Unavailable("dobj-lua not found")
    env = {"LUA_CPATH": os.path.join(ROOT, "build", "?.so") + ";;"}
    return [*cmd, "dev", "--config", project, "--ip", "127.0.0.1", "--port", str(port),
            "--persist-to", os.path.join(tmp, "state")], env, "/echo"


def c_bare_server(tmp: str, port: int, fd: int) -> tuple[list[str], dict, str]:
    return [ws_load(), "echo", str(port)], {}, "/echo"


COMMANDS = {"workerd": workerd_server, "py": python_server, "py_uvicorn": python_uvicorn_server,
            "lua": lua_server, "py_bare": bare_server, "c_bare": c_bare_server}


def answers_http(port: int) -> bool:
    """Ready when it answers HTTP at all (an error status too: 404, 426)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2).read()
    except urllib.error.HTTPError:
        pass
    return True


class Server(servers.ServerProcess):
    """One server process on a free port, in its own temporary folder;
    `path` is the echo's."""

    def __init__(self, name: str, prefix: list[str]):
        def command(tmp: str, port: int):
            argv, env, *extra = COMMANDS[name](tmp, port, self.listen_fd)
            return [*prefix, *argv], env, *extra
        super().__init__(name, command, answers_http, tmp_prefix="dobj-wsbench-",
                         port_line=READY_LINE if name in PRINTS_PORT else None)

    @property
    def path(self) -> str:
        return self.extra[0] if self.extra else "/"


def load(port: int, path: str, seconds: float, prefix: list[str]) -> dict:
    cmd = [*prefix, ws_load(), "client", f"ws://127.0.0.1:{port}{path}",
           "--connections", str(CONNECTIONS), "--window", str(WINDOW), "--size", str(SIZE),
           "--seconds", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120,
                         stdin=subprocess.DEVNULL)
    if out.returncode not in (0, 2):  # 2: some echoes did not match (counted below)
        raise Unavailable("the load client failed: " +
                          " | ".join(out.stderr.strip().splitlines()[-3:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name: str, seconds: float, runs: int, warmup: float, pin: bool, log=sys.stderr):
    """The best run's result of ws_load, with "server_cpu" added (the
    server's CPU time over the run's wall time, all its threads)."""
    notes = []
    server_prefix, client_prefix = pinning(pin)
    with Server(name, server_prefix) as server:
        best = None
        for i in range(runs + 1):
            cpu0 = server.cpu_seconds()
            r = load(server.port, server.path, warmup if i == 0 else seconds, client_prefix)
            cpu1 = server.cpu_seconds()
            r["server_cpu"] = (cpu1 - cpu0) / r["seconds"] if cpu0 is not None and cpu1 else None
            if r["mismatched"]:
                notes.append(f"{r['mismatched']} echoes did not match what was sent")
            if i == 0:
                print(f"bench: WebSocket, {SERVERS[name]}: warm-up {r['per_second']:,.0f} msg/s",
                      file=log, flush=True)
            elif best is None or r["per_second"] > best["per_second"]:
                best = r
    return best, notes


def run_all(seconds: float, runs: int, warmup: float, only=None, pin=False, log=sys.stderr):
    """{name: ws_load's result or None}, {name: reason}, [notes]."""
    results, reasons, notes = {}, {}, []
    for name, label in SERVERS.items():
        if only and name not in only:
            continue
        results[name] = None
        print(f"bench: WebSocket echo, {label} ...", file=log, flush=True)
        try:
            results[name], more = measure(name, seconds, runs, warmup, pin, log)
            notes.extend(f"{label}: {n}" for n in more)
        except (Unavailable, OSError, subprocess.SubprocessError, ValueError) as e:
            reasons[name] = str(e) or type(e).__name__
    return results, reasons, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5, help="length of one run (default 5)")
    ap.add_argument("--runs", type=int, default=2, help="runs per server, best kept (default 2)")
    ap.add_argument("--warmup", type=float, default=2, help="warm-up run, not counted (default 2)")
    ap.add_argument("--only", default="",
                    help="comma-separated servers: workerd,py,py_uvicorn,lua,py_bare,c_bare")
    ap.add_argument("--pin", action="store_true",
                    help="server on CPU 0, client on CPU 1 (default: wherever the scheduler puts them)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that servers are stopped
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results, reasons, notes = run_all(args.seconds, args.runs, args.warmup, only, args.pin)
    base = results.get("workerd")
    base = base["per_second"] if base else None
    server_pin, _ = pinning(args.pin)
    print(f"WebSocket echo, one object: {CONNECTIONS} connections x {WINDOW} in flight, "
          f"{SIZE}-byte text messages, {args.seconds:g} s runs, best of {args.runs} "
          f"(load client build/ws_load; "
          + ("server on CPU 0, client on CPU 1)" if server_pin else "not pinned)"))
    for name, r in results.items():
        v = r["per_second"] if r else None
        ratio = f"{v / base:5.2f}x workerd" if v and base else ""
        shown = "n/a" if v is None else f"{v:,.0f}"
        cpu = ""
        if r:
            scpu = "?" if r["server_cpu"] is None else f"{r['server_cpu']:.2f}"
            cpu = f"  CPU: server {scpu}, client {r['client_cpu']:.2f}"
        print(f"{SERVERS[name]:<31} {shown:>10} msg/s  {ratio:<14}{cpu}")
    for name, why in reasons.items():
        print(f"  {SERVERS[name]}: n/a: {why}")
    for n in notes:
        print(f"  note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
