"""Storage calls whose arguments run Python code while they are used: a str
subclass key with its own __hash__, a datetime whose tzinfo mutates the dict
being stored or closes the runtime.  None of them may crash; each gives a
defined result or a dobj.Error."""
import datetime

import pytest

import dobj
from storage_util import Box, run


@pytest.fixture
def box(rt):
    return rt.bind("BOX", Box).get_by_name("hostile")


class MeddlingKey(str):
    """A key whose __hash__ and __eq__ run `meddle` (empty a list, close the runtime)."""

    meddle = None
    calls = 0

    def __hash__(self):
        type(self).calls += 1
        if type(self).meddle:
            type(self).meddle()
        return str.__hash__(self)

    def __eq__(self, other):
        if type(self).meddle:
            type(self).meddle()
        return str.__eq__(self, other)


class MeddlingZone(datetime.tzinfo):
    """A time zone whose utcoffset runs `meddle` once."""

    def __init__(self, meddle):
        self.meddle = meddle

    def utcoffset(self, dt):
        meddle, self.meddle = self.meddle, None
        if meddle:
            meddle()
        return datetime.timedelta(0)


async def test_get_many_with_a_key_whose_hash_empties_the_list(box):
    def job(self):
        self.ctx.storage.put({"a": 1, "b": 2, "c": 3})
        keys = [MeddlingKey("a"), "b", MeddlingKey("c")]
        MeddlingKey.meddle = keys.clear
        try:
            return self.ctx.storage.get(keys)
        finally:
            MeddlingKey.meddle = None

    got = await run(box, job)
    assert got == {"a": 1, "b": 2, "c": 3}
    assert all(type(k) is str for k in got)


async def test_get_many_with_a_key_whose_hash_closes_the_runtime(rt, box):
    def job(self):
        self.ctx.storage.put({"a": 1, "b": 2})
        MeddlingKey.meddle = rt.close
        try:
            return self.ctx.storage.get([MeddlingKey("a"), MeddlingKey("b")])
        finally:
            MeddlingKey.meddle = None

    # The result's keys are plain str: the subclass's __hash__ never runs.
    assert await run(box, job) == {"a": 1, "b": 2}


async def test_put_many_whose_value_mutates_the_dict(box):
    entries = {}

    def meddle():
        entries.clear()
        entries.update({f"new{i}": i for i in range(50)})

    def job(self):
        entries.update({"a": 1, "when": datetime.datetime(2024, 1, 1, tzinfo=MeddlingZone(meddle)),
                        "z": 26})
        self.ctx.storage.put(entries)
        return self.ctx.storage.list()

    stored = await run(box, job)
    # What was written is the dict as it was when put() was called.
    assert set(stored) == {"a", "when", "z"}
    assert stored["z"] == 26


@pytest.mark.parametrize("many", [False, True])
async def test_put_whose_value_closes_the_runtime_raises(rt, box, many):
    seen = []

    def job(self):
        when = datetime.datetime(2024, 1, 1, tzinfo=MeddlingZone(rt.close))
        try:
            if many:
                self.ctx.storage.put({"a": 1, "when": when})
            else:
                self.ctx.storage.put("when", when)
        except dobj.Error as e:
            seen.append(str(e))
        else:
            seen.append("stored")

    # The runtime closed under the handler: its call fails, and the storage
    # call inside it raised instead of writing into a closed database.
    with pytest.raises(dobj.Error, match="the runtime is closed"):
        await run(box, job)
    assert len(seen) == 1 and seen[0] != "stored", seen


async def test_delete_many_with_str_subclass_keys(box):
    def job(self):
        self.ctx.storage.put({"a": 1, "b": 2})
        keys = [MeddlingKey("a"), MeddlingKey("b")]
        MeddlingKey.meddle = keys.clear
        try:
            return self.ctx.storage.delete(keys), self.ctx.storage.list()
        finally:
            MeddlingKey.meddle = None

    assert await run(box, job) == (2, {})


@pytest.mark.parametrize("new_keys", [{f"n{i}": i for i in range(20)}, {1: 2, 3: 4}])
def test_a_nested_dict_changed_while_it_is_stored_is_stored_as_it_was(new_keys):
    inner = {}

    def meddle():
        inner.clear()
        inner.update(new_keys)

    when = datetime.datetime(2024, 1, 1, tzinfo=MeddlingZone(meddle))
    inner.update({"a": 1, "when": when, "z": 2})
    back = dobj.deserialize(dobj.serialize({"outer": inner}))
    assert back == {"outer": {"a": 1, "when": when, "z": 2}}
