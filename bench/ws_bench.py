"""WebSocket messages per second echoed by one Durable Object: `dobj dev`
(Python), `dobj-lua dev` (Lua) and `workerd serve`.

    python3 bench/ws_bench.py [--seconds S] [--runs N] [--only workerd,py,py_uvicorn,lua,py_bare]

Part of `make bench`; also runs alone.  The same project on every server:
examples/chat/python's /echo (`dobj dev`), examples/chat/lua's (`dobj-lua
dev`) and bench/ws/echo.js (`workerd
serve`, config bench/ws/echo.capnp.in): the entry forwards the upgrade to one
Echo object, which accepts it with the hibernation API
(ctx.acceptWebSocket) and sends every message back from webSocketMessage.

The load client is bench/ws/client.py, a separate process (Python asyncio and
the `websockets` library, uvloop when installed): 32 connections, each
keeping 8 messages of 64 bytes in flight, every echo checked.  Each server is
one process on a free port of 18800-18899 with its state in a temporary
folder; after a warm-up run (not counted) the best of `runs` runs is kept.
The client is not free: its own limit (measured against a bare uvicorn echo
app, the "uvicorn, bare echo" row) caps every row.
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

PORTS = range(18800, 18900)
CONNECTIONS = 32
WINDOW = 8

SERVERS = {"workerd": "workerd serve", "py": "dobj dev (Python, core server)",
           "py_uvicorn": "dobj dev --server uvicorn", "lua": "dobj-lua dev (Lua)",
           "py_bare": "uvicorn, bare echo"}


def venv_python() -> str:
    return servers.venv_python(ROOT)


def workerd_server(tmp: str, port: int) -> tuple[list[str], dict, str]:
    try:
        binary, _version = driver.install()
    except driver.Unavailable as e:
        raise Unavailable(str(e))
    with open(os.path.join(WS, "echo.capnp.in")) as f:
        config = f.read().replace("@ADDRESS@", f"127.0.0.1:{port}")
    with open(os.path.join(tmp, "config.capnp"), "w") as f:
        f.write(config)
    shutil.copy(os.path.join(WS, "echo.js"), tmp)
    return [binary, "serve", "config.capnp", "--experimental"], driver._env(), "/echo"


def python_server(tmp: str, port: int, server: str = "native") -> tuple[list[str], dict, str]:
    py = venv_python()
    project = os.path.join(ROOT, "examples", "chat", "python", "wrangler.toml")
    return [py, "-m", "dobj", "dev", "--config", project, "--ip", "127.0.0.1",
            "--port", str(port), "--persist-to", os.path.join(tmp, "state"),
            "--server", server], {}, "/echo"


def python_uvicorn_server(tmp: str, port: int) -> tuple[list[str], dict, str]:
    return python_server(tmp, port, "uvicorn")


def bare_server(tmp: str, port: int) -> tuple[list[str], dict, str]:
    py = venv_python()
    return [py, "-m", "uvicorn", "--app-dir", WS, "bare_echo:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning",
            "--lifespan", "off", "--ws", "websockets-sansio"], {}, "/echo"


def lua_server(tmp: str, port: int) -> tuple[list[str], dict, str]:
    project = os.path.join(ROOT, "examples", "chat", "lua", "wrangler.toml")
    if not os.path.exists(project):
        raise Unavailable("examples/chat/lua is missing")
    cmd = servers.lua_command(ROOT)
    if cmd is None:
        raise Unavailable("dobj-lua not found")
    env = {"LUA_CPATH": os.path.join(ROOT, "build", "?.so") + ";;"}
    return [*cmd, "dev", "--config", project, "--ip", "127.0.0.1", "--port", str(port),
            "--persist-to", os.path.join(tmp, "state")], env, "/echo"


COMMANDS = {"workerd": workerd_server, "py": python_server, "py_uvicorn": python_uvicorn_server,
            "lua": lua_server, "py_bare": bare_server}


def answers_http(port: int) -> bool:
    """Ready when it answers HTTP at all (an error status too: 404, 426)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2).read()
    except urllib.error.HTTPError:
        pass
    return True


class Server(servers.ServerProcess):
    """One server process on a port of ours, in its own temporary folder;
    `path` is the echo's."""

    def __init__(self, name: str):
        super().__init__(name, PORTS, COMMANDS[name], answers_http, tmp_prefix="dobj-wsbench-")

    @property
    def path(self) -> str:
        return self.extra[0] if self.extra else "/"


def load(port: int, path: str, seconds: float) -> dict:
    cmd = [venv_python(), os.path.join(WS, "client.py"), f"ws://127.0.0.1:{port}{path}",
           "--connections", str(CONNECTIONS), "--window", str(WINDOW), "--seconds", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise Unavailable("the load client failed: " +
                          " | ".join(out.stderr.strip().splitlines()[-3:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name: str, seconds: float, runs: int, warmup: float, log=sys.stderr):
    notes = []
    with Server(name) as server:
        best = 0.0
        for i in range(runs + 1):
            r = load(server.port, server.path, warmup if i == 0 else seconds)
            if r["mismatched"]:
                notes.append(f"{r['mismatched']} echoes did not match what was sent")
            if i == 0:
                print(f"bench: WebSocket, {SERVERS[name]}: warm-up {r['per_second']:,.0f} msg/s",
                      file=log, flush=True)
            else:
                best = max(best, r["per_second"])
    return best, notes


def run_all(seconds: float, runs: int, warmup: float, only=None, log=sys.stderr):
    """{name: messages/s or None}, {name: reason}, [notes]."""
    results, reasons, notes = {}, {}, []
    for name, label in SERVERS.items():
        if only and name not in only:
            continue
        results[name] = None
        print(f"bench: WebSocket echo, {label} ...", file=log, flush=True)
        try:
            results[name], more = measure(name, seconds, runs, warmup, log)
            notes.extend(f"{label}: {n}" for n in more)
        except (Unavailable, OSError, subprocess.SubprocessError, ValueError) as e:
            reasons[name] = str(e) or type(e).__name__
    return results, reasons, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5, help="length of one run (default 5)")
    ap.add_argument("--runs", type=int, default=2, help="runs per server, best kept (default 2)")
    ap.add_argument("--warmup", type=float, default=2, help="warm-up run, not counted (default 2)")
    ap.add_argument("--only", default="", help="comma-separated servers: workerd,py,py_uvicorn,lua,py_bare")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that servers are stopped
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results, reasons, notes = run_all(args.seconds, args.runs, args.warmup, only)
    base = results.get("workerd")
    print(f"WebSocket echo, one object: {CONNECTIONS} connections x {WINDOW} in flight, "
          "64-byte text messages (bench/ws/client.py)")
    for name, v in results.items():
        ratio = f"{v / base:6.2f}x workerd" if v and base else ""
        shown = "n/a" if v is None else f"{v:,.0f}"
        print(f"{SERVERS[name]:<22} {shown:>10} msg/s  {ratio}")
    for name, why in reasons.items():
        print(f"  {SERVERS[name]}: n/a: {why}")
    for n in notes:
        print(f"  note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
