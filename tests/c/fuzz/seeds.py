"""Seed corpora for the libFuzzer targets (`make fuzz`).

    python3 tests/c/fuzz/seeds.py OUT

OUT/value: each V8 blob of tests/c/vectors/vectors.txt (workerd's bytes);
OUT/config: every file under tests/config (wrangler TOML/JSON/JSONC, .dev.vars).
"""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(out: str) -> None:
    value, config = os.path.join(out, "value"), os.path.join(out, "config")
    os.makedirs(value, exist_ok=True)
    os.makedirs(config, exist_ok=True)
    with open(os.path.join(ROOT, "tests", "c", "vectors", "vectors.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, _, hexed = line.rstrip("\n").split("\t")
            with open(os.path.join(value, name), "wb") as blob:
                blob.write(bytes.fromhex(hexed))
    src = os.path.join(ROOT, "tests", "config")
    for folder, _, files in os.walk(src):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), src).replace(os.sep, "_")
            shutil.copyfile(os.path.join(folder, name), os.path.join(config, rel))


if __name__ == "__main__":
    main(sys.argv[1])
