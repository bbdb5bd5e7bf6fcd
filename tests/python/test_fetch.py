"""Stubs and fetch: one instance, order, gates, errors, limits."""
import asyncio

import pytest

import dobj
from conftest import Counter


async def test_round_trip_and_one_instance(counter):
    stub = counter.get(counter.id_from_name("foo"))
    assert stub.name == "foo" and stub.id == counter.id_from_name("foo")
    texts = [(await stub.fetch("https://counter/")).text() for _ in range(3)]
    assert texts == ["0", "1", "2"]
    other = counter.get_by_name("foo")  # another stub, same object
    assert (await other.fetch("https://counter/")).text() == "3"
    assert (await counter.get_by_name("bar").fetch("https://counter/")).text() == "0"
    assert Counter.constructed == 2


async def test_concurrent_first_calls_construct_once(counter):
    stubs = [counter.get_by_name("x") for _ in range(3)]
    out = await asyncio.gather(*(s.fetch("https://c/") for s in stubs))
    assert [r.text() for r in out] == ["0", "1", "2"]
    assert Counter.constructed == 1


async def test_hundred_calls_arrive_in_order(rt):
    seen = []

    class Log(dobj.DurableObject):
        async def fetch(self, request):
            seen.append(int(request.url.rsplit("/", 1)[1]))
            await asyncio.sleep(0)
            return dobj.Response("ok")

    stub = rt.bind("LOG", Log).get_by_name("l")
    await asyncio.gather(*(stub.fetch(f"https://l/{i}") for i in range(100)))
    assert seen == list(range(100))


async def test_suspending_handler_lets_others_in_and_plain_ones_never_interleave(rt):
    log = []

    class Gate(dobj.DurableObject):
        async def fetch(self, request):
            tag = request.url.rsplit("/", 1)[1]
            log.append(tag + "-start")
            if tag == "slow":
                await asyncio.sleep(0.01)
            log.append(tag + "-end")
            return dobj.Response(tag)

    stub = rt.bind("GATE", Gate).get_by_name("g")
    await asyncio.gather(stub.fetch("https://g/slow"), stub.fetch("https://g/a"), stub.fetch("https://g/b"))
    assert log == ["slow-start", "a-start", "a-end", "b-start", "b-end", "slow-end"]


async def test_sync_and_async_handlers(rt):
    class Sync(dobj.DurableObject):
        def fetch(self, request):
            return dobj.Response(request.method + " " + request.url, status=201,
                                 headers={"X-Thing": "1"})

    r = await rt.bind("SYNC", Sync).get_by_name("s").fetch("https://s/p", method="post")
    assert (r.status, r.text(), r.headers["x-thing"], r.headers.get("X-THING"), r.ok) == \
        (201, "POST https://s/p", "1", "1", True)


async def test_request_fields_and_copy(rt):
    got = []

    class Echo(dobj.DurableObject):
        def fetch(self, request):
            got.append(request)
            request.headers["x-mutated"] = "yes"
            return dobj.Response.json({"method": request.method, "body": request.text(),
                                       "ct": request.headers.get("content-type")})

    stub = rt.bind("ECHO", Echo).get_by_name("e")
    req = dobj.Request("https://e/x", method="PUT", headers={"Content-Type": "text/plain"}, body="hé")
    r = await stub.fetch(req)
    assert r.json() == {"method": "PUT", "body": "hé", "ct": "text/plain"}
    assert r.headers["content-type"] == "application/json"
    assert got[0] is not req and "x-mutated" not in req.headers  # the object got a copy
    r = await stub.fetch("https://e/y", method="POST", body=b"\x00\x01", headers=[("A", "1"), ("a", "2")])
    assert got[1].body == b"\x00\x01" and got[1].headers["a"] == "1, 2"
    r = await stub.fetch(req, method="PATCH")
    assert got[2].method == "PATCH" and got[2].body == "hé".encode()


