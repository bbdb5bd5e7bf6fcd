"""`make demo`: two `dobj dev --cluster` servers on one PostgreSQL database.

Starts a throw-away PostgreSQL (tests/cluster/pgtmp.sh: Debian's `postgresql`
package; skipped with a note when it is not installed), creates the schema
with `dobj cluster init`, runs examples/workers/python-counter twice (two
copies, two state folders, two nodes of one cluster), counts through the
first, asks the second, stops the first and counts on through the second:
the object's state lives in PostgreSQL, whichever node serves it.  Every
step has a time limit; the servers are killed and the database stopped
whatever happens.
"""
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PGTMP = os.path.join(HERE, "..", "..", "tests", "cluster", "pgtmp.sh")
TIMEOUT = 30
DOBJ = [sys.executable, "-m", "dobj"]
# The tools run without a sanitizer preload (psql and initdb hang with it).
TOOL_ENV = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}


class Server:
    def __init__(self, name, project, url):
        self.name = name
        self.proc = subprocess.Popen(
            DOBJ + ["dev", "--port", "0", "--cluster", url, "--node-addr", "127.0.0.1:0"],
            cwd=project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.base = None
        while self.base is None:
            line = self.lines.get(timeout=TIMEOUT)
            if line is None:
                raise SystemExit(f"dobj dev ({name}) ended before it was ready")
            print(f"  {name}| {line}", end="", flush=True)
            m = re.search(r"Ready on (http://\S+)", line)
            if m:
                self.base = m.group(1)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def get(self, path):
        try:
            with urllib.request.urlopen(self.base + path, timeout=TIMEOUT) as r:
                status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read().decode().strip().splitlines()[0][:120]
        print(f"GET {path} on {self.name} -> {status} {body}", flush=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            if line is None:
                break
            print(f"  {self.name}| {line}", end="")
        return self.proc.returncode


def main():
    if not (shutil.which("pg_config") and shutil.which("psql")):
        print("skipped: PostgreSQL is not installed (Debian: postgresql)")
        return 0
    out = subprocess.run([PGTMP, "start"], check=True, capture_output=True, text=True,
                         timeout=120, env=TOOL_ENV).stdout.split()
    url, pgdir = out[0], out[1]
    lifeline = os.open(os.path.join(pgdir, "lifeline"), os.O_RDWR | os.O_CLOEXEC)
    servers = []
    try:
        print("$ dobj cluster init postgresql://...", flush=True)
        init = subprocess.run(DOBJ + ["cluster", "init", url], capture_output=True, text=True,
                              timeout=TIMEOUT)
        print("  " + (init.stdout or init.stderr), end="", flush=True)
        with tempfile.TemporaryDirectory(prefix="dobj-cluster-demo-") as tmp:
            for name in ("a", "b"):
                project = os.path.join(tmp, name)
                shutil.copytree(os.path.join(HERE, "python-counter"), project,
                                ignore=shutil.ignore_patterns(".wrangler", "__pycache__"))
                print(f"$ cd {name} && dobj dev --port 0 --cluster postgresql://... "
                      "--node-addr 127.0.0.1:0", flush=True)
                servers.append(Server(name, project, url))
            a, b = servers
            for _ in range(3):
                a.get("/alice")
            b.get("/alice")  # routed to a, or refused while a holds the object
            print("$ kill -TERM <a>  (a releases its objects)", flush=True)
            print(f"a stopped (exit status {a.stop()})", flush=True)
            b.get("/alice")  # b takes the object over, its count from PostgreSQL
            b.get("/alice")
            print(f"b stopped (exit status {b.stop()})", flush=True)
        return 0
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait(TIMEOUT)
        os.close(lifeline)
        subprocess.run([PGTMP, "stop", pgdir], timeout=60, env=TOOL_ENV)


if __name__ == "__main__":
    sys.exit(main())
