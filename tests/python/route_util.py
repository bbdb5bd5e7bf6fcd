"""A cluster node process for the Python tests (route_node.py), driven by
JSON lines on its stdin and stdout: tests/python/test_cluster_route.py,
test_cluster_hostile.py."""
import json
import os
import signal
import subprocess
import sys

NODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "route_node.py")


class Node:
    """A node process driven by JSON lines (route_node.py, or `script`:
    one with route_node.py's commands)."""

    def __init__(self, pg, storage, addr="127.0.0.1:0", idle=30, extra=False, script=NODE,
                 call_timeout=30, ttl=1.5):
        args = [sys.executable, script, pg.url, str(storage)] + ([addr] if addr else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, IDLE=str(idle), EXTRA="1" if extra else "",
                                              CALL_TIMEOUT=str(call_timeout), TTL=str(ttl)))
        ready = json.loads(self.proc.stdout.readline())
        self.node_id, self.addr = ready["ready"], ready["addr"]
        self.seq = 0
        self.early = {}
        self.ws_out = {}  # what objects sent on the WebSockets this node serves, by number

    def send(self, op="call", **cmd):
        self.seq += 1
        cmd.update(op=op, tag=self.seq)
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.seq

    def reply(self, tag=None):
        """The answer to command `tag` (None: the next one)."""
        while tag not in self.early:
            rec = self._read()
            if rec is None:
                continue
            if tag is None:
                return rec
            self.early[rec["tag"]] = rec
        return self.early.pop(tag)

    def _read(self):
        """The next answer, or None for a WebSocket record (kept for ws_next)."""
        line = self.proc.stdout.readline()
        assert line, "the node exited"
        rec = json.loads(line)
        if "ws" in rec:
            self.ws_out.setdefault(rec["ws"], []).append(rec)
            return None
        return rec

    def ws_next(self, n):
        """The next thing the object sent on WebSocket n (this node serves its client end)."""
        while not self.ws_out.get(n):
            rec = self._read()
            if rec is not None:
                self.early[rec["tag"]] = rec
        rec = self.ws_out[n].pop(0)
        rec.pop("ws")
        return rec

    def call(self, name, method, *args):
        return self.reply(self.send(name=name, method=method, args=list(args)))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
