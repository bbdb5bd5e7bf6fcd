"""The value mapping: Python <-> V8 serialization blobs (what storage keeps,
what workerd reads), and Python <-> dobj_val (the RPC path)."""
import datetime as dt
import gc
import math

import pytest

import dobj
from dobj import _dobj
from storage_util import Box, run, same

UTC = dt.timezone.utc

# Values that come back exactly as they went in (type included).
SAME = [
    None, True, False, 0, 1, -1, -5, 2**30 - 1, -(2**30), 2**30, -(2**30) - 1, 2**31, 2**40,
    2**53, 2**53 + 1, -(2**63), 2**63 - 1, 2**64, 2**100, -(2**200), 0.0, -0.0, 1.0, 1.5, -2.25,
    1e300, 5e-324, float("inf"), float("-inf"), math.pi, "", "hello", "héllo ÿ", "日本",
    "😀!", "a\0b", "\ud800", "x\udfffy", "\udc00\ud800", "mixed é 日 😀 \ud834", b"",
    b"\x00\x01\xff", bytes(range(256)), [], [1, "a", None], [[[]]], {}, {"x": 1, "y": "z"},
    {"0": "index", "b": 2, "1": 1, "4294967295": "not an index"}, {"nested": {"list": [{"a": 1}]}},
    {1: "one", "k": 1, True: False, 2.5: None}, {None: 1}, {b"key": "bytes key"},
    {(1, 2): "tuple key", frozenset({3}): "frozenset key"}, {1, "a", 2.5, None}, set(),
    dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
    dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),
    dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    [1, 2.5, "x", b"y", None, True, {"z": [1]}, {9}],
]


def stable_id(value):
    """A test ID that is the same in every process (pytest-xdist workers must
    collect the same tests): repr() shows a memoryview's address and a set in
    hash order, which changes with string hash randomization."""
    if isinstance(value, memoryview):
        return f"memoryview({bytes(value)!r})"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({sorted(map(stable_id, value))})"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}({[stable_id(v) for v in value]})"
    if isinstance(value, dict):
        return f"dict({[(stable_id(k), stable_id(v)) for k, v in value.items()]})"
    return repr(value)


@pytest.mark.parametrize("value", SAME, ids=stable_id)
def test_every_value_round_trips(value):
    assert same(dobj.deserialize(dobj.serialize(value)), value)


