"""The public types as Python objects: weak references, module constants,
str inputs that cannot be UTF-8, and the extension's use of public C API only."""
import gc
import re
import shutil
import subprocess
import weakref

import pytest

import dobj
from conftest import Counter


def test_ids_namespaces_and_stubs_can_be_weakly_referenced(counter):
    ident = counter.id_from_name("weak")
    stub = counter.get(ident)
    refs = [weakref.ref(x) for x in (counter, ident, stub)]
    assert [r() for r in refs] == [counter, ident, stub]
    finalized = []
    weakref.finalize(stub, finalized.append, "stub")
    del ident, stub
    gc.collect()
    assert refs[1]() is None and refs[2]() is None
    assert finalized == ["stub"]
    assert refs[0]() is counter
    # WeakValueDictionary, the usual cache of stubs by name, works.
    cache = weakref.WeakValueDictionary()
    cache["a"] = s = counter.get_by_name("a")
    assert cache["a"] is s


def test_max_call_depth_is_the_cores_limit():
    assert dobj.MAX_CALL_DEPTH == 16
    assert "MAX_CALL_DEPTH" in dobj.__all__


async def test_calls_nest_exactly_max_call_depth_deep(rt):
    depths = []

    class Deep(dobj.DurableObject):
        async def fetch(self, request):
            depth = int(request.url.rsplit("/", 1)[1])
            depths.append(depth)
            try:
                return await self.env.DEEP.get_by_name(f"n{depth + 1}").fetch(f"https://d/{depth + 1}")
            except dobj.Error:
                return dobj.Response(str(depth))

    r = await rt.bind("DEEP", Deep).get_by_name("n1").fetch("https://d/1")
    assert int(r.text()) == dobj.MAX_CALL_DEPTH == max(depths)


@pytest.mark.parametrize("text", ["\ud800" * 64, "a" * 63 + "\udfff", "\ud800", "0" * 62 + "\ud83d"])
def test_id_from_string_with_a_lone_surrogate_is_an_invalid_id(counter, text):
    with pytest.raises(dobj.InvalidIdError, match="Invalid Durable Object ID"):
        counter.id_from_string(text)


# Symbols public C API macros expand to (Py_DECREF, Py_None, PyObject_GC_New,
# PY_SSIZE_T_CLEAN variants...): anything else starting with _Py is private.
PUBLIC_MACRO_SYMBOLS = re.compile(
    r"_Py_Dealloc|_Py_(None|True|False|NotImplemented|Ellipsis)Struct|_PyObject_GC_New(Var)?|"
    r"_PyWeakref_\w+Type|\w+_SizeT|_Py_RefTotal|_Py_NegativeRefcount|_Py_IncRef|_Py_DecRef|"
    r"_Py_IsImmortal|_PyObject_New|_Py_MergeZeroLocalRefcount|_Py_DecRefShared|_Py_Is|"
    r"_PyObject_MakeTpCall|_Py_CheckFunctionResult")  # 3.10's inline vectorcall


@pytest.mark.skipif(not shutil.which("nm"), reason="needs nm (binutils)")
def test_extension_uses_no_private_cpython_api():
    out = subprocess.run(["nm", "-D", "--undefined-only", dobj._dobj.__file__],
                         capture_output=True, text=True, check=True).stdout
    used = {line.split()[-1] for line in out.splitlines() if line.split()}
    private = sorted(s for s in used if s.startswith("_Py") and not PUBLIC_MACRO_SYMBOLS.fullmatch(s))
    assert private == []
    assert "_PyGen_SetStopIterationValue" not in used and "_PyType_Lookup" not in used


async def test_awaiting_a_call_returns_tuples_and_exceptions_as_values(rt):
    class Values(dobj.DurableObject):
        async def pair(self):
            return [1, 2]

        async def none(self):
            return None

    stub = rt.bind("VALUES", Values).get_by_name("v")
    assert await stub.pair() == [1, 2]
    assert await stub.none() is None
    call = stub.pair()
    it = call.__await__()
    with pytest.raises(StopIteration) as stop:
        while True:
            it.send(None)
    assert stop.value.value == [1, 2]


def test_stub_attributes_resolve_before_rpc(counter):
    stub = counter.get_by_name("attrs")
    assert stub.id == counter.id_from_name("attrs") and stub.name == "attrs"
    assert callable(stub.fetch) and callable(stub.anything)
    with pytest.raises(AttributeError):
        stub._private
    assert Counter  # the fixture's class: its RPC methods are looked up on call
