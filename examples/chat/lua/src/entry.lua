-- A chat room on the WebSocket hibernation API (the Lua twin of
-- examples/chat/python).
--   GET /                         the page (examples/chat/index.html, shared with the Python room)
--   GET /rooms/<room>?name=<you>  (Upgrade: websocket) joins <room> as <you>
--   GET /echo                     (Upgrade: websocket) an object echoing messages
-- ChatRoom keeps nothing in memory: each socket carries its user's name in
-- its attachment and as its tag, the message count is in storage, so the
-- room can be evicted between messages with every client connected.
local dobj = require "dobj"

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
-- One page for both chat rooms: examples/chat/index.html, next to the two projects.
local PAGE = assert(io.open(here .. "../../index.html")):read("a")

-- JSON for the few shapes the page reads (strings, integers, string lists).
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return c == '"' and '\\"' or c == "\\" and "\\\\" or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function json(t)
  local out = {}
  for _, k in ipairs(t) do
    local v = t[k]
    if type(v) == "table" then
      local items = {}
      for i, s in ipairs(v) do items[i] = quote(s) end
      v = "[" .. table.concat(items, ", ") .. "]"
    elseif type(v) == "string" then
      v = quote(v)
    else
      v = tostring(v)
    end
    out[#out + 1] = quote(k) .. ": " .. v
  end
  return "{" .. table.concat(out, ", ") .. "}"
end

local function upgrade_required()
  return dobj.response("expected Upgrade: websocket", { status = 426 })
end

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local ChatRoom = {}
ChatRoom.__index = ChatRoom

function ChatRoom:broadcast(event, skip)
  local text = json(event)
  for _, ws in ipairs(self.ctx:get_web_sockets()) do
    if ws ~= skip and ws.ready_state == 1 then ws:send(text) end
  end
end

function ChatRoom:fetch(request)
  if (request.headers.upgrade or ""):lower() ~= "websocket" then return upgrade_required() end
  local name = unescape(request.url:match("[?&]name=([^&]*)") or "anonymous"):sub(1, 64)
  local client, server = dobj.websocket_pair()
  self.ctx:accept_web_socket(server, { name })
  server:serialize_attachment({ name = name })
  -- "ping" is answered by the runtime without waking the room.
  self.ctx:set_web_socket_auto_response("ping", "pong")
  self:broadcast({ "type", "name", type = "join", name = name }, server)
  return dobj.response(nil, { status = 101, web_socket = client })
end

function ChatRoom:web_socket_message(ws, message)
  local me = ws:deserialize_attachment().name
  if message == "/who" then
    local names = {}
    for _, w in ipairs(self.ctx:get_web_sockets()) do names[#names + 1] = w:deserialize_attachment().name end
    table.sort(names)
    ws:send(json({ "type", "names", type = "who", names = names }))
    return
  end
  if type(message) ~= "string" then message = tostring(message) end
  local seq = (self.ctx.storage:get("seq") or 0) + 1
  self.ctx.storage:put("seq", seq)
  self:broadcast({ "type", "seq", "name", "text", type = "message", seq = seq, name = me, text = message })
end

function ChatRoom:web_socket_close(ws, code, reason, was_clean)
  local me = ws:deserialize_attachment().name
  self:broadcast({ "type", "name", "code", type = "leave", name = me, code = code }, ws)
end

local Echo = {}
Echo.__index = Echo

function Echo:fetch(request)
  if (request.headers.upgrade or ""):lower() ~= "websocket" then return upgrade_required() end
  local client, server = dobj.websocket_pair()
  self.ctx:accept_web_socket(server)
  return dobj.response(nil, { status = 101, web_socket = client })
end

function Echo:web_socket_message(ws, message)
  ws:send(message)
end

local function fetch(request, env)
  local path = request.url:match("^[%a][%w+.-]*://[^/]*([^?#]*)") or "/"
  if path == "/" then
    return dobj.response(PAGE, { headers = { ["content-type"] = "text/html; charset=utf-8" } })
  end
  local room = path:match("^/rooms/(.+)$")
  if room then return env.ROOMS:get_by_name(room):fetch(request) end
  if path == "/echo" then return env.ECHO:get_by_name("echo"):fetch(request) end
  return dobj.response("not found", { status = 404 })
end

return { fetch = fetch, ChatRoom = ChatRoom, Echo = Echo }
