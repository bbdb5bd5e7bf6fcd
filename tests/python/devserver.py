"""A real `dobj dev` subprocess for the tests: started on a free port
(`--port 0`: the server prints the port it got), its stdout and stderr read
line by line by a thread, waited for by pattern with a bounded timeout, and
always stopped (SIGTERM, then SIGKILL after a timeout)."""
import http.client
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import project_util

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "examples" / "workers" / "python-counter"
CHAT = ROOT / "examples" / "chat"  # the chat room in both languages, one page
START_TIMEOUT = 60.0  # the ASan build starts slowly
STOP_TIMEOUT = 60.0


def copy_example(tmp_path, src=EXAMPLE):
    """A copy of project folder `src` (examples/workers/python-counter) in
    tmp_path, without its local state."""
    d = tmp_path / src.name
    shutil.copytree(src, d, ignore=shutil.ignore_patterns(".wrangler", "__pycache__"))
    return d


def http_request(port, path, method="GET", headers=None, body=None):
    """(status, headers, body) of one request to 127.0.0.1:port; header names
    in lower case (HTTP's are case-insensitive, and servers differ)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


DEV_TOML = textwrap.dedent("""\
    name = "t"
    main = "src/entry.py"
    [vars]
    GREETING = "hello"
    [[durable_objects.bindings]]
    name = "COUNTER"
    class_name = "Counter"
    [[migrations]]
    tag = "v1"
    new_sqlite_classes = ["Counter"]
    [env.staging]
    vars = { GREETING = "hello from staging" }
    """)


def write_project(d, entry, config=None):
    """project_util's, with DEV_TOML (a GREETING var, a staging env) for wrangler.toml
    when no config is given."""
    return project_util.write_project(d, entry, config or DEV_TOML)


def dev_env(**extra):
    env = dict(os.environ)
    env.pop("CLOUDFLARE_ENV", None)
    env.update(extra)
    return env


# `dobj-lua dev` of the CMake build (make build), for the tests that run
# the same requests against both servers.
DOBJ_LUA = ROOT / "build" / "bin" / "dobj-lua"


class DevServer:
    """`python -m dobj dev ARGS` (or the `dobj` console script, or with
    lua=True `dobj-lua dev` of the CMake build) in folder cwd."""

    def __init__(self, cwd, *args, script=False, env=None, ready=True, lua=False, server=None):
        if lua:
            cmd = [str(DOBJ_LUA)]
        elif script:
            cmd = [str(Path(sys.executable).parent / "dobj")]
        else:
            cmd = [sys.executable, "-m", "dobj"]
        if "--port" not in args:
            args = args + ("--port", "0")
        if server is not None and not lua:
            args = args + ("--server", server)
        self.kind = "lua" if lua else server or "native"
        self.proc = subprocess.Popen(
            cmd + ["dev", *args], cwd=str(cwd), env=env or dev_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, encoding="utf-8", errors="replace")
        self.log = []
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = None
        if ready:
            try:
                m = self.wait_for(r"Ready on http://127\.0\.0\.1:(\d+)", START_TIMEOUT)
            except BaseException:
                self.kill()
                raise
            self.port = int(m.group(1))

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern, timeout=30.0):
        """The first line (after those already seen) matching pattern."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; "
                                     f"output:\n{self.output()}") from None
            if line is None:
                self._lines.put(None)
                raise AssertionError(f"the server ended before a line matching {pattern!r}; "
                                     f"output:\n{self.output()}")
            self.log.append(line)
            m = rx.search(line)
            if m:
                return m

    def output(self):
        """Everything printed so far (waits for nothing)."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._lines.put(None)
                break
            self.log.append(line)
        return "".join(self.log)

    def wait(self, timeout=STOP_TIMEOUT):
        """The exit status (kills the server if it has not ended in time)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server did not stop within {timeout}s; "
                                 f"output:\n{self.output()}") from None
        self._reader.join(timeout)
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
