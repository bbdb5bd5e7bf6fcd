"""Lua <-> workerd storage interop (Python standard library only).

    LUA_CPATH="build/?.so;;" python3 tests/lua/interop/run.py

1. side.lua writes every case of cases.lua with dobj into a fresh folder.
2. workerd (bench/.node, started and always stopped by bench/workerd/driver.py)
   serves that folder as localDisk storage: it reads the Lua values and
   compares them with the same cases in JS, then writes the JS values.
3. After workerd has stopped, side.lua reads what workerd wrote and compares.

Exit status: 0 ok, 1 mismatches, 77 workerd is not installed (skip).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "bench", "workerd"))
import driver  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
import peer  # noqa: E402



def lua(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["lua5.4", os.path.join(HERE, "side.lua"), *args],
                          capture_output=True, text=True, timeout=120)


def main() -> int:
    binary = driver._binary()
    if not binary or not driver._version(binary):
        print("workerd is not installed (make bench installs it into bench/.node): skipped")
        return 77
    work = tempfile.mkdtemp(prefix="dobj-lua-interop-")
    try:
        store = os.path.join(work, "store")
        os.makedirs(store)
        tmpl = os.path.join(work, "tmpl")
        os.makedirs(tmpl)
        peer.prepare(tmpl, store, os.path.join(HERE, "worker.js"))
        w = lua("write", store)
        print(w.stdout.strip(), w.stderr.strip())
        if w.returncode != 0:
            return 1
        driver.HERE = tmpl  # the driver takes config.capnp.in and worker.js from here
        with driver.Workerd(binary) as wd:
            got = json.loads(wd._get("/read"))
            print(wd._get("/write"))
        for m in got["mismatches"]:
            print("MISMATCH (lua -> workerd)", m)
        print(f"workerd read {got['n']} values written by Lua, {len(got['mismatches'])} mismatches")
        r = lua("read", store)
        print(r.stdout.strip(), r.stderr.strip())
        return 0 if not got["mismatches"] and r.returncode == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
