"""Interop with workerd (issue 3, section 1): data the Python binding wrote is
read by a workerd Durable Object on the same localDisk folder (same unique
key, same values), and data workerd wrote is read by Python, for every type
of the mapping.  workerd comes from npm (`make workerd`, into bench/.node) and
is started and always stopped by bench/workerd/driver.py; without it the
test is skipped.  The JS cases are in tests/python/interop/worker.js."""
import contextlib
import datetime as dt
import gc
import json
import os
import sys
import time
import urllib.parse

import pytest

import dobj
from storage_util import AlarmBox, Box, run, same

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "workerd"))
try:
    import driver  # noqa: E402
except ImportError:  # pragma: no cover
    driver = None
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
import peer  # noqa: E402



def cases():
    """(name, what Python writes, what Python reads back from workerd's value)."""
    shared = {"v": 1}
    cycle = {"name": "c"}
    cycle["self"] = cycle
    self_list = [1]
    self_list.append(self_list)
    nan = float("nan")
    out = [
        ("int", 1), ("neg", -5), ("smi_max", 2**30 - 1), ("smi_min", -(2**30)),
        ("two30", 2**30), ("two31", 2**31), ("two40", 2**40), ("safe_max", 2**53),
        ("ms_timestamp", 1700000000123), ("two40_float", 2.0**40, 2**40),
        ("whole_float", 2.0, 2), ("double_array", [0.5, 1.0]), ("bigint", 2**53 + 1), ("bigint_neg", -(2**63)),
        ("bigint_huge", 2**100), ("float", 1.5), ("nan", nan), ("negzero", -0.0),
        ("inf", float("inf")), ("ninf", float("-inf")), ("true", True), ("false", False),
        ("null", None), ("ascii", "hello"), ("latin1", "héllo ÿ"), ("twobyte", "日本"),
        ("astral", "😀!"), ("lone_surrogate", "a\ud800b"), ("empty_str", ""),
        # a key with a lone surrogate: workerd stores it as its WTF-8 bytes,
        # as the binding does (61 ED A0 80 62 in _cf_KV for "a\ud800b")
        ("key_\udc00_lone", "k"),
        ("bytes", b"\x00\x01\xff"), ("empty_bytes", b""), ("bytearray", bytearray(b"\x07\x08"), b"\x07\x08"),
        ("date", dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.timezone.utc)),
        ("array", [1, "a", None]), ("tuple", (1, 2), [1, 2]),
        ("object", {"x": 1, "y": "z"}), ("empty_obj", {}), ("empty_array", []), ("index_keys", {"1": "a", "b": 2}),
        ("map", {"k": 1, 2: "two", True: False}), ("set", {1, "a"}),
        ("frozenset", frozenset({3}), {3}),
        ("nested", {"list": [{"a": 1}, {"b": [True, False]}], "m": {"inner": [1, 2], 0: None}}),
        ("shared", {"a": shared, "b": shared}), ("cycle", cycle), ("self_list", self_list),
    ]
    return [(c[0], c[1], c[2] if len(c) > 2 else c[1]) for c in out]


def _workerd():
    if driver is None:
        return None
    binary = driver._binary()
    return binary if binary and driver._version(binary) else None


class _no_preload:
    """workerd must not inherit a sanitizer preload (an ASan run of this suite)."""

    def __enter__(self):
        self.saved = os.environ.pop("LD_PRELOAD", None)

    def __exit__(self, *exc):
        if self.saved is not None:
            os.environ["LD_PRELOAD"] = self.saved


def _peer(tmp_path, store):
    """workerd's binary and a template folder for it (tests/interop/peer.py)
    running interop/worker.js on `store`; skips the test without workerd."""
    with _no_preload():
        binary = _workerd()
    if not binary:
        pytest.skip("workerd is not installed (make workerd installs it into bench/.node)")
    tmpl = tmp_path / "tmpl"
    tmpl.mkdir()
    peer.prepare(tmpl, store, os.path.join(HERE, "interop", "worker.js"))
    return binary, tmpl


@contextlib.contextmanager
def _serving(binary, tmpl):
    """workerd running from template folder `tmpl` (stopped on leaving); skips
    the test when it can't start."""
    try:
        with driver.Workerd(binary, template=str(tmpl)) as wd:
            yield wd
    except driver.Unavailable as e:
        pytest.skip(f"workerd could not start: {e}")


