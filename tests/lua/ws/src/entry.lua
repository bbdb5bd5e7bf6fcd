local dobj = require "dobj"

local Probe = {}
Probe.__index = Probe
local made = 0

function Probe.new(ctx, env)
  made = made + 1
  return setmetatable({ ctx = ctx, env = env }, Probe)
end

function Probe:fetch(request)
  local tags = {}
  for t in (request.url:match("tags=([^&]*)") or ""):gmatch("[^,]+") do tags[#tags + 1] = t end
  local client, server = dobj.websocket_pair()
  self.ctx:accept_web_socket(server, tags)
  server:send("hello")
  return dobj.response(nil, { status = 101, web_socket = client })
end

function Probe:web_socket_message(ws, msg)
  if type(msg) ~= "string" then
    ws:send(dobj.bytes(tostring(msg):reverse()))
    return
  end
  local cmd, arg = msg:match("^(%S+)%s*(.*)$")
  if cmd == "att" then
    ws:serialize_attachment({ who = arg })
    ws:send("ok")
  elseif cmd == "state" then
    local att = ws:deserialize_attachment()
    ws:send(("made=%d who=%s tags=%s all=%d"):format(made, att and att.who or "-",
      table.concat(self.ctx:get_tags(ws), ","), #self.ctx:get_web_sockets()))
  elseif cmd == "all" then
    for _, w in ipairs(self.ctx:get_web_sockets()) do w:send(arg) end
  elseif cmd == "bye" then
    ws:close(4000, "done")
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