async def test_a_requests_url_set_to_a_non_str_is_a_type_error(counter):
    # url is a slot anyone can set: since str arguments go to the core as
    # WTF-8, the binding read what it held as a str's data (bytes' past
    # their end: a URL of garbage, or a crash).
    stub = counter.get_by_name("u")
    req = dobj.Request("https://u/")
    for bad in (b"https://u/", 42, None, ["https://u/"]):
        req.url = bad
        with pytest.raises(TypeError, match="a request's url must be a str, got "):
            await stub.fetch(req)
    assert Counter.constructed == 0  # nothing was delivered


async def test_relative_url_is_refused(counter):
    stub = counter.get_by_name("u")
    with pytest.raises(TypeError, match="Invalid URL: /relative"):
        await stub.fetch("/relative")
    with pytest.raises(TypeError):
        await stub.fetch(42)
    assert Counter.constructed == 0  # nothing was delivered


async def test_remote_errors_keep_type_and_message(rt):
    class Boom(dobj.DurableObject):
        async def fetch(self, request):
            raise KeyError("missing thing")

    class Custom(Exception):
        pass

    class Boom2(dobj.DurableObject):
        def fetch(self, request):
            e = Custom("custom")
            e.code = 42
            raise e

    stub = rt.bind("BOOM", Boom).get_by_name("b")
    with pytest.raises(KeyError) as info:
        await stub.fetch("https://b/")
    assert info.value.args == ("missing thing",)
    assert info.value.remote is True
    assert info.value.durable_object_id == str(stub.id)
    with pytest.raises(Custom) as info:
        await rt.bind("BOOM2", Boom2).get_by_name("c").fetch("https://c/")
    assert info.value.code == 42 and info.value.remote is True
    # The object survives a failed call.
    with pytest.raises(KeyError):
        await stub.fetch("https://b/")


async def test_class_without_fetch(rt):
    class NoFetch(dobj.DurableObject):
        pass

    with pytest.raises(dobj.Error, match=r"^Handler does not export a fetch\(\) function\.$") as info:
        await rt.bind("NF", NoFetch).get_by_name("n").fetch("https://n/")
    assert info.value.remote is True


@pytest.mark.parametrize("value", ["text", None, 200, {"a": 1}])
async def test_non_response_is_an_error_naming_the_class(rt, value):
    class Wrong(dobj.DurableObject):
        def fetch(self, request):
            return value

    with pytest.raises(TypeError, match=r"Wrong\.fetch\(\) returned .*; it must return a dobj\.Response"):
        await rt.bind("W", Wrong).get_by_name("w").fetch("https://w/")


async def test_objects_call_objects_through_env(rt, counter):
    class Front(dobj.DurableObject):
        async def fetch(self, request):
            back = self.env.COUNTER.get_by_name("shared")
            r = await back.fetch("https://counter/")
            return dobj.Response(f"{self.env.GREETING}:{r.text()}:{self.env['COUNTER'] is self.env.COUNTER}")

    front = rt.bind("FRONT", Front)
    assert rt.env.FRONT is front and rt.env["COUNTER"] is counter and "GREETING" in rt.env
    out = [(await front.get_by_name(n).fetch("https://f/")).text() for n in ("a", "b")]
    assert out == ["hi:0:True", "hi:1:True"]


async def test_nested_calls_stop_at_depth_16(rt):
    depths = []

    class Deep(dobj.DurableObject):
        async def fetch(self, request):
            depth = int(request.url.rsplit("/", 1)[1])
            depths.append(depth)
            nxt = self.env.DEEP.get_by_name(f"n{depth + 1}")
            try:
                r = await nxt.fetch(f"https://d/{depth + 1}")
            except dobj.Error as e:
                return dobj.Response(f"stopped after {depth}: {e}")
            return r

    r = await rt.bind("DEEP", Deep).get_by_name("n1").fetch("https://d/1")
    assert r.text() == "stopped after 16: Subrequest depth limit exceeded"
    assert depths == list(range(1, 17))


