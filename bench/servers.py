"""Server processes for the benchmarks (bench/http_bench.py, bench/ws_bench.py,
bench/workerd/driver.py): one copy of starting a server in its own process
group and temporary folder, waiting until it answers, reading its log and
CPU time, and stopping it (SIGTERM, then SIGKILL, with bounded waits; it dies
with this process too, PR_SET_PDEATHSIG).  Standard library only."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Callable, Iterator, Optional


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

    `command(tmp, port)` returns (argv, extra environment, ...); a variable
    set to None in the extra environment is removed from the server's.
    `ready(port)` returns True once the server answers (or raises
    Unavailable).  No port is picked in advance (another process could take
    it first): the server is handed a listening socket on a free loopback
    port, as file descriptor `self.listen_fd`; or, with `port_line` (a
    regular expression with one group), command gets port 0 and the port
    is read from the first line of the server's output that matches."""

    def __init__(self, name: str, command: Callable[[str, int], tuple],
                 ready: Callable[[int], bool], start_timeout: float = 30.0,
                 stop_timeout: float = 10.0, tmp_prefix: str = "dobj-bench-",
                 tmp_dir: Optional[str] = None, tmp_suffix: str = "",
                 port_line: Optional[str] = None):
        self.name = name
        self.port_line = re.compile(port_line) if port_line else None
        self.command = command
        self.ready = ready
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.tmp: Optional[str] = tempfile.mkdtemp(prefix=f"{tmp_prefix}{name}-", suffix=tmp_suffix,
                                                   dir=tmp_dir)
        self.log_path = os.path.join(self.tmp, "server.log")
        self.port = 0
        self.listen_fd = -1
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
        sock = None
        self.port = 0
        if self.port_line is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self.port, self.listen_fd = sock.getsockname()[1], sock.fileno()
        atexit.register(self.stop)  # the folder goes even when the caller forgets
        try:
            cmd, env, *self.extra = self.command(self.tmp, self.port)
            env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(cmd, cwd=self.tmp, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log, start_new_session=True,
                                             pass_fds=(self.listen_fd,) if sock else (),
                                             preexec_fn=die_with_parent, env=env)
        finally:
            if sock is not None:
                sock.close()
                self.listen_fd = -1
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"exited with {self.proc.returncode}: {self.log_tail()}")
            if not self.port:
                self.port = self.printed_port()
            try:
                if self.port and self.ready(self.port):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"no answer within {self.start_timeout:.0f} s: "
                                  f"{self.log_tail()}")
            time.sleep(0.1)

    def printed_port(self) -> int:
        """The port in the server's output (port_line), 0 while none."""
        try:
            with open(self.log_path, errors="replace") as f:
                m = self.port_line.search(f.read())
        except OSError:
            return 0
        return int(m.group(1)) if m else 0

    def stop(self) -> None:
        atexit.unregister(self.stop)
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


@contextlib.contextmanager
def postgres(root: str) -> Iterator[str]:
    """A throw-away PostgreSQL from tests/cluster/pgtmp.sh (the script every
    suite uses): its URL, the server stopped on leaving.  It also goes when
    this process does, however that happens: the script's watchdog stops it
    once the lifeline (a FIFO) this process holds open closes.  Raises
    Unavailable when it can't start."""
    pgtmp = os.path.join(root, "tests", "cluster", "pgtmp.sh")
    try:
        out = subprocess.run([pgtmp, "start"], check=True, capture_output=True, text=True,
                             timeout=120).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise Unavailable(f"no PostgreSQL ({e})")
    url, folder = out[0], out[1]
    # Read-write: opening never blocks, and the watchdog sees a writer.
    lifeline = os.open(os.path.join(folder, "lifeline"), os.O_RDWR | os.O_CLOEXEC)
    try:
        yield url
    finally:
        os.close(lifeline)
        subprocess.run([pgtmp, "stop", folder], timeout=60)


def name_values(text: str) -> dict:
    """{name: float} of the "name value" lines a C bench (bench_*.c) prints."""
    got = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        got[name] = float(value)
    return got
