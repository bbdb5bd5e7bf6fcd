-- WebSockets with the hibernation API in Lua: the same core as Python
-- (dobj/websocket.h).  The spec serves the client end itself (client:_attach,
-- _receive, _peer_close, _take: what a server does) and drives the runtime.
local HERE = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local H = dofile(HERE .. "helpers.lua")
local dobj = H.dobj

-- The probe object of tests/lua/ws (the project websocket_dev_spec.lua serves
-- with `dobj-lua dev`): one class for both specs.
local Room = dofile(HERE .. "ws/src/entry.lua").Probe

local function setup(opts)
  Room.made = 0
  local rt = H.runtime(opts)
  local stub = rt:bind("ROOM", Room):get_by_name("r")
  local function connect(tags)
    local res = stub:fetch("https://x/ws" .. (tags and ("?tags=" .. tags) or ""))
    assert.are.equal(101, res.status)
    local client = res.web_socket
    client:_attach()
    assert.are.same({ "hello" }, client:_take())
    return client
  end
  local function ask(client, msg)
    client:_receive(msg)
    rt:run()
    return client:_take()
  end
  return rt, connect, ask
end

describe("WebSockets", function()
  it("delivers messages in order and broadcasts", function()
    local rt, connect, ask = setup()
    local a, b = connect("red"), connect("blue")
    for i = 1, 5 do a:_receive("m" .. i) end
    rt:run()
    assert.are.same({ "m1", "m2", "m3", "m4", "m5" }, a:_take())
    assert.are.same({ "to all" }, ask(b, "all"))
    assert.are.same({ "to all" }, a:_take())
    assert.are.same({ "to all" }, ask(a, "all red"))
    assert.are.same({}, b:_take())
    assert.are.same({ { binary = "cba" } }, ask(a, dobj.bytes("abc")))
    rt:close()
  end)

  it("hibernates: evicted while idle, woken with the same sockets, tags and attachment", function()
    local rt, connect, ask = setup({ idle_timeout = 1 })
    local a = connect("red,x")
    local b = connect("blue")
    assert.are.same({ "ok" }, ask(a, "att alice"))
    assert.are.same({ "made=1 who=alice tags=red,x all=2 state=1" }, ask(a, "state"))
    rt:advance(2)
    assert.are.same({ "made=2 who=alice tags=red,x all=2 state=1" }, ask(a, "state"))
    assert.are.same({ "to all" }, ask(a, "all"))
    assert.are.same({ "to all" }, b:_take())
    rt:close()
  end)

  it("answers the auto-response without waking the object", function()
    local rt, connect, ask = setup({ idle_timeout = 1 })
    local a = connect()
    assert.are.same({ "ping/pong" }, ask(a, "auto"))
    rt:advance(2)
    assert.are.same({ "pong" }, ask(a, "ping"))
    assert.are.equal(1, Room.made)
    rt:close()
  end)

  it("closes both ways with codes, and a send after close() is workerd's error", function()
    local rt, connect, ask = setup()
    local a, b = connect(), connect()
    a:_peer_close(4001, "gone", true)
    rt:run()
    assert.are.same({ "closed 4001 gone true" }, b:_take())
    assert.are.same({ { close = 4000, reason = "done" } }, ask(b, "bye"))
    local c = connect()
    assert.are.same({ "Can't call WebSocket send() after close()." }, ask(c, "err"))
    rt:close()
  end)

  it("closes with 1007 on text that is not UTF-8, and does not send any", function()
    local rt, connect, ask = setup()
    local a, b = connect(), connect()
    assert.are.same({ "a text WebSocket message must be valid UTF-8: send other bytes as a binary message" },
      ask(a, "badtext"))
    assert.are.same({ { close = 1007, reason = "Invalid UTF-8 in a text message" } }, ask(a, "\xff"))
    assert.are.same({ "closed 1007 Invalid UTF-8 in a text message false" }, b:_take())
    assert.are.same({ { binary = "\xff" } }, ask(b, dobj.bytes("\xff")))
    rt:close()
  end)

  it("sends surrogates written as WTF-8 as a JavaScript string goes: U+FFFD, a pair its character", function()
    local rt, connect, ask = setup()
    local a = connect()
    assert.are.same({ "a\u{FFFD}b", "\u{1F600}", { close = 4002, reason = "r\u{FFFD}" } },
      ask(a, "surrogates"))
    rt:close()
  end)

  it("raises workerd's errors", function()
    local rt, connect, ask = setup()
    local a = connect()
    local got = ask(a, "errors")[1]
    assert.are.same({
      "You must call one of accept() or state.acceptWebSocket() on this WebSocket before sending messages.",
      "Cannot call `acceptWebSocket()` if the WebSocket was already accepted via `accept()`",
      "a Hibernatable WebSocket cannot have more than 10 tags",
      "A WebSocket 'attachment' cannot be larger than 16384 bytes.'attachment' was 20006 bytes.",
      "Invalid WebSocket close code: 1005.",
      "this is the client end of a WebSocketPair: return it in a 101 Response (the server serves it) and accept the server end",
    }, (function() local t = {} for m in (got .. "|"):gmatch("(.-)|") do t[#t + 1] = m end return t end)())
    assert.matches("status 101", H.catch(dobj.response, nil, { status = 200, web_socket = a }))
    assert.matches("web_socket must be a dobj.WebSocket", H.catch(dobj.response, nil, { status = 101, web_socket = {} }))
    rt:close()
  end)

  it("collects WebSocket userdata and pairs", function()
    local rt, connect = setup()
    local a = connect()
    a = nil
    collectgarbage()
    collectgarbage()
    rt:close()
    local c, s = dobj.websocket_pair()
    assert.are.equal(c, c)
    assert.are_not.equal(c, s)
    assert.matches("dobj.WebSocket%(client", tostring(c))
  end)
end)