# Values that come back equal as another type.
CONVERTED = [
    ((1, 2, (3,)), [1, 2, [3]]),
    (bytearray(b"ab"), b"ab"),
    (memoryview(b"xyz"), b"xyz"),
    (frozenset({1, 2}), {1, 2}),
    (dt.datetime(2020, 1, 1, 12), dt.datetime(2020, 1, 1, 12, tzinfo=UTC)),
    (dt.datetime(2020, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     dt.datetime(2020, 1, 1, 10, tzinfo=UTC)),
]


@pytest.mark.parametrize("value,back", CONVERTED, ids=stable_id)
def test_converted_values_come_back_equal(value, back):
    got = dobj.deserialize(dobj.serialize(value))
    assert same(got, back)
    if not isinstance(value, (tuple, dt.datetime)):
        assert got == value


def test_nan_round_trips():
    assert math.isnan(dobj.deserialize(dobj.serialize(float("nan"))))


def test_shared_objects_stay_shared():
    inner = {"v": 1}
    lst = [1]
    value = {"a": inner, "b": inner, "l": [lst, lst], "t": (lst,)}
    got = dobj.deserialize(dobj.serialize(value))
    assert got == {"a": {"v": 1}, "b": {"v": 1}, "l": [[1], [1]], "t": [[1]]}
    assert got["a"] is got["b"]
    assert got["l"][0] is got["l"][1] is got["t"][0]


def test_cycles_come_back_as_cycles():
    lst = [1]
    lst.append(lst)
    got = dobj.deserialize(dobj.serialize(lst))
    assert got[0] == 1 and got[1] is got
    d = {"name": "c"}
    d["self"] = d
    d["list"] = [d, {"back": d}]
    got = dobj.deserialize(dobj.serialize(d))
    assert got["self"] is got and got["list"][0] is got and got["list"][1]["back"] is got
    assert same(got, d)


def test_a_list_holding_itself_is_written_as_v8_does():
    lst = []
    lst.append(lst)
    assert dobj.serialize(lst).hex() == "ff0f" + "4101" + "5e00" + "240001"


# The integer rule: ints are I in the Smi range, N (a JS number) within
# 2**53, a BigInt beyond; floats are always N.
def test_the_integer_rule_bytes():
    assert dobj.serialize(2**30 - 1).hex() == "ff0f49feffffff07"
    assert dobj.serialize(2**30).hex() == "ff0f4e000000000000d041"
    assert dobj.serialize(2**53).hex() == "ff0f4e0000000000004043"
    assert dobj.serialize(-(2**53)).hex() == "ff0f4e00000000000040c3"
    assert dobj.serialize(2**53 + 1).hex() == "ff0f5a100100000000002000"
    assert dobj.serialize(1.0).hex() == "ff0f4e000000000000f03f"
    assert same(dobj.deserialize(dobj.serialize(1700000000123)), 1700000000123)  # a ms timestamp


# The bytes workerd writes (docs/value-format.md, the reference, section 6).
V8_BYTES = [
    (1, "4902"), (-5, "4909"), (2**40, "4e0000000000007042"), (1.5, "4e000000000000f83f"),
    (True, "54"), (False, "46"), (None, "30"), ("hello", "220568656c6c6f"),
    ("héllo", "220568e96c6c6f"), ("日本", "6304e5652c67"), ("", "2200"), ({}, "6f7b00"),
    ({"x": 1, "y": "z"}, "6f22017849022201792201" + "7a7b02"),
    ([1, "a", None], "4103490222016130240003"),
    (b"\x01\x02\x03", "4203010203564200030" + "0"),
    (dt.datetime(1970, 1, 1, tzinfo=UTC), "440000000000000000"),
    ({1: "k"}, "3b490222016b3a02"), ({"k": 1, 2: 3}, "3b22016b490249044906" + "3a04"),
    ({1}, "2749022c01"), (12345678901234567890, "5a10d20a1feb8ca954ab"),
]


@pytest.mark.parametrize("value,hexbytes", V8_BYTES, ids=stable_id)
def test_bytes_are_v8s(value, hexbytes):
    assert dobj.serialize(value).hex() == "ff0f" + hexbytes
    got = dobj.deserialize(bytes.fromhex("ff0f" + hexbytes))
    assert got == value


def test_what_workerd_writes_reads_as_documented():
    # JS numbers, by the integer rule: I -> int; N -> int when whole, past the
    # Smi range and within 2**53 (V8's form of 2**40); any other N -> float.
    assert same(dobj.deserialize(bytes.fromhex("ff0f4e0000000000007042")), 2**40)
    assert same(dobj.deserialize(bytes.fromhex("ff0f4e000000000000f03f")), 1.0)
    assert same(dobj.deserialize(bytes.fromhex("ff0f4e0000000000000080")), -0.0)
    assert same(dobj.deserialize(bytes.fromhex("ff0f4e0000000000003043")), 2**52)
    assert same(dobj.deserialize(bytes.fromhex("ff0f4e0100000000004043")), 2.0**53 + 2)
    # [1.5, 1] from JS is a double array: both N, so 1 reads as 1.0.
    assert same(dobj.deserialize(bytes.fromhex("ff0f4102" "4e000000000000f83f" "4e000000000000f03f"
                                               "240002")), [1.5, 1.0])
    # undefined -> None; an ArrayBuffer -> bytes; a view of part of a buffer -> its bytes.
    assert dobj.deserialize(bytes.fromhex("ff0f5f")) is None
    assert dobj.deserialize(bytes.fromhex("ff0f42020908")) == b"\x09\x08"
    assert dobj.deserialize(bytes.fromhex("ff0f42040102030456420102" + "00")) == b"\x02\x03"
    # A sparse array (holes, undefined) -> a list with None in the holes.
    sparse = bytes.fromhex("ff0f" + "6103" + "4900" + "4902" + "4904" + "4906" + "400203")
    assert dobj.deserialize(sparse) == [1, None, 3]


CORRUPT = [b"", b"\xff", b"\xff\x0f", b"\xff\x0f\x49", b"\xff\x0f\x22\x05ab", b"\xff\x0f\x30\x30",
           b"\xff\x0f\x6f\x22\x01x", b"\xff\x0f\x5e\x00", b"\xff\x0f\x41\xff\xff\xff\xff\x0f",
           b"\xff\x0f\x52", b"\xff\x10\x30", b"\x00\x0f\x30", b"\xff\x0f\x6f\x49\x02\x30\x7b\x02",
           b"\xff\x0f" + b"\x6f" * 300, b"\xff\x0f\x3b\x6f\x7b\x00\x30\x3a\x02"]


@pytest.mark.parametrize("blob", CORRUPT, ids=repr)
def test_corrupt_blobs_raise_clear_errors(blob):
    with pytest.raises(dobj.Error, match="^cannot read the stored value: "):
        dobj.deserialize(blob)


# Lengths a blob cannot back (issue 7): a sparse array of 2**32-1 slots in
# 15 bytes, an index 2**32-2 in 14, and 300 sparse arrays of 2**20 holes in
# 2.7 KB (2.4 GB as lists).  Each fails at once, allocating next to nothing.
HUGE = [
    ("ff0f61ffffffff0f4000ffffffff0f", "value too large to read: a sparse array of length 4294967295"),
    ("ff0f610055feffffff0f30400100", "index 4294967294 of a sparse array of length 0"),
    ("ff0f41ac02" + "618080404000808040" * 300 + "2400ac02",
     "value too large to read: a sparse array of length 1048576 at byte 14"),
]


@pytest.mark.parametrize("hexblob,message", HUGE, ids=lambda x: x[:24])
def test_lengths_the_blob_cannot_back_fail_fast(hexblob, message):
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(dobj.Error, match="^cannot read the stored value: ") as info:
            dobj.deserialize(bytes.fromhex(hexblob))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message in str(info.value)
    assert peak < 16 << 20, peak  # at most one list of 2**20 slots (8 MB)


def test_one_big_array_as_many_set_items_fails_fast():
    # [a(2**20), Set{^1 x 2000}]: 4 KB naming a 2**20-slot list as 2000 Set
    # items; each would be hashed as a tuple of 2**20 (16 s of CPU before).
    import time
    blob = bytes.fromhex("ff0f4102" "618080404000808040" "27" + "5e01" * 2000 + "2cd00f" "240002")
    t = time.perf_counter()
    with pytest.raises(dobj.Error, match="arrays used as Map keys or Set items add up to more than"):
        dobj.deserialize(blob)
    assert time.perf_counter() - t < 2
    # Many small array keys are fine (each is converted and hashed once).
    keys = {(i, i + 1): i for i in range(5000)}
    assert dobj.deserialize(dobj.serialize(keys)) == keys


def test_holes_within_the_allowance_read_as_none():
    # a[1e6] = "x": one sparse array of 1000001 slots in a dozen bytes.
    got = dobj.deserialize(bytes.fromhex("ff0f61c1843d55c0843d2201784001c1843d"))
    assert len(got) == 1000001 and got[-1] == "x" and got[0] is None


async def test_storage_get_of_a_huge_claim_is_a_clear_error(tmp_path):
    import sqlite3
    rt = dobj.Runtime(storage=str(tmp_path))
    ns = rt.bind("BOX", Box, unique_key="huge")
    stub = ns.get_by_name("h")
    await run(stub, lambda self: self.ctx.storage.put("ok", 1))
    db = sqlite3.connect(tmp_path / "huge" / f"{ns.id_from_name('h')}.sqlite")
    with db:
        for i, (hexblob, _) in enumerate(HUGE):
            db.execute("INSERT OR REPLACE INTO _cf_KV VALUES (?, ?)", (f"big{i}", bytes.fromhex(hexblob)))
    db.close()
    for i, (_, message) in enumerate(HUGE):
        with pytest.raises(dobj.Error, match="cannot read the stored value") as info:
            await run(stub, lambda self, i=i: self.ctx.storage.get(f"big{i}"))
        assert message in str(info.value)
    assert await run(stub, lambda self: self.ctx.storage.get("ok")) == 1
    rt.close()


def test_random_corruptions_never_crash():
    import random
    rnd = random.Random(7)
    base = [dobj.serialize(v) for v in SAME if not isinstance(v, float)]
    for _ in range(3000):
        b = bytearray(rnd.choice(base))
        for _ in range(rnd.randint(1, 3)):
            if b and rnd.random() < 0.7:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            elif b:
                del b[rnd.randrange(len(b)):]
        try:
            dobj.deserialize(bytes(b))
        except dobj.Error:
            pass


@pytest.mark.parametrize("value", [object(), dt.date(2020, 1, 1), 1j, type, lambda: 1,
                                   [1, object()], {"k": dt.time()}, range(3)],
                         ids=["object", "date", "complex", "type", "lambda", "list-with-object",
                              "dict-with-time", "range"])
def test_unsupported_types_raise_type_error_naming_the_type(value):
    with pytest.raises(TypeError, match="cannot store a value of type"):
        dobj.serialize(value)


def test_too_deep_is_a_value_error():
    v = []
    for _ in range(300):
        v = [v]
    with pytest.raises(ValueError, match="deeper than 256"):
        dobj.serialize(v)


def test_map_keys_that_python_cannot_hash_are_a_clear_error():
    # new Map([[{}, 1]]) written by JS
    with pytest.raises(dobj.Error, match="cannot be hashed"):
        dobj.deserialize(bytes.fromhex("ff0f3b6f7b0049023a02"))


def test_dates_python_cannot_hold_are_a_clear_error():
    # The number is in the message (it was a literal "%.0f").
    with pytest.raises(dobj.Error, match="the Date 8640000000000000 ms is outside the years"):
        dobj.deserialize(bytes.fromhex("ff0f44") + (8.64e15).hex().encode() * 0 +
                         __import__("struct").pack("<d", 8.64e15))
    with pytest.raises(dobj.Error, match="invalid Date"):
        dobj.deserialize(bytes.fromhex("ff0f44") + __import__("struct").pack("<d", float("nan")))


@pytest.mark.parametrize("value", SAME, ids=stable_id)
def test_dobj_val_path_round_trips(value):
    # The same mapping as storage, floats included (1.0 stays a float).
    assert same(_dobj._val_roundtrip(value), value)


def test_dobj_val_path_keeps_sharing_and_refuses_cycles():
    inner = [1]
    got = _dobj._val_roundtrip({"a": inner, "b": inner})
    assert got["a"] is got["b"]
    lst = []
    lst.append(lst)
    with pytest.raises(ValueError, match="contains itself"):
        _dobj._val_roundtrip(lst)
    # dobj_val numbers keep int vs float, by the same rule as storage.
    assert same(_dobj._val_roundtrip(2.0), 2.0)
    assert same(_dobj._val_roundtrip(2.0**40), 2**40)  # V8's form of the integer


async def test_values_round_trip_through_storage(rt):
    box = rt.bind("BOX", Box).get_by_name("values")
    shared = {"s": 1}
    cyc = [shared]
    cyc.append(cyc)
    values = {f"k{i}": v for i, v in enumerate(SAME)}
    values["nan"] = [float("nan")]
    values["cyc"] = cyc

    def write(self):
        for k, v in values.items():
            self.ctx.storage.put(k, v)

    await run(box, write)
    got = await run(box, lambda self: self.ctx.storage.get(list(values)[:128]))
    for k, v in values.items():
        if k == "nan":
            assert math.isnan(got[k][0])
        elif k == "cyc":
            assert got[k][1] is got[k] and got[k][0] == shared
        else:
            assert same(got[k], v), k


def test_no_reference_leaks_in_the_codec():
    value = {"a": [1, 2, {"b": b"x"}], "s": {1, 2}, "d": dt.datetime(2020, 1, 1, tzinfo=UTC)}
    blob = dobj.serialize(value)
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(2000):
        dobj.serialize(value)
        dobj.deserialize(blob)
        _dobj._val_roundtrip(value)
    gc.collect()
    assert len(gc.get_objects()) - before < 50
