"""Lone surrogates in str arguments (a Python str may hold them; UTF-8 cannot):
the binding hands the core every str as its UTF-8, lone surrogates as WTF-8,
and the core judges the text by its own rule, with its own message, as it
does for a Lua string of the same bytes.  These raised a bare
UnicodeEncodeError from the binding: the cluster URL, node_addr, WebSocket
tags and auto-response strings."""
import os
import pathlib

import pytest

import dobj
import dobj.cluster


@pytest.mark.parametrize("kw, message", [
    ({"cluster": "postgresql://h/d\ud800"},
     r"cluster: the PostgreSQL URL must be UTF-8 text \(byte 17 is not\)"),
    ({"cluster": "postgresql://h/d", "node_addr": "127.0.0.1:\udc80"},
     r"cluster: the node address must be UTF-8 text \(byte 11 is not\)"),
])
def test_a_cluster_setting_with_a_lone_surrogate_is_the_cores_error(tmp_path, kw, message):
    with pytest.raises(dobj.Error, match=message):
        dobj.Runtime(storage=str(tmp_path), **kw)
    # a project's settings from the caller: the same rule, naming its source
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    with pytest.raises(dobj.ConfigError, match=message.replace("cluster: ", "")):
        dobj.Runtime.from_config(str(tmp_path), cluster=kw["cluster"],
                                 node_addr=kw.get("node_addr", "127.0.0.1:0"))


def test_dobj_cluster_init_and_the_command_line_check_say_the_same(tmp_path):
    message = r"cluster: the PostgreSQL URL must be UTF-8 text \(byte 14 is not\)"
    with pytest.raises(dobj.Error, match=message):
        dobj.cluster.init("postgresql://\udcff/db")
    assert dobj._dobj._cluster_check("postgresql://\udcff/db") == message.replace("\\", "")
    assert "node address must be UTF-8" in dobj._dobj._cluster_check("postgresql://", "\ud800:1")
    with pytest.raises(TypeError, match="the cluster URL must be a str, not int"):
        dobj.cluster.init(1)


class Room(dobj.DurableObject):
    async def tagged(self, tag):
        # A tag is a JavaScript string: kept as it is, found by itself.
        client, server = dobj.WebSocketPair()
        self.ctx.accept_web_socket(server, tags=[tag, "plain"])
        return [self.ctx.get_tags(server), len(self.ctx.get_web_sockets(tag)),
                len(self.ctx.get_web_sockets("\udfff"))]

    async def tags_not_all_str(self, tag, times):
        client, server = dobj.WebSocketPair()
        refused = 0
        for _ in range(times):
            try:
                self.ctx.accept_web_socket(server, tags=[tag, 5])
            except TypeError:
                refused += 1
        return refused

    async def auto(self, request, response):
        try:
            self.ctx.set_web_socket_auto_response(dobj.WebSocketRequestResponsePair(request, response))
        except Exception as exc:  # noqa: BLE001 - the type is what is checked
            return [isinstance(exc, dobj.Error), str(exc)]
        return "set"


@pytest.fixture
def room():
    rt = dobj.Runtime()
    yield rt.bind("ROOM", Room).get_by_name("r")
    rt.close()


async def test_a_tag_with_a_lone_surrogate_is_a_tag(room):
    assert await room.tagged("a\ud800b") == [["a\ud800b", "plain"], 1, 0]


async def test_a_refused_tag_list_keeps_no_tags_bytes(room):
    # A tag list whose second is not a str: the first tag's WTF-8 bytes (a
    # lone surrogate's) were kept for good, 300 KB a call here.
    import tracemalloc
    tag = "\ud800" * 100_000
    tracemalloc.start()
    try:
        assert await room.tags_not_all_str(tag, 1) == 1
        before = tracemalloc.get_traced_memory()[0]
        assert await room.tags_not_all_str(tag, 40) == 40
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2 << 20, grown  # 12 MB before


@pytest.mark.parametrize("request_, response", [("p\ud800", "pong"), ("ping", "\udc00")])
async def test_an_auto_response_with_a_lone_surrogate_is_the_cores_error(room, request_, response):
    # A text message is UTF-8: the core refuses the pair with its message.
    assert await room.auto(request_, response) == [
        True, "a WebSocket auto-response request and response must be valid UTF-8 (they are "
              "text messages)"]
    assert await room.auto("ping", "pong") == "set"


