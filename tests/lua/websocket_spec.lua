-- WebSockets with the hibernation API in Lua: the same core as Python
-- (dobj/websocket.h).  The spec serves the client end itself (client:_attach,
-- _receive, _peer_close, _take: what a server does) and drives the runtime.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local Room = H.class("Room")
Room.made = 0

function Room.new(ctx, env)
  Room.made = Room.made + 1
  return setmetatable({ ctx = ctx }, Room)
end

function Room:fetch(req)
  local client, server = dobj.websocket_pair()
  local tags = {}
  for t in (req.url:match("tags=([^&]*)") or ""):gmatch("[^,]+") do tags[#tags + 1] = t end
  self.ctx:accept_web_socket(server, tags)
  server:send("hello")
  return dobj.response(nil, { status = 101, web_socket = client })
end

function Room:web_socket_message(ws, msg)
  if type(msg) ~= "string" then
    ws:send(dobj.bytes(tostring(msg):reverse()))
    return
  end
  local cmd, arg = msg:match("^(%S+)%s*(.*)$")
  if cmd == "att" then
    ws:serialize_attachment({ who = arg, n = 2 })
    ws:send("ok")
  elseif cmd == "state" then
    local att = ws:deserialize_attachment()
    ws:send(("made=%d who=%s tags=%s all=%d state=%d"):format(Room.made, att and att.who or "-",
      table.concat(self.ctx:get_tags(ws), ","), #self.ctx:get_web_sockets(), ws.ready_state))
  elseif cmd == "all" then
    for _, w in ipairs(self.ctx:get_web_sockets(arg ~= "" and arg or nil)) do w:send("to all") end
  elseif cmd == "auto" then
    self.ctx:set_web_socket_auto_response("ping", "pong")
    local a, b = self.ctx:get_web_socket_auto_response()
    ws:send(a .. "/" .. b)
  elseif cmd == "bye" then
    ws:close(4000, "done")
    local ok, err = pcall(ws.send, ws, "after")
    self.ctx.storage:put("err", ok and "none" or err.message)
  elseif cmd == "err" then
    ws:send(self.ctx.storage:get("err") or "none")
  elseif cmd == "errors" then
    local out = {}
    local c2, s2 = dobj.websocket_pair()
    for _, f in ipairs({
      function() s2:send("x") end,
      function() self.ctx:accept_web_socket(ws) end,
      function() self.ctx:accept_web_socket(s2, { "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11" }) end,
      function() ws:serialize_attachment(("x"):rep(20000)) end,
      function() ws:close(1005) end,
      function() c2:send("x") end,
    }) do
      local ok, err = pcall(f)
      out[#out + 1] = ok and "no error" or (type(err) == "table" and err.message or tostring(err))
    end
    ws:send(table.concat(out, "|"))
  else
    ws:send(msg)
  end
end

function Room:web_socket_close(ws, code, reason, clean)
  for _, w in ipairs(self.ctx:get_web_sockets()) do
    if w ~= ws then w:send(("closed %d %s %s"):format(code, reason, tostring(clean))) end
  end
end

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
