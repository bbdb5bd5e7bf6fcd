"""`make demo`: `dobj dev` serving examples/workers/python-counter over HTTP.

Runs `python -m dobj dev --port 0` on a copy of the project (in a temporary
folder, so the example's own folder gets no state), sends a few requests,
prints them and the server's log, then stops it with SIGTERM.  Every step
has a time limit, and the server is killed whatever happens.
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
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 30


def main():
    with tempfile.TemporaryDirectory(prefix="dobj-dev-demo-") as tmp:
        project = os.path.join(tmp, "python-counter")
        shutil.copytree(os.path.join(HERE, "python-counter"), project,
                        ignore=shutil.ignore_patterns(".wrangler", "__pycache__"))
        cmd = [sys.executable, "-m", "dobj", "dev", "--port", "0"]
        print("$ cd python-counter && dobj dev --port 0", flush=True)
        proc = subprocess.Popen(cmd, cwd=project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = queue.Queue()

        def read():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            base = None
            while base is None:
                line = lines.get(timeout=TIMEOUT)
                if line is None:
                    raise SystemExit("dobj dev ended before it was ready")
                print("  " + line, end="", flush=True)
                m = re.search(r"Ready on (http://\S+)", line)
                if m:
                    base = m.group(1)
            for path in ("/alice", "/alice", "/bob", "/alice"):
                with urllib.request.urlopen(base + path, timeout=TIMEOUT) as r:
                    print(f"GET {path} -> {r.status} {r.read().decode()}", flush=True)
                print("  " + lines.get(timeout=TIMEOUT), end="", flush=True)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(TIMEOUT)
            reader.join(TIMEOUT)
            while not lines.empty() and (line := lines.get_nowait()) is not None:
                print("  " + line, end="")
            print(f"dobj dev stopped (exit status {rc})")
            return rc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)


if __name__ == "__main__":
    sys.exit(main())
