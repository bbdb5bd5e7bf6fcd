-- A Lua node for the cluster routing tests (tests/lua/cluster_route_spec.lua,
-- tests/python/test_cluster_route.py): serves the ROUTE namespace until it is
-- killed.  Prints "ready NODE_ID NODE_ADDR" once it listens.
--   lua5.4 route_node.lua URL STORAGE NODE_ADDR [NAME...]  (NAMEs: objects it claims first)
local dobj = require "dobj"
local url, storage, addr = arg[1], arg[2], arg[3]
local NODE

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
function Box:echo(...) return { ... } end
function Box:call(name, method, ...)
  local s = self.env.ROUTE:get_by_name(name)
  return s[method](s, ...)
end
function Box:use(stub, method, ...) return stub[method](stub, ...) end -- a stub passed in
function Box:give(name) return self.env.ROUTE:get_by_name(name) end -- a stub as a result
function Box:fetch(req)
  return dobj.response(req.method .. " " .. req.url .. " " .. req.body,
    { status = 201, headers = { ["x-node"] = tostring(NODE) } })
end

local rt = assert(dobj.runtime{ storage = storage, cluster = url, node_addr = addr,
  cluster_ttl = 1.5, cluster_grace = 0.5 })
local ns = rt:bind("ROUTE", Box)
NODE = rt:node_id()
for i = 4, #arg do ns:get_by_name(arg[i]):add(0) end -- objects this node owns from the start
io.stdout:write("ready ", NODE, " ", rt:node_addr(), "\n")
io.stdout:flush()
while true do dobj.sleep(3600) end
