-- The entry of the lua-counter example: GET /<name> reaches the Counter
-- named <name>, which counts the requests it got, in its storage.
local dobj = require "dobj"

local Counter = {}
Counter.__index = Counter

function Counter:fetch(request)
  local n = (self.ctx.storage:get("count") or 0) + 1
  self.ctx.storage:put("count", n) -- committed before the response leaves
  return dobj.response(tostring(n), { headers = { ["content-type"] = "text/plain" } })
end

local function fetch(request, env, ctx)
  local name = request.url:match("^[%a][%w+.-]*://[^/]*/([^?#]*)") or ""
  if name == "" then name = "default" end
  return env.COUNTER:get_by_name(name):fetch(request)
end

return { fetch = fetch, Counter = Counter }
