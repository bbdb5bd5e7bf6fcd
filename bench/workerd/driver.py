"""Run the workerd peer for `make bench` (Python standard library only).

    python3 bench/workerd/driver.py      # install if needed, check IDs, quick figures

* install(): workerd from npm into bench/.node (ignored by git), pinned to the
  version the reference was measured with, else the newest that installs.
* Workerd: a bench/servers.py ServerProcess (a context manager) that writes
  config.capnp (from config.capnp.in) and worker.js into a temporary folder,
  hands `workerd serve --experimental --socket-fd` a listening socket on a
  free loopback port (no port race), and always stops the server: SIGTERM
  then SIGKILL to its process group on exit, and PR_SET_PDEATHSIG so that it
  dies with us even if this process is killed outright.  Every request has a
  timeout.
* run(op, n): one request to /bench; the worker times the loop itself (see
  worker.js) and the driver times the request from outside as a cross-check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
NODE_DIR = os.path.join(BENCH, ".node")
VERSIONS = ("1.20261117.1", "latest")

sys.path.insert(0, BENCH)
import servers  # noqa: E402  (bench/servers.py: stopping and reading a server process)

# workerd can't be installed or started here; the message says why.
Unavailable = servers.Unavailable


def _binary() -> str | None:
    mods = os.path.join(NODE_DIR, "node_modules")
    # The platform package holds the real executable; prefer it to the
    # wrapper so that the process we signal is workerd itself.
    for plat in ("workerd-linux-64", "workerd-linux-arm64"):
        p = os.path.join(mods, "@cloudflare", plat, "bin", "workerd")
        if os.access(p, os.X_OK):
            return p
    p = os.path.join(mods, ".bin", "workerd")
    return p if os.access(p, os.X_OK) else None


def _env() -> dict:
    """The environment for workerd and npm: without a sanitizer preload (the
    suites run under ASan with libasan preloaded; workerd crashes with it)."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


# The same, as extra environment for a servers.ServerProcess.
NO_PRELOAD = {"LD_PRELOAD": None}


def _version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                             env=_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def install(log=sys.stderr) -> tuple[str, str]:
    """Return (binary, version), installing workerd from npm when needed."""
    binary = _binary()
    if binary and _version(binary):
        return binary, _version(binary)
    npm = shutil.which("npm")
    if not npm:
        raise Unavailable("npm not found (install nodejs and npm)")
    errors = []
    for v in VERSIONS:
        print(f"bench: installing workerd@{v} into bench/.node ...", file=log, flush=True)
        try:
            out = subprocess.run(
                [npm, "install", "--prefix", NODE_DIR, "--no-audit", "--no-fund",
                 "--loglevel=error", f"workerd@{v}"],
                capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=_env())
        except subprocess.TimeoutExpired:
            errors.append(f"workerd@{v}: npm install timed out")
            continue
        binary = _binary()
        if out.returncode == 0 and binary and _version(binary):
            return binary, _version(binary)
        errors.append(f"workerd@{v}: " + (out.stderr.strip().splitlines() or ["no binary"])[-1])
    raise Unavailable("; ".join(errors))


class Workerd(servers.ServerProcess):
    """workerd serving config.capnp.in and the *.js modules of `template`
    (this folder: the bench peer), in a folder of its own under
    bench/.node/run."""

    def __init__(self, binary: str, start_timeout: float = 30.0, request_timeout: float = 120.0,
                 template: str = HERE):
        self.binary = binary
        self.template = template
        self.request_timeout = request_timeout
        # Folders left in bench/.node/run by a runner that was killed
        # outright are removed first.
        run_dir = os.path.join(NODE_DIR, "run")
        os.makedirs(run_dir, exist_ok=True)
        for old in os.listdir(run_dir):
            pid = old.rsplit("-", 1)[-1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(run_dir, old), ignore_errors=True)
        super().__init__("workerd", self._command, self._ready, start_timeout=start_timeout,
                         stop_timeout=5, tmp_prefix="", tmp_dir=run_dir,
                         tmp_suffix=f"-{os.getpid()}")

    def _command(self, tmp: str, port: int) -> tuple:
        with open(os.path.join(self.template, "config.capnp.in")) as f:
            config = f.read().replace("@ADDRESS@", f"127.0.0.1:{port}")
        with open(os.path.join(tmp, "config.capnp"), "w") as f:
            f.write(config)
        for name in os.listdir(self.template):  # worker.js and the modules it imports
            if name.endswith(".js"):
                shutil.copy(os.path.join(self.template, name), tmp)
        os.makedirs(os.path.join(tmp, "store"))  # localDisk storage (removed by stop)
        return ([self.binary, "serve", "config.capnp", "--experimental",
                 f"--socket-fd=http={self.listen_fd}"], NO_PRELOAD)

    def _ready(self, port: int) -> bool:
        return self._get("/", timeout=2).startswith("dobj bench peer")

    def log_tail(self, lines: int = 5) -> str:
        return super().log_tail(lines)

    # -- requests --------------------------------------------------------
    def _get(self, path: str, timeout: float | None = None) -> str:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=timeout or self.request_timeout) as r:
            return r.read().decode()

    def golden(self) -> dict:
        return json.loads(self._get("/golden"))

    def run(self, op: str, n: int) -> float:
        """Seconds for n iterations of op, timed inside the worker."""
        t0 = time.perf_counter()
        r = json.loads(self._get(f"/bench?op={op}&n={n}"))
        outside = time.perf_counter() - t0
        inside = r["ms"] / 1000.0
        # The worker's clock only moves with I/O; if it did not (0 ms, or
        # more than the whole request), fall back to the outside time.
        if inside <= 0 or inside > outside * 1.05:
            return outside
        return inside

    def last(self, op: str) -> str:
        return json.loads(self._get(f"/bench?op={op}&n=1"))["last"]


def check_golden(wd: Workerd) -> list[str]:
    """Compare workerd's IDs and messages with the reference's golden vectors."""
    sys.path.insert(0, BENCH)
    import pure_ids

    got = wd.golden()
    fails = []
    for key, name, want in pure_ids.GOLDEN:
        have = got.get(key, {}).get(name)
        if have != want:
            fails.append(f"{key}/{name!r}: workerd says {have}, reference {want}")
    if got.get("parsed") != pure_ids.GOLDEN[1][2]:
        fails.append(f"idFromString(upper case) gave {got.get('parsed')}")
    errors = got.get("errors", {})
    if errors.get("short") != "TypeError: " + pure_ids.BAD_ID:
        fails.append(f"bad string message: {errors.get('short')}")
    if errors.get("foreign") != "TypeError: " + pure_ids.FOREIGN_ID:
        fails.append(f"foreign ID message: {errors.get('foreign')}")
    return fails


def main() -> int:
    binary, version = install()
    print(f"workerd {version} ({binary})")
    with Workerd(binary) as wd:
        print(f"listening on 127.0.0.1:{wd.port}, pid {wd.proc.pid}")
        fails = check_golden(wd)
        for f in fails:
            print("FAIL", f)
        print("golden vectors:", "ok" if not fails else f"{len(fails)} mismatches")
        for op, n in (("id_from_name", 200000), ("id_from_string", 200000),
                      ("new_unique_id", 200000), ("stub_fetch", 5000),
                      ("stub_fetch_nobody", 5000), ("rpc_add", 5000),
                      ("store_kv_put", 100000), ("store_kv_get", 100000),
                      ("store_put", 20000), ("store_get", 20000),
                      ("store_inc_rpc", 2000), ("store_inc_fetch", 2000)):
            t = wd.run(op, n)
            print(f"{op:18} {n / t:12,.0f} /s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
