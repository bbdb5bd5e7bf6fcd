"""IDs: workerd's golden vectors, parsing, errors, modes."""
import pytest

import dobj
from conftest import GOLDEN, golden_id

FOO = golden_id("test-unique-key", "foo")
OTHER_NAMESPACE = golden_id("my-unique-key", "foo")


class Plain(dobj.DurableObject):
    def fetch(self, request):
        return dobj.Response("ok")


@pytest.mark.parametrize("key,name,hex_id", GOLDEN)
def test_golden_vectors(key, name, hex_id):
    rt = dobj.Runtime()
    ns = rt.bind("NS", Plain, unique_key=key)
    id_ = ns.id_from_name(name)
    assert str(id_) == hex_id
    assert id_.to_string() == hex_id
    assert id_.name == name
    parsed = ns.id_from_string(hex_id)
    assert parsed == id_ and parsed.equals(id_) and hash(parsed) == hash(id_)
    assert parsed.name is None  # parsed IDs carry no name


# Measured against workerd 1.20261117 (idFromName under "test-unique-key"):
# a lone surrogate is hashed as its WTF-8 bytes, not as U+FFFD.
SURROGATE_VECTORS = [
    ("\ud800", "1a55a99ad39e6a43b7f3e4d4fdd717bce93b54f97e2a86249392f061c68057b0"),
    ("a\ud800b", "3e93db6380a1d6d35636f393dd083c63737b9fc09ebfe4519d0c6e280b625bba"),
    ("\ufffd", "88a3107dc5b2105060f5dc0d6d05ed2f709cd93202899667ad2c8acddccd5101"),
]


@pytest.mark.parametrize("name,hex_id", SURROGATE_VECTORS)
def test_lone_surrogates_in_names_hash_as_workerd_does(name, hex_id):
    # They were refused with UnicodeEncodeError, although workerd takes them.
    rt = dobj.Runtime()
    ns = rt.bind("NS", Plain, unique_key="test-unique-key")
    id_ = ns.id_from_name(name)
    assert str(id_) == hex_id and id_.name == name
    stub = ns.get_by_name(name)
    assert str(stub.id) == hex_id and stub.id.name == name
    assert stub.name == name


async def test_an_object_named_with_a_lone_surrogate_sees_its_name(rt):
    class Who(dobj.DurableObject):
        def who(self):
            return self.ctx.id.name

    ns = rt.bind("WHO", Who)
    assert await ns.get_by_name("a\ud800b").who() == "a\ud800b"


def test_a_pair_of_surrogates_names_the_character_they_make():
    # "\ud83d\ude00" and "😀" are one JavaScript string, so one object.
    rt = dobj.Runtime()
    ns = rt.bind("NS", Plain)
    assert ns.id_from_name("x\ud83d\ude00y") == ns.id_from_name("x😀y")
    assert ns.id_from_name("\ude00\ud83d") != ns.id_from_name("😀")


def test_unique_key_defaults_to_the_binding_name():
    rt = dobj.Runtime()
    a = rt.bind("test-unique-key", Plain)
    assert str(a.id_from_name("foo")) == FOO
    assert a.unique_key == "test-unique-key" and a.binding == "test-unique-key"


def test_nul_in_binding_names_and_unique_keys_is_refused():
    # "q\0one" and "q\0two" were cut at the NUL: one ID key, one folder.
    rt = dobj.Runtime()
    with pytest.raises(dobj.Error, match="binding name must not contain a NUL byte"):
        rt.bind("q\0one", Plain)
    with pytest.raises(dobj.Error, match="unique key must not contain a NUL byte"):
        rt.bind("q", Plain, unique_key="k\0two")
    assert "q\0one" not in rt.namespaces
    rt.bind("q", Plain)
    rt.close()


def test_upper_case_in_lower_case_out(counter):
    hex_id = FOO
    assert str(counter.id_from_string(hex_id.upper())) == hex_id


