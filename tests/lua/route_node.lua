-- A Lua node for the cluster routing tests (tests/lua/cluster_route_spec.lua,
-- tests/python/test_cluster_route.py): serves the ROUTE namespace until it is
-- killed.  Prints "ready NODE_ID NODE_ADDR" once it listens.
--   lua5.4 route_node.lua URL STORAGE NODE_ADDR [NAME...]  (NAMEs: objects it claims first)
-- TTL in the environment sets its cluster TTL in seconds (1.5 without), as
-- for tests/python/route_node.py: nodes of one cluster may have different TTLs.
local dobj = require "dobj"
local url, storage, addr = arg[1], arg[2], arg[3]
local NODE, RT

local Box = { __name = "Box" }
Box.__index = Box
function Box.new(ctx, env) return setmetatable({ ctx = ctx, env = env }, Box) end
function Box:add(n)
  local v = (self.ctx.storage:get("n") or 0) + (n or 1)
  self.ctx.storage:put("n", v)
  return v
end
function Box:node() return NODE end
function Box:whoami() return "lua:" .. NODE end
function Box:boom(msg) error({ name = "RangeError", message = msg }) end
function Box:slow(s) dobj.sleep(s) return "slept" end
function Box:close_runtime() -- its write's append out, the node closes under the call
  self.ctx.storage:put("n", 99)
  RT:close()
  return "closed"
end
function Box:echo(...) return { ... } end
function Box:call(name, method, ...)
  local s = self.env.ROUTE:get_by_name(name)
  return s[method](s, ...)
end
function Box:use(stub, method, ...) return stub[method](stub, ...) end -- a stub passed in
function Box:give(name) return self.env.ROUTE:get_by_name(name) end -- a stub as a result
function Box:give_latin1(name) -- the same, the name's characters as bytes (not UTF-8)
  name = name:gsub("[\xc2\xc3][\x80-\xbf]", function(c)
    return string.char(((c:byte(1) & 3) << 6) | (c:byte(2) & 0x3f))
  end)
  return assert(self.env.ROUTE:get_by_name(name))
end
function Box:fetch(req)
  if req.url:match("^http://do/ws") then -- a WebSocket, served by the caller's node
    local client, server = dobj.websocket_pair()
    self.ctx:accept_web_socket(server, { "lua-tag" })
    if req.url:match("^http://do/ws%-slow") then dobj.sleep(1) end -- the 101 a second later
    server:serialize_attachment({ node = NODE })
    server:send("hello from " .. NODE)
    return dobj.response(nil, { status = 101, web_socket = client })
  end
  return dobj.response(req.method .. " " .. req.url .. " " .. req.body,
    { status = 201, headers = { ["x-node"] = tostring(NODE) } })
end

function Box:web_socket_message(ws, msg)
  if msg == "who" then
    ws:send(("%s %s %s %d"):format(NODE, self.ctx:get_tags(ws)[1], ws:deserialize_attachment().node,
      #self.ctx:get_web_sockets()))
  elseif msg == "close" then ws:close(4000, "bye")
  else ws:send("echo:" .. msg) end
end
function Box:web_socket_close(ws, code, reason) self.ctx.storage:put("closed", { code, reason }) end
function Box:closed() return self.ctx.storage:get("closed") end
function Box:sockets() return #self.ctx:get_web_sockets() end

local rt = assert(dobj.runtime{ storage = storage, cluster = url, node_addr = addr,
  cluster_ttl = tonumber(os.getenv("TTL") or "1.5"), cluster_grace = 0.5 })
RT = rt
local ns = rt:bind("ROUTE", Box)
NODE = rt:node_id()
for i = 4, #arg do ns:get_by_name(arg[i]):add(0) end -- objects this node owns from the start
io.stdout:write("ready ", NODE, " ", rt:node_addr(), "\n")
io.stdout:flush()
-- Until killed, or closed by a handler (close_runtime): then it exits with 0.
-- (A main chunk's dobj.sleep goes on sleeping when a handler closes the
-- runtime it drives: short sleeps see the close.)
while tostring(rt) ~= "dobj.Runtime(closed)" do dobj.sleep(0.5) end
io.stdout:write("closed\n")
