-- The WebSocket probe of the Lua tests: one object that tells the client what
-- it is (how many instances were made, its tags and attachments) and raises
-- workerd's errors on demand.  tests/lua/websocket_spec.lua binds Probe in
-- its own runtime and serves the client end itself; websocket_dev_spec.lua
-- serves this project with `dobj-lua dev` to a real client (ws_client.py).
local dobj = require "dobj"

local Probe = {}
Probe.__index = Probe
Probe.made = 0 -- instances constructed (a fresh one after each eviction)

function Probe.new(ctx, env)
  Probe.made = Probe.made + 1
  return setmetatable({ ctx = ctx, env = env }, Probe)
end

-- Accepts the server end of a pair with the tags of `?tags=a,b` and greets.
function Probe:fetch(request)
  local tags = {}
  for t in (request.url:match("tags=([^&]*)") or ""):gmatch("[^,]+") do tags[#tags + 1] = t end
  local client, server = dobj.websocket_pair()
  self.ctx:accept_web_socket(server, tags)
  server:send("hello")
  return dobj.response(nil, { status = 101, web_socket = client })
end

-- The errors of the "errors" command, in order.
local function errors(self, ws)
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
  return table.concat(out, "|")
end

function Probe:web_socket_message(ws, msg)
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
    ws:send(("made=%d who=%s tags=%s all=%d state=%d"):format(Probe.made, att and att.who or "-",
      table.concat(self.ctx:get_tags(ws), ","), #self.ctx:get_web_sockets(), ws.ready_state))
  elseif cmd == "all" then -- "all" to every socket, "all TAG" to those tagged TAG
    for _, w in ipairs(self.ctx:get_web_sockets(arg ~= "" and arg or nil)) do w:send("to all") end
  elseif cmd == "auto" then
    self.ctx:set_web_socket_auto_response("ping", "pong")
    local a, b = self.ctx:get_web_socket_auto_response()
    ws:send(a .. "/" .. b)
  elseif cmd == "flood" then -- far more than the socket takes at once, then the close
    for i = 0, tonumber(arg) - 1 do ws:send(("%06d"):format(i) .. ("x"):rep(65530)) end
    ws:close(4002, "flooded")
  elseif cmd == "bye" then
    ws:close(4000, "done")
    local ok, err = pcall(ws.send, ws, "after")
    self.ctx.storage:put("err", ok and "none" or err.message)
  elseif cmd == "err" then
    ws:send(self.ctx.storage:get("err") or "none")
  elseif cmd == "badtext" then -- text that is not UTF-8: refused
    local ok, err = pcall(ws.send, ws, "\xff")
    ws:send(ok and "sent" or err.message)
  elseif cmd == "surrogates" then -- a JavaScript string's, as WTF-8: lone, then a pair
    ws:send("a" .. utf8.char(0xD800) .. "b")
    ws:send(utf8.char(0xD83D, 0xDE00))
    ws:close(4002, "r" .. utf8.char(0xD800))
  elseif cmd == "errors" then
    ws:send(errors(self, ws))
  else
    ws:send(msg)
  end
end

function Probe:web_socket_close(ws, code, reason, clean)
  for _, w in ipairs(self.ctx:get_web_sockets()) do
    if w ~= ws then w:send(("closed %d %s %s"):format(code, reason, tostring(clean))) end
  end
end

local function fetch(request, env)
  if (request.headers.upgrade or ""):lower() ~= "websocket" then
    return dobj.response("expected Upgrade: websocket", { status = 426 })
  end
  return env.PROBE:get_by_name("p"):fetch(request)
end

return { fetch = fetch, Probe = Probe }
