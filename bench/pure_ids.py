"""Durable Object IDs in pure Python (standard library only), as workerd makes them.

The baseline for `make bench`: what a Python program gets without dobj.

    key  = SHA-256(unique_key)                        # once per namespace
    base = HMAC-SHA256(key, name)[:16]                # id_from_name
         | 16 bytes from the OS CSPRNG                # new_unique_id
    mac  = HMAC-SHA256(key, base)[:16]
    id   = base || mac, shown as 64 lower-case hex digits

It uses ``hmac.digest`` (the one-shot, OpenSSL-backed form of the standard
``hmac`` module: the fastest way the standard library offers) and returns a
small ID object, as the dobj bindings do.  Run it to check the golden vectors:

    python3 bench/pure_ids.py
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys

BAD_ID = "Invalid Durable Object ID: must be 64 hex digits"
FOREIGN_ID = "Durable Object ID is not valid for this namespace."
JURISDICTION = "Jurisdiction restrictions are not implemented in workerd."


def _load_golden(path=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "..", "tests", "vectors", "ids.tsv")):
    """(unique key, name, id): the vectors workerd produces, from the file
    every test suite reads."""
    with open(path, encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in f
                if line.strip() and not line.startswith("#")]


GOLDEN = _load_golden()

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class InvalidIdError(ValueError):
    """A malformed ID string, or an ID of another namespace."""


class PureId:
    """32 bytes (base || mac) and, for named IDs, the name."""

    __slots__ = ("raw", "name")

    def __init__(self, raw: bytes, name: str | None = None) -> None:
        self.raw = raw
        self.name = name

    def to_string(self) -> str:
        return self.raw.hex()

    __str__ = to_string

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PureId) and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PureId({self.raw.hex()!r})"


class PureNamespace:
    """ID functions of one namespace (binding + unique key)."""

    def __init__(self, unique_key: str) -> None:
        self._key = hashlib.sha256(unique_key.encode()).digest()

    def _mac(self, base: bytes) -> bytes:
        return hmac.digest(self._key, base, "sha256")[:16]

    def id_from_name(self, name: str) -> PureId:
        key = self._key
        base = hmac.digest(key, name.encode(), "sha256")[:16]
        return PureId(base + hmac.digest(key, base, "sha256")[:16], name)

    def new_unique_id(self, jurisdiction: str | None = None) -> PureId:
        if jurisdiction is not None:
            raise ValueError(JURISDICTION)
        base = os.urandom(16)
        return PureId(base + hmac.digest(self._key, base, "sha256")[:16])

    def id_from_string(self, s: str) -> PureId:
        if not isinstance(s, str) or not _HEX64.fullmatch(s):
            raise InvalidIdError(BAD_ID)
        raw = bytes.fromhex(s)
        if not hmac.compare_digest(raw[16:], hmac.digest(self._key, raw[:16], "sha256")[:16]):
            raise InvalidIdError(FOREIGN_ID)
        return PureId(raw)


def check_golden() -> list[str]:
    """Return a list of failures (empty when every vector and message matches)."""
    failures = []
    for unique_key, name, want in GOLDEN:
        ns = PureNamespace(unique_key)
        got = ns.id_from_name(name).to_string()
        if got != want:
            failures.append(f"{unique_key}/{name!r}: got {got}, want {want}")
        if ns.id_from_string(want.upper()).to_string() != want:
            failures.append(f"{unique_key}/{name!r}: id_from_string round trip failed")
    ns = PureNamespace("test-unique-key")
    for bad, msg in [("abc", BAD_ID), ("g" * 64, BAD_ID), (GOLDEN[0][2], FOREIGN_ID)]:
        try:
            ns.id_from_string(bad)
            failures.append(f"id_from_string({bad!r}) did not fail")
        except InvalidIdError as e:
            if str(e) != msg:
                failures.append(f"id_from_string({bad!r}): {e}")
    u = ns.new_unique_id()
    if ns.id_from_string(str(u)) != u or u.name is not None:
        failures.append("new_unique_id does not round-trip")
    return failures


if __name__ == "__main__":
    fails = check_golden()
    for f in fails:
        print("FAIL", f)
    print(f"pure_ids: {len(GOLDEN) + 4 - len(fails)} passed, {len(fails)} failed")
    sys.exit(1 if fails else 0)
