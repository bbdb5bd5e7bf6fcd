#!/usr/bin/env python3
"""Keep the rockspec's list of C files equal to the folders the other builds glob.

CMake (CMakeLists.txt, bindings/lua/CMakeLists.txt) and setup.py compile every
C file of their folders, so adding or renaming a file needs no edit there.
LuaRocks has no globs: dobj-scm-1.rockspec names each file.  This script
writes that list from the same folders (--write, `make rockspec`) or fails
when it is stale (--check, `make check-sources`).
"""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCKSPEC = "dobj-scm-1.rockspec"
# The Lua module: the core and the binding, the folders CMake globs.
LUA_MODULE_GLOBS = ["core/src/*.c", "bindings/lua/src/*.c"]
SOURCES_BLOCK = re.compile(r"(\n(\s*)sources = \{\n)(.*?)(\n?\s*\},)", re.S)


def wanted():
    files = []
    for pattern in LUA_MODULE_GLOBS:
        files += sorted(glob.glob(pattern, root_dir=ROOT))
    return files


def listed(text):
    m = SOURCES_BLOCK.search(text)
    if not m:
        raise SystemExit(f"{ROCKSPEC}: no `sources = {{ ... }},` block")
    return m, re.findall(r'"([^"]+)"', m.group(3))


def main(argv):
    mode = argv[1] if len(argv) > 1 else "--check"
    path = os.path.join(ROOT, ROCKSPEC)
    with open(path) as f:
        text = f.read()
    m, have = listed(text)
    want = wanted()
    if mode == "--write":
        indent = m.group(2) + "   "
        body = "".join(f'{indent}"{name}",\n' for name in want)
        text = text[:m.start(3)] + body + text[m.end(3):].lstrip("\n")
        with open(path, "w") as f:
            f.write(text)
        print(f"{ROCKSPEC}: {len(want)} sources")
        return 0
    if have == want:
        print(f"{ROCKSPEC}: the {len(want)} sources match {' '.join(LUA_MODULE_GLOBS)}")
        return 0
    for name in sorted(set(want) - set(have)):
        print(f"{ROCKSPEC}: missing {name}")
    for name in sorted(set(have) - set(want)):
        print(f"{ROCKSPEC}: lists {name}, which is not in {' '.join(LUA_MODULE_GLOBS)}")
    if set(have) == set(want):
        print(f"{ROCKSPEC}: same files, another order")
    print("run `make rockspec` to rewrite the list")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
