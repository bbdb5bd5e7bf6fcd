"""Lone surrogates in str arguments (a Python str may hold them; UTF-8 cannot):
the binding hands the core every str as its UTF-8, lone surrogates as WTF-8,
and the core judges the text by its own rule, with its own message, as it
does for a Lua string of the same bytes.  These raised a bare
UnicodeEncodeError from the binding: the cluster URL, node_addr, WebSocket
tags and auto-response strings."""
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


@pytest.mark.parametrize("request_, response", [("p\ud800", "pong"), ("ping", "\udc00")])
async def test_an_auto_response_with_a_lone_surrogate_is_the_cores_error(room, request_, response):
    # A text message is UTF-8: the core refuses the pair with its message.
    assert await room.auto(request_, response) == [
        True, "a WebSocket auto-response request and response must be valid UTF-8 (they are "
              "text messages)"]
    assert await room.auto("ping", "pong") == "set"
