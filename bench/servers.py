"""Server processes for the benchmarks (bench/http_bench.py, bench/ws_bench.py,
bench/workerd/driver.py): one copy of starting a server in its own process
group and temporary folder, waiting until it answers, reading its log and
CPU time, and stopping it (SIGTERM, then SIGKILL, with bounded waits; it dies
with this process too, PR_SET_PDEATHSIG).  Standard library only."""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Callable, Optional


class Unavailable(Exception):
    """This server can't run here; the message says why."""


def die_with_parent() -> None:
    """Runs in the child between fork and exec: ask Linux to SIGKILL the
    server when the process that started it goes away, however that happens."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_port(ports: range) -> int:
    """A free port of `ports` (each bench has its own range)."""
    order = list(ports)
    random.shuffle(order)
    for port in order:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise Unavailable(f"no free port in {ports.start}-{ports.stop - 1}")


def stop_group(proc: Optional[subprocess.Popen], timeout: float) -> None:
    """SIGTERM the process group of proc, SIGKILL it if it has not ended in
    `timeout` seconds, then kill whatever its children left in the group."""
    if proc is None:
        return
    if proc.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"


def cpu_seconds(pid: int) -> Optional[float]:
    """CPU time (user + system, every thread) process pid used so far, from
    /proc (None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ServerProcess:
    """One server process in its own temporary folder (removed at stop),
    its output in server.log there.

    `command(tmp, port)` returns (argv, extra environment); `ready(port)`
    returns True once the server answers (or raises Unavailable)."""

    def __init__(self, name: str, ports: range, command: Callable[[str, int], tuple],
                 ready: Callable[[int], bool], start_timeout: float = 30.0,
                 stop_timeout: float = 10.0, tmp_prefix: str = "dobj-bench-"):
        self.name = name
        self.ports = ports
        self.command = command
        self.ready = ready
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.tmp: Optional[str] = tempfile.mkdtemp(prefix=f"{tmp_prefix}{name}-")
        self.log_path = os.path.join(self.tmp, "server.log")
        self.port = 0
        self.extra = ()  # what command() returned beyond argv and env

    def __enter__(self) -> "ServerProcess":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.port = free_port(self.ports)
        cmd, env, *self.extra = self.command(self.tmp, self.port)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.tmp, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True,
                                         preexec_fn=die_with_parent, env={**os.environ, **env})
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.ready(self.port):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"no answer within {self.start_timeout:.0f} s: "
                                  f"{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc, self.stop_timeout)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def log_tail(self, lines: int = 3) -> str:
        return log_tail(self.log_path, lines)

    def cpu_seconds(self) -> Optional[float]:
        return cpu_seconds(self.proc.pid) if self.proc is not None else None


def venv_python(root: str) -> str:
    py = os.environ.get("DOBJ_BENCH_PYTHON") or os.path.join(root, ".venv", "bin", "python")
    if not os.access(py, os.X_OK):
        raise Unavailable(".venv/bin/python missing (make venv)")
    return py


def lua_command(root: str) -> Optional[list]:
    """How to run dobj-lua: the CMake build's, the source script with
    lua5.4, or one on PATH."""
    for p in (os.path.join(root, "build", "bin", "dobj-lua"), os.path.join(root, "build", "dobj-lua")):
        if os.access(p, os.X_OK):
            return [p]
    script = os.path.join(root, "bindings", "lua", "bin", "dobj-lua")
    lua = shutil.which("lua5.4")
    if os.path.exists(script) and lua:
        return [lua, script]
    p = shutil.which("dobj-lua")
    return [p] if p else None
