"""A throw-away PostgreSQL for the Python suite, from tests/cluster/pgtmp.sh
(the script the C and Lua suites use too).  The server goes away with the
test process however it ends: the test holds the server's lifeline (a FIFO)
open and the script's watchdog stops the server when it closes."""
import os
import shutil
import socket
import struct
import subprocess
import urllib.parse

PGTMP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster", "pgtmp.sh")
# The tools run without the sanitizer runtime `make sanitize` preloads into
# the interpreter under test (psql hangs with it).
TOOL_ENV = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")}


class HeldLock:
    """A psql session that runs `lock_sql` in a transaction it keeps open
    until release(): whatever the statement locked stays locked meanwhile (a
    slow PostgreSQL, a contended row).  `lock_sql` prints `locked` exactly
    once when it holds the lock; the constructor returns then."""

    def __init__(self, pg, lock_sql):
        self.proc = subprocess.Popen(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", pg.url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=TOOL_ENV)
        # (the test's server ends transactions idle for 2 s: not this one)
        self.proc.stdin.write(f"SET idle_in_transaction_session_timeout = 0;\nBEGIN;\n{lock_sql}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("COMMIT;\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
            self.proc.stdout.close()


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

    def lapse_lease(self, node_id):
        """The lease of node `node_id` lapses on the database's clock (as if
        the node had been paused past it, or TTL + grace had passed)."""
        self.sql(f"UPDATE dobj_node SET lease_until = now() - interval '1 hour' WHERE node_id = {node_id}")

    def stop(self):
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
            self._run("stop")


def available():
    return shutil.which("pg_config") is not None and shutil.which("psql") is not None


class Listener:
    """A session LISTENing on a channel, for a test that waits for a change
    in PostgreSQL instead of polling for it: PostgreSQL's frontend/backend
    protocol (version 3) over a socket, the few messages a LISTEN needs, with
    the trust authentication of pgtmp.sh's server."""

    def __init__(self, url, channel):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        params = b"user\0" + u.username.encode() + b"\0database\0" + u.path[1:].encode() + b"\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        self._until_ready()
        q = f"LISTEN {channel}".encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
        self._until_ready()

    def _message(self):
        head = self._read(5)
        kind, n = head[:1], struct.unpack("!i", head[1:])[0]
        return kind, self._read(n - 4)

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("PostgreSQL closed the listening session")
            data += chunk
        return data

    def _until_ready(self):
        while True:
            kind, body = self._message()
            if kind == b"E":
                raise RuntimeError(f"PostgreSQL: {body!r}")
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise RuntimeError("the test server asks for a password (pgtmp.sh trusts)")
            if kind == b"Z":
                return

    def wait(self, timeout=30):
        """The payload of the next notification (socket.timeout past timeout)."""
        self.sock.settimeout(timeout)
        while True:
            kind, body = self._message()
            if kind == b"A":  # pid, channel, payload
                return body[4:].split(b"\0")[1].decode()

    def close(self):
        self.sock.close()