async def test_self_recursion_is_bounded_too(rt):
    class Me(dobj.DurableObject):
        async def fetch(self, request):
            return await self.env.ME.get(self.ctx.id).fetch("https://me/")

    with pytest.raises(dobj.Error, match="Subrequest depth limit exceeded"):
        await rt.bind("ME", Me).get_by_name("me").fetch("https://me/")


async def test_ctx_id_and_long_names(rt):
    class Who(dobj.DurableObject):
        def fetch(self, request):
            return dobj.Response.json({"id": str(self.ctx.id), "name": self.ctx.id.name})

    ns = rt.bind("WHO", Who)
    r = (await ns.get_by_name("alice").fetch("https://w/")).json()
    assert r == {"id": str(ns.id_from_name("alice")), "name": "alice"}
    long_ok, too_long = "n" * 1024, "n" * 1025
    assert (await ns.get_by_name(long_ok).fetch("https://w/")).json()["name"] == long_ok
    stub = ns.get_by_name(too_long)
    assert (await stub.fetch("https://w/")).json()["name"] is None
    assert stub.name == too_long  # the stub keeps it
    unique = ns.get(ns.new_unique_id())
    assert (await unique.fetch("https://w/")).json()["name"] is None


async def test_fetch_from_handlers_awaiting_asyncio(rt):
    class Sleepy(dobj.DurableObject):
        async def fetch(self, request):
            await asyncio.sleep(0.001)
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(fut.set_result, "done")
            return dobj.Response(await fut)

    assert (await rt.bind("SL", Sleepy).get_by_name("s").fetch("https://s/")).text() == "done"


async def test_awaiting_something_unsupported_fails_cleanly(rt):
    class Odd:
        def __await__(self):
            yield 42

    class Weird(dobj.DurableObject):
        async def fetch(self, request):
            await Odd()

    with pytest.raises(RuntimeError, match="cannot wait for"):
        await rt.bind("WEIRD", Weird).get_by_name("w").fetch("https://w/")


async def test_closed_runtime(rt, counter):
    stub = counter.get_by_name("c")
    rt.close()
    with pytest.raises(dobj.Error, match="the runtime is closed"):
        await stub.fetch("https://c/")
    with pytest.raises(dobj.Error, match="the runtime is closed"):
        counter.id_from_name("x")


async def test_constructor_errors_reach_the_caller(rt):
    attempts = []

    class Fragile(dobj.DurableObject):
        def __init__(self, ctx, env):
            super().__init__(ctx, env)
            attempts.append(1)
            if len(attempts) == 1:
                raise ValueError("first construction fails")

        def fetch(self, request):
            return dobj.Response("ok")

    ns = rt.bind("FR", Fragile)
    with pytest.raises(ValueError, match="first construction fails"):
        await ns.get_by_name("f").fetch("https://f/")
    assert (await ns.get_by_name("f").fetch("https://f/")).text() == "ok"


def test_request_and_response_validation():
    with pytest.raises(ValueError):
        dobj.Response("x", status=99)
    # The core's range and workerd's message, as in Lua.
    for bad in (199, 600, -(2**70), 2**70):
        with pytest.raises(ValueError, match="in the range 200 to 599, inclusive"):
            dobj.Response("x", status=bad)
    with pytest.raises(ValueError, match="status must be an int"):
        dobj.Response("x", status=200.0)
    assert dobj.Response("x", status=599).status == 599
    with pytest.raises(TypeError):
        dobj.Response(12)
    with pytest.raises(TypeError):
        dobj.Request("https://x/", body="no body on GET")
    with pytest.raises(ValueError):
        dobj.Headers({"bad name": "x"})
    with pytest.raises(ValueError):
        dobj.Headers({"x": "a\r\nb"})
    h = dobj.Headers({"Content-Type": "a"})
    assert h["CONTENT-TYPE"] == "a" and "content-type" in h and list(h) == ["content-type"]
    r = dobj.Response.json({"a": [1, 2]}, status=404)
    assert (r.status, r.ok, r.json()) == (404, False, {"a": [1, 2]})


# ---------------------------------------- the core's message rules (dobj_msg_*)

