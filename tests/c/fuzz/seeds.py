"""Seed corpora for the libFuzzer targets (`make fuzz`).

    python3 tests/c/fuzz/seeds.py OUT

OUT/value: each V8 blob of tests/c/vectors/vectors.txt (workerd's bytes);
OUT/config: every file under tests/config (wrangler TOML/JSON/JSONC, .dev.vars);
OUT/wire: requests as fuzz_wire.c reads them (method, target, header lines);
OUT/id: an ID string and names.
"""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


WIRE = [
    b"GET\n/a?b=1\nhost:example.com\ncontent-length:5",
    b"post\nhttp://h:8/x\ntransfer-encoding:gzip, chunked\nx-a:b",
    b"PROPFIND\n/\nhost:[::1]:80\nhost:a",
    b"OPTIONS\n*",
    b"GET\nHTTPS://Example.COM\ncookie:a=1\ncookie:b=2",
]
IDS = [
    b"2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a",
    b"a room",
    "caf\u00e9".encode(),
    b"\xed\xa0\xbd\xed\xb8\x80",
]


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
    for kind, inputs in (("wire", WIRE), ("id", IDS)):
        os.makedirs(os.path.join(out, kind), exist_ok=True)
        for i, data in enumerate(inputs):
            with open(os.path.join(out, kind, str(i)), "wb") as f:
                f.write(data)
    src = os.path.join(ROOT, "tests", "config")
    for folder, _, files in os.walk(src):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), src).replace(os.sep, "_")
            shutil.copyfile(os.path.join(folder, name), os.path.join(config, rel))


if __name__ == "__main__":
    main(sys.argv[1])
