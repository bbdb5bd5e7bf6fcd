"""A throw-away PostgreSQL for the Python suite, from tests/cluster/pgtmp.sh
(the script the C and Lua suites use too).  The server goes away with the
test process however it ends: the test holds the server's lifeline (a FIFO)
open and the script's watchdog stops the server when it closes."""
import os
import shutil
import subprocess

PGTMP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster", "pgtmp.sh")
# The tools run without the sanitizer runtime `make sanitize` preloads into
# the interpreter under test (psql hangs with it).
TOOL_ENV = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")}


class PgServer:
    def __init__(self):
        out = subprocess.run([PGTMP, "start"], check=True, capture_output=True, text=True,
                             timeout=120, env=TOOL_ENV).stdout.split()
        self.url, self.dir = out[0], out[1]
        # Read-write: opening never blocks, and the watchdog sees a writer.
        self._lifeline = os.open(os.path.join(self.dir, "lifeline"), os.O_RDWR | os.O_CLOEXEC)

    def _run(self, verb):
        subprocess.run([PGTMP, verb, self.dir], check=True, timeout=60, env=TOOL_ENV)

    def kill(self):
        self._run("kill")

    def restart(self):
        self._run("restart")

    def sql(self, query):
        """One statement through psql; its output rows (unaligned)."""
        out = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", self.url, "-c", query],
                             check=True, capture_output=True, text=True, timeout=30,
                             env=TOOL_ENV).stdout
        return [line for line in out.splitlines() if line]

    def stop(self):
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
            self._run("stop")


def available():
    return shutil.which("pg_config") is not None and shutil.which("psql") is not None
