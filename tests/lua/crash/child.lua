-- The writer of crash_spec.lua: increments a durable counter forever and
-- prints each value once its response arrived (so after the commit).  The
-- spec kills this process with SIGKILL at a random moment.
local dobj = require "dobj"
local dir = assert(arg[1], "usage: child.lua DIR")

local Counter = {}
Counter.__index = Counter
function Counter:fetch()
  local s = self.ctx.storage
  local n = (s:get("n") or 0) + 1
  s:put("n", n)
  s:put("filler" .. (n % 50), string.rep("x", 100)) -- commits touch several pages
  return dobj.response(tostring(n))
end

local rt = dobj.runtime { storage = dir }
local stub = rt:bind("C", Counter, { unique_key = "crash-key" }):get_by_name("c")
while true do
  io.write(stub:fetch("https://c/"):text(), "\n")
  io.flush()
end
