"""Every API that takes a path takes what CPython's own file functions take:
a str or bytes, or an os.PathLike whose __fspath__ returns either (os.fspath).
load_config and from_config refused bytes (and an os.PathLike giving bytes)
with "path must be a str or None".  A NUL is refused in either, an
__fspath__ that raises raises, one that returns something else is a
TypeError, as for open()."""
import os
import pathlib

import pytest

import dobj
from project_util import write_project


@pytest.fixture(autouse=True)
def _no_cloudflare_env(monkeypatch):
    monkeypatch.delenv("CLOUDFLARE_ENV", raising=False)


class FsPath:
    """An os.PathLike that is not a pathlib.Path: __fspath__ gives `path`."""

    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


class Unreadable:
    """An os.PathLike whose __fspath__ raises."""

    def __fspath__(self):
        raise LookupError("no path here")


FORMS = {
    "str": str,
    "bytes": os.fsencode,
    "pathlib": pathlib.Path,
    "pathlike-str": lambda p: FsPath(str(p)),
    "pathlike-bytes": lambda p: FsPath(os.fsencode(p)),
}


@pytest.fixture(params=list(FORMS))
def as_path(request):
    return FORMS[request.param]


class Kv(dobj.DurableObject):
    def put(self, key, value):
        self.ctx.storage.put(key, value)

    def get(self, key):
        return self.ctx.storage.get(key)


def test_load_config_takes_each_form_of_path(tmp_path, as_path):
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    c = dobj.load_config(as_path(tmp_path), persist_to=as_path(tmp_path / "p"))
    assert c.config_path == str(tmp_path / "wrangler.toml")  # str whatever came in
    assert c.state_dir == str(tmp_path / "p" / "v3" / "do")
    assert dobj.load_config(as_path(tmp_path / "wrangler.toml")).config_path == c.config_path


def test_a_path_that_is_not_utf8_keeps_its_bytes(tmp_path):
    folder = os.fsencode(tmp_path) + b"/\xff"
    os.mkdir(folder)
    with open(folder + b"/wrangler.toml", "w") as f:
        f.write('name = "w"\n')
    for given in (folder, FsPath(folder)):
        c = dobj.load_config(given, persist_to=given)
        assert os.fsencode(c.config_path) == folder + b"/wrangler.toml"
        assert os.fsencode(c.state_dir) == folder + b"/v3/do"


async def test_runtime_storage_takes_each_form_of_path(tmp_path, as_path):
    rt = dobj.Runtime(storage=as_path(tmp_path / "s"))
    try:
        stub = rt.bind("KV", Kv).get_by_name("k")
        await stub.put("a", 1)
    finally:
        rt.close()
    rt = dobj.Runtime(storage=str(tmp_path / "s"))  # the same folder, whatever the form
    try:
        assert await rt.bind("KV", Kv).get_by_name("k").get("a") == 1
    finally:
        rt.close()


async def test_from_config_takes_each_form_of_path(tmp_path, as_path):
    write_project(tmp_path / "proj", """\
        import dobj

        class Counter(dobj.DurableObject):
            def bump(self):
                n = (self.ctx.storage.get("n") or 0) + 1
                self.ctx.storage.put("n", n)
                return n
        """, name="t")
    rt = dobj.Runtime.from_config(as_path(tmp_path / "proj"), persist_to=as_path(tmp_path / "st"))
    try:
        assert await rt.env.COUNTER.get_by_name("c").bump() == 1
        assert rt.config.state_dir == str(tmp_path / "st" / "v3" / "do")
    finally:
        rt.close()
    assert (tmp_path / "st" / "v3" / "do").is_dir()


def test_a_pathlike_that_raises_raises_its_error(tmp_path):
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    with pytest.raises(LookupError, match="no path here"):
        dobj.load_config(Unreadable())
    with pytest.raises(LookupError, match="no path here"):
        dobj.load_config(tmp_path, persist_to=Unreadable())
    with pytest.raises(LookupError, match="no path here"):
        dobj.Runtime(storage=Unreadable())


@pytest.mark.parametrize("bad", [3, None, 1.5, bytearray(b"p")], ids=repr)
def test_a_pathlike_giving_neither_str_nor_bytes_is_a_type_error(tmp_path, bad):
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    with pytest.raises(TypeError, match="__fspath__"):
        dobj.load_config(FsPath(bad))
    with pytest.raises(TypeError, match="__fspath__"):
        dobj.load_config(tmp_path, persist_to=FsPath(bad))
    with pytest.raises(TypeError, match="__fspath__"):
        dobj.Runtime(storage=FsPath(bad))


@pytest.mark.parametrize("bad", [123, 1.5, bytearray(b"p"), ["p"]], ids=repr)
def test_a_path_of_another_type_is_a_type_error(tmp_path, bad):
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    with pytest.raises(TypeError):
        dobj.load_config(bad)
    with pytest.raises(TypeError):
        dobj.load_config(tmp_path, persist_to=bad)
    with pytest.raises(TypeError):
        dobj.Runtime(storage=bad)


@pytest.mark.parametrize("form", ["str", "bytes", "pathlike-str", "pathlike-bytes"])
def test_a_nul_in_a_path_is_refused(tmp_path, form):
    bad = FORMS[form](str(tmp_path) + "/a\0b")
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    with pytest.raises(ValueError, match="path contains a NUL character"):
        dobj.load_config(bad)
    with pytest.raises(ValueError, match="persist_to contains a NUL character"):
        dobj.load_config(tmp_path, persist_to=bad)
    with pytest.raises(ValueError, match="null"):
        dobj.Runtime(storage=bad)


def test_a_lone_surrogate_is_the_cores_error_in_every_form(tmp_path):
    # A str os.fsencode cannot take goes as its WTF-8; the core names it.
    for given in (str(tmp_path / "c\ud800"), FsPath(str(tmp_path / "c\ud800"))):
        with pytest.raises(dobj.ConfigError, match="c\ud800: no such file or folder"):
            dobj.load_config(given)


RATE = os.path.abspath(os.path.join(os.environ.get("DOBJ_BUILD_DIR", os.path.join(
    os.path.dirname(__file__), "..", "..", "build")), "librate.so"))


@pytest.mark.skipif(not os.path.exists(RATE), reason="build/librate.so not built (make build)")
async def test_bind_native_takes_each_form_of_path(as_path):
    rt = dobj.Runtime()
    try:
        ns = rt.bind_native("LIMITER", as_path(RATE), "RateLimiter")
        assert isinstance(ns, dobj.Namespace)
    finally:
        rt.close()