# Names, keys and SQL text are JavaScript strings: a str with lone surrogates
# reaches the core as its WTF-8 bytes (the bytes a Lua string would hold)
# and is kept, found and given back as it was.

class Kv(dobj.DurableObject):
    def keys(self, key):
        s = self.ctx.storage
        s.put(key, 1)
        s.put({key + "2": 2, "plain": 3})
        got = [s.get(key), s.get([key, key + "2", "x"]), list(s.list()),
               list(s.list(prefix=key)), list(s.list(start=key + "2")),
               list(s.list(start_after=key, end="plain")), list(s.list(end=key + "2"))]
        got.append([s.delete(key), s.delete([key + "2", "plain"]), dict(s.list())])
        return got

    def sql(self, text):
        s = self.ctx.storage.sql
        s.exec("CREATE TABLE IF NOT EXISTS t(v TEXT)")
        s.exec("DELETE FROM t")
        s.exec("INSERT INTO t VALUES (?), ('" + text + "')", text)
        cur = s.exec('SELECT v AS "' + text + '", length(v) AS n FROM t')
        return [cur.column_names, [list(r.values()) for r in cur]]


async def test_storage_keys_and_list_bounds_with_lone_surrogates_are_keys():
    rt = dobj.Runtime()
    try:
        kv = rt.bind("KV", Kv).get_by_name("k")
        k = "a\ud800"
        assert await kv.keys(k) == [
            1, {k: 1, k + "2": 2}, [k, k + "2", "plain"], [k, k + "2"], [k + "2", "plain"],
            [k + "2"], [k],
            [True, 2, {}]]
    finally:
        rt.close()


async def test_sql_text_with_lone_surrogates_is_stored_and_read_back():
    rt = dobj.Runtime()
    try:
        kv = rt.bind("KV", Kv).get_by_name("k")
        # the query, a bound str and a column name: one character each
        assert await kv.sql("x\udc80") == [["x\udc80", "n"], [["x\udc80", 2], ["x\udc80", 2]]]
    finally:
        rt.close()


async def test_a_binding_name_and_keys_with_lone_surrogates_are_names(tmp_path):
    rt = dobj.Runtime(storage=str(tmp_path))
    try:
        ns = rt.bind("K\ud800", Kv, unique_key="u\udfff", id_key="i\udbff")
        assert rt.env["K\ud800"] is ns
        # the id key is the key IDs derive from: the same bytes give the same ID
        other = rt.bind("OTHER", Kv, unique_key="other", id_key="i\udbff")
        assert str(ns.id_from_name("n")) == str(other.id_from_name("n"))
        assert (await ns.get_by_name("n").keys("k"))[0] == 1
        assert (tmp_path / "u\udfff".encode("utf-8", "surrogatepass").decode(
            "utf-8", "surrogateescape")).is_dir()
        with pytest.raises(ValueError, match="already bound as K\ud800"):
            rt.bind("K\ud800", Kv)
    finally:
        rt.close()


def test_a_cluster_namespaces_unique_key_with_a_lone_surrogate_is_the_cores_error(pg, tmp_path):
    # PostgreSQL keeps the key as text: it was bound, and every claim failed
    # with PostgreSQL's encoding error, the node's alarm scan too (for every
    # namespace of the node).
    rt = dobj.Runtime(storage=str(tmp_path), cluster=pg.url, node_addr="127.0.0.1:0")
    try:
        with pytest.raises(dobj.Error, match=r"cluster: a namespace's unique key must be "
                           r"UTF-8 text \(byte 2 is not\)"):
            rt.bind("K", Kv, unique_key="u\udfff")
        with pytest.raises(dobj.Error, match=r"byte 1 is not"):
            rt.bind("\ud800", Kv)
        assert list(rt.env) == []
    finally:
        rt.close()


class Named(dobj.DurableObject):
    def boom(self):
        raise ValueError("bad \ud800 thing")

    async def fetch(self, request):
        return dobj.Response(ascii(request.url))


setattr(Named, "m\udc00", lambda self: "called")