@pytest.mark.parametrize("bad", [
    "", "abc", FOO[:63], FOO + "0", FOO[:-1] + "g",
    FOO[:10] + "\0" + FOO[11:], " " + FOO[1:], "é" * 32,
    FOO[:62] + "é",
])
def test_malformed_strings(counter, bad):
    with pytest.raises(dobj.InvalidIdError, match="^Invalid Durable Object ID: must be 64 hex digits$"):
        counter.id_from_string(bad)


def test_invalid_id_error_is_a_value_error(counter):
    with pytest.raises(ValueError):
        counter.id_from_string("nope")
    assert issubclass(dobj.InvalidIdError, dobj.Error)


@pytest.mark.parametrize("bad", ["a" * 64, OTHER_NAMESPACE, FOO[:-1] + "f"])
def test_foreign_and_forged_ids(counter, bad):
    with pytest.raises(dobj.InvalidIdError, match=r"^Durable Object ID is not valid for this namespace\.$"):
        counter.id_from_string(bad)


def test_get_refuses_an_id_of_another_namespace(rt, counter):
    other = rt.bind("OTHER", Plain, unique_key="my-unique-key")
    with pytest.raises(dobj.InvalidIdError, match="not valid for this namespace"):
        counter.get(other.id_from_name("foo"))
    # The same unique key is the same namespace as far as IDs go.
    twin = rt.bind("TWIN", Plain, unique_key="test-unique-key")
    assert counter.get(twin.id_from_name("foo")).id == counter.id_from_name("foo")


@pytest.mark.parametrize("value", [None, 42, b"foo", ["x"], 1.5])
def test_wrong_types(counter, value):
    with pytest.raises(TypeError):
        counter.id_from_name(value)
    with pytest.raises(TypeError):
        counter.id_from_string(value)
    with pytest.raises(TypeError):
        counter.get(value)


def test_names_with_nul_empty_and_huge(counter):
    a, b = counter.id_from_name("a\0b"), counter.id_from_name("a\0c")
    assert a != b and a.name == "a\0b"
    assert counter.id_from_name("") != counter.id_from_name("\0")
    huge = "x" * (4 << 20)
    assert counter.id_from_name(huge) == counter.id_from_name(huge)
    assert counter.id_from_name("日本") != counter.id_from_name("日")


def test_unique_ids(counter):
    ids = {str(counter.new_unique_id()) for _ in range(5000)}
    assert len(ids) == 5000
    one = counter.new_unique_id()
    assert one.name is None
    assert counter.id_from_string(str(one)) == one


def test_jurisdictions(counter):
    msg = "^Jurisdiction restrictions are not implemented in workerd\\.$"
    with pytest.raises(dobj.Error, match=msg):
        counter.new_unique_id("eu")
    with pytest.raises(dobj.Error, match=msg):
        counter.new_unique_id(jurisdiction="eu")
    with pytest.raises(dobj.Error, match=msg):
        counter.jurisdiction("eu")
    assert counter.new_unique_id(jurisdiction=None) is not None
    assert counter.jurisdiction(None) is counter


def test_seeded_unique_ids_are_reproducible():
    def ids(seed, n=1000):
        rt = dobj.Runtime(id_seed=seed)
        ns = rt.bind("NS", Plain)
        return [str(ns.new_unique_id()) for _ in range(n)]

    first = ids(7)
    assert first == ids(7)
    assert len(set(first)) == 1000  # far past workerd's 50
    assert set(first).isdisjoint(ids(8))


def test_equality_and_hash_ignore_names(counter):
    named = counter.id_from_name("foo")
    parsed = counter.id_from_string(str(named))
    assert named == parsed and {named: 1}[parsed] == 1
    assert named != str(named)
    with pytest.raises(TypeError):
        named.equals("x")


def test_ids_cannot_be_made_directly():
    with pytest.raises(TypeError):
        dobj.DurableObjectId()