async def _python_writes_cases(store, binding="NS", unique_key="interop-key"):
    """Every case stored by Python into object "from-python" under `store`."""
    rt = dobj.Runtime(storage=str(store))
    ns = rt.bind(binding, Box, unique_key=unique_key)

    def write(self):
        for name, value, _ in cases():
            self.ctx.storage.put(name, value)

    await run(ns.get_by_name("from-python"), write)
    rt.close()
    del ns, rt
    gc.collect()


async def _python_reads_cases(store, binding="NS", unique_key="interop-key"):
    """What Python reads of object "from-workerd" under `store`, and the
    names of the cases that differ from what it should be."""
    rt = dobj.Runtime(storage=str(store))
    ns = rt.bind(binding, Box, unique_key=unique_key)
    names = [c[0] for c in cases()]
    back = await run(ns.get_by_name("from-workerd"), lambda self: self.ctx.storage.get(names))
    rt.close()
    return back, [name for name, _, want in cases() if name not in back or not same(back[name], want)]


async def test_values_cross_between_python_and_workerd(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    binary, tmpl = _peer(tmp_path, store)

    # 1. Python writes every case.
    await _python_writes_cases(store)

    # 2. workerd reads them, compares with the same cases in JS, writes its own.
    with _serving(binary, tmpl) as wd:
        got = json.loads(wd._get("/read"))
        wrote = wd._get("/write")
    assert got["n"] == len(cases()), got
    assert got["mismatches"] == [], "python -> workerd"
    assert wrote.startswith("workerd wrote")

    # 3. Python reads what workerd wrote.
    back, mismatches = await _python_reads_cases(store)
    assert mismatches == [], {m: back.get(m) for m in mismatches}


async def test_alarms_cross_between_python_and_workerd(tmp_path):
    """An alarm dobj set is fired by workerd on the same folder, and the
    reverse.  workerd keeps each alarm in the object's own database too
    (_cf_METADATA) and cancels one its object does not know of: dobj's
    alarms were silently dropped before dobj wrote that copy."""
    store = tmp_path / "store"
    store.mkdir()
    binary, tmpl = _peer(tmp_path, store)
    AlarmBox.log = []
    AlarmBox.on_alarm = None

    # 1. Python sets an alarm a few seconds ahead (whole ms: workerd's unit).
    rt = dobj.Runtime(storage=str(store))
    ns = rt.bind("NS", AlarmBox, unique_key="interop-key")
    when = float(int(rt.now()) + 4000)
    await run(ns.get_by_name("alarm-from-python"), lambda self: self.ctx.storage.set_alarm(when))
    rt.close()
    del ns, rt
    gc.collect()

    # 2. workerd reports it, fires it, and sets one for Python to fire.
    with _serving(binary, tmpl) as wd:
        seen = json.loads(wd._get("/alarm-get?name=alarm-from-python"))
        fired = json.loads(wd._get("/alarm-wait?name=alarm-from-python"))
        later = int(time.time() * 1000) + 2500  # after this workerd has stopped
        set_by_workerd = json.loads(wd._get(f"/alarm-set?name=alarm-from-workerd&at={later}"))
    assert seen["alarm"] == when, "workerd does not see the alarm Python set"
    assert fired["fired"] is not None, "workerd did not fire the alarm Python set"
    assert fired["fired"]["at"] >= when and fired["alarm"] is None
    assert set_by_workerd["alarm"] == later
    assert AlarmBox.log == []

    # 3. Python fires the alarm workerd set, at its time.
    rt = dobj.Runtime(storage=str(store))
    ns = rt.bind("NS", AlarmBox, unique_key="interop-key")
    got = await run(ns.get_by_name("alarm-from-workerd"), lambda self: self.ctx.storage.get_alarm())
    assert got == later
    await rt.drain(timeout=30)
    assert [i.scheduled_time for i in AlarmBox.log] == [later]
    assert await run(ns.get_by_name("alarm-from-workerd"),
                     lambda self: self.ctx.storage.get_alarm()) is None
    rt.close()


async def test_sql_rows_read_as_workerd_counts_it(tmp_path):
    """workerd gives the rowsRead/rowsWritten test_sql.py expects of dobj."""
    from test_sql import ROWS_READ_CASES, ROWS_READ_SETUP
    store = tmp_path / "store"
    store.mkdir()
    binary, tmpl = _peer(tmp_path, store)
    queries = ROWS_READ_SETUP + [q for q, _, _ in ROWS_READ_CASES]
    with _serving(binary, tmpl) as wd:
        got = json.loads(wd._get("/sql-counts?name=sql&q=" +
                                 urllib.parse.quote(json.dumps(queries))))
    assert [(q, r, w) for q, (r, w) in zip(queries, got)][len(ROWS_READ_SETUP):] == \
        ROWS_READ_CASES