async def test_an_rpc_method_name_and_an_error_message_keep_their_lone_surrogates():
    rt = dobj.Runtime()
    try:
        stub = rt.bind("N", Named).get_by_name("n")
        assert await getattr(stub, "m\udc00")() == "called"
        with pytest.raises(dobj.Error, match='does not implement the method "n\ud800"'):
            await getattr(stub, "n\ud800")()
        with pytest.raises(ValueError, match="bad \ud800 thing"):
            await stub.boom()
        assert (await stub.fetch("http://x/\ud800")).text() == ascii("http://x/\ud800")
    finally:
        rt.close()


def test_a_header_name_or_method_with_a_lone_surrogate_is_the_cores_error():
    with pytest.raises(dobj.InvalidInputError, match="Invalid header name"):
        dobj.Headers({"a\ud800": "x"})
    with pytest.raises(dobj.InvalidInputError, match="Invalid HTTP method string: G\ud800"):
        dobj.Request("http://x/", method="G\ud800")


def test_paths_and_the_environment_name_with_lone_surrogates(tmp_path):
    # A path os.fsencode cannot take goes as its WTF-8, the bytes a Lua
    # string would hold: the core says what it found there.
    with pytest.raises(dobj.ConfigError, match="c\ud800: no such file or folder"):
        dobj.load_config(str(tmp_path / "c\ud800"))
    rt = dobj.Runtime(storage=str(tmp_path / "s\ud800"))
    try:
        assert rt.bind("K", Kv) is not None
    finally:
        rt.close()
    assert "s\udced\udca0\udc80" in os.listdir(tmp_path)
    # A file name that is not UTF-8 is its own bytes (os.fsencode), as before.
    (tmp_path / "\udcff").mkdir()
    (tmp_path / "\udcff" / "wrangler.toml").write_text('name = "w"\n[env.x]\nname = "y"\n')
    assert dobj.load_config(str(tmp_path / "\udcff")).config_path == str(
        tmp_path / "\udcff" / "wrangler.toml")
    # The environment's name is text: given back as it was, or named in the error.
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    assert dobj.load_config(str(tmp_path), env="e\ud800").env == "e\ud800"
    (tmp_path / "wrangler.toml").write_text('name = "w"\n[env.x]\nname = "y"\n')
    with pytest.raises(dobj.ConfigError, match='No environment found in configuration with '
                                               'name "e\ud800"'):
        dobj.load_config(str(tmp_path), env="e\ud800")


class FsPath:
    """An os.PathLike that is not a pathlib.Path."""

    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


@pytest.mark.parametrize("as_path", [pathlib.Path, FsPath], ids=["pathlib", "pathlike"])
def test_a_pathlike_with_a_lone_surrogate_is_its_strs_path(tmp_path, as_path):
    # os.fspath's str follows the str's rule: WTF-8, never a UnicodeEncodeError.
    # This raised one for storage=.
    rt = dobj.Runtime(storage=as_path(str(tmp_path / "s\ud800")))
    try:
        assert rt.bind("K", Kv) is not None
    finally:
        rt.close()
    assert "s\udced\udca0\udc80" in os.listdir(tmp_path)
    with pytest.raises(dobj.ConfigError, match="c\ud800: no such file or folder"):
        dobj.load_config(as_path(str(tmp_path / "c\ud800")))
    (tmp_path / "wrangler.toml").write_text('name = "w"\n')
    c = dobj.load_config(as_path(str(tmp_path)), persist_to=as_path(str(tmp_path / "p\ud800")))
    assert c.state_dir == str(tmp_path / "p\ud800" / "v3" / "do")


def test_a_str_body_is_a_usvstring():
    # As in workerd: a lone surrogate is U+FFFD, a pair written as two halves its character.
    assert dobj.Response("a\ud800b\ud83d\ude00").body == "a\ufffdb😀".encode()
    assert dobj.Request("http://x/", method="POST", body="\udc00").body == "\ufffd".encode()


RATE = os.path.abspath(os.path.join(os.environ.get("DOBJ_BUILD_DIR", os.path.join(
    os.path.dirname(__file__), "..", "..", "build")), "librate.so"))


@pytest.mark.skipif(not os.path.exists(RATE), reason="build/librate.so not built (make build)")
def test_a_native_class_name_with_a_lone_surrogate_is_the_cores_error():
    rt = dobj.Runtime()
    try:
        with pytest.raises(dobj.Error, match="has no native class named Rate\ud800"):
            rt.bind_native("L", RATE, "Rate\ud800")
    finally:
        rt.close()
