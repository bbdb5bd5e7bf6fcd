"""Lua <-> workerd storage interop (Python standard library only).

    LUA_CPATH="build/?.so;;" python3 tests/lua/interop/run.py

1. side.lua writes every case of cases.lua with dobj into a fresh folder.
2. workerd (bench/.node, started and always stopped by bench/workerd/driver.py)
   serves that folder as localDisk storage: it reads the Lua values and
   compares them with the same cases in JS, then writes the JS values.
   Alarms: workerd reports and fires the alarm Lua set (it keeps a copy in
   the object's database and drops alarms its object does not know of), and
   sets one that Lua fires after workerd has stopped.
3. After workerd has stopped, side.lua reads what workerd wrote and compares,
   and fires workerd's alarm.

Exit status: 0 ok, 1 mismatches, 77 workerd is not installed (skip).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

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
        when = int(w.stdout.split("lua set an alarm at ")[1].split()[0])
        with driver.Workerd(binary, template=tmpl) as wd:
            got = json.loads(wd._get("/read"))
            print(wd._get("/write"))
            seen = json.loads(wd._get("/alarm-get?name=alarm-from-lua"))["alarm"]
            fired = json.loads(wd._get("/alarm-wait?name=alarm-from-lua"))
            later = int(time.time() * 1000) + 2500  # workerd has stopped by then
            wd._get(f"/alarm-set?name=alarm-from-workerd&at={later}")
        for m in got["mismatches"]:
            print("MISMATCH (lua -> workerd)", m)
        print(f"workerd read {got['n']} values written by Lua, {len(got['mismatches'])} mismatches")
        alarm_ok = seen == when and fired["fired"] is not None and fired["alarm"] is None
        print(f"workerd saw the alarm Lua set at {when} as {seen}; "
              f"{'fired it' if fired['fired'] else 'did not fire it'}")
        r = lua("read", store, str(later))
        print(r.stdout.strip(), r.stderr.strip())
        return 0 if not got["mismatches"] and alarm_ok and r.returncode == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