def test_header_names_must_be_tokens_and_values_are_normalized():
    for bad in ("", "bad name", "a:b", "caf\u00e9", "x\0", "(x)"):
        with pytest.raises(TypeError, match=r"^Invalid header name\.$") as e:
            dobj.Headers({bad: "x"})
        assert type(e.value) is dobj.InvalidInputError  # workerd's TypeError
        for method in ("get", "has", "delete"):  # workerd checks the name there too
            with pytest.raises(dobj.InvalidInputError, match=r"^Invalid header name\.$"):
                getattr(dobj.Headers(), method)(bad)
    h = dobj.Headers([("X-Custom_1!#$%&'*+.^`|~", "v")])
    assert list(h) == ["x-custom_1!#$%&'*+.^`|~"]
    for bad in ("a\r\nInjected: 1", "a\nb", "a\0b", "\u0100"):
        with pytest.raises(dobj.InvalidInputError, match=r"^Invalid header value\.$"):
            dobj.Headers({"x": bad})
    h = dobj.Headers({"x": " \t v w \r\n"})
    assert h["x"] == "v w"
    h.append("X", "\xff")  # a byte string: code points up to 255
    assert h.get("x") == "v w, \xff"


def test_set_cookie_stays_a_list_and_iterates_one_by_one():
    h = dobj.Headers()
    h.append("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT")
    h.append("x-b", "1")
    h.append("set-cookie", "b=2")
    h.append("X-B", "2")
    assert h.get_set_cookie() == ["a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2"]
    assert h.get("set-cookie") == "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT, b=2"
    assert h.get("x-b") == "1, 2"
    assert h.items() == [("set-cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
                         ("set-cookie", "b=2"), ("x-b", "1, 2")]
    assert list(h) == ["set-cookie", "set-cookie", "x-b"]
    copy = dobj.Headers(h)
    copy.append("set-cookie", "c=3")
    assert len(h.get_set_cookie()) == 2 and copy == dobj.Headers(copy.items())
    h.set("set-cookie", "z=9")
    assert h.get_set_cookie() == ["z=9"]
    assert dobj.Headers().get_set_cookie() == []


def test_methods_are_normalized_as_fetch_says():
    assert dobj.Request("https://x/", method="get").method == "GET"
    assert dobj.Request("https://x/", method="Delete").method == "DELETE"
    # The other methods workerd knows only as written; the rest are
    # workerd's TypeError (checked against workerd 2026-11-17).
    for m in ("PATCH", "TRACE", "PROPFIND", "MSEARCH", "QUERY"):
        assert dobj.Request("https://x/", method=m).method == m
    for m in ("patch", "CONNECT", "TRACK", "LINK", "M-SEARCH", "GE T"):
        with pytest.raises(TypeError, match=f"^Invalid HTTP method string: {m}$") as e:
            dobj.Request("https://x/", method=m)
        assert isinstance(e.value, dobj.InvalidInputError) and isinstance(e.value, dobj.Error)
    assert issubclass(dobj.InvalidInputError, ValueError)  # what dobj raised before
    for m in ("GET", "head"):
        with pytest.raises(TypeError, match=r"^Request with a GET or HEAD method cannot have a body\.$"):
            dobj.Request("https://x/", method=m, body=b"x")


def test_responses_null_body_statuses_content_type_and_status_text():
    for status in (204, 205, 304):
        with pytest.raises(ValueError, match=r"null body status \(101, 204, 205, or 304\)"):
            dobj.Response("x", status=status)
        assert dobj.Response(None, status=status).body == b""
    assert dobj.Response("x").headers["content-type"] == "text/plain;charset=UTF-8"
    assert dobj.Response("x", headers={"Content-Type": "text/html"}).headers["content-type"] \
        == "text/html"
    assert "content-type" not in dobj.Response(b"x").headers
    assert dobj.Response.json({}).headers["content-type"] == "application/json"
    assert dobj.Response(status=404).status_text == "Not Found"
    assert dobj.Response(status=599).status_text == ""
