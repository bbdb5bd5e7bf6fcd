-- The entry dev_spec.lua drives over HTTP:
--   /count/NAME  the Counter named NAME counts (in its storage) and answers the count
--   /slow/NAME   prints "slow request started", waits 0.3 s, then counts as /count
--   /echo...     answers the request as seen: url, method, headers, then the body
--   /later       answers at once; its ctx:wait_until work prints "background done" 1 s later
--   /boom        raises
--   /cookies     answers two set-cookie headers
--   /badheader   answers a header value with CR LF in it (set after the response was made:
--                dobj.response itself refuses one)
local dobj = require "dobj"

local Counter = {}
Counter.__index = Counter

function Counter:fetch(request)
  local n = (self.ctx.storage:get("count") or 0) + 1
  self.ctx.storage:put("count", n)
  return dobj.response(tostring(n), { headers = { ["content-type"] = "text/plain" } })
end

local function echo(request)
  local names = {}
  for k in pairs(request.headers) do names[#names + 1] = k end
  table.sort(names)
  local lines = { "url=" .. request.url, "method=" .. request.method }
  for _, k in ipairs(names) do lines[#lines + 1] = k .. ": " .. request.headers[k] end
  return dobj.response(table.concat(lines, "\n") .. "\n\n" .. request.body,
    { headers = { ["x-body-length"] = tostring(#request.body), ["content-length"] = "1" } })
end

local function fetch(request, env, ctx)
  local path = request.url:match("^https?://[^/]*(/[^?]*)")
  if path == "/later" then
    ctx:wait_until(function()
      dobj.sleep(1)
      print("background done")
    end)
    return dobj.response("queued")
  end
  local name = path:match("^/count/(.+)$")
  if name then return env.COUNTER:get_by_name(name):fetch(request) end
  name = path:match("^/slow/(.+)$")
  if name then
    print("slow request started")
    dobj.sleep(0.3)
    return env.COUNTER:get_by_name(name):fetch(request)
  end
  if path == "/echo" then return echo(request) end
  if path == "/boom" then error("boom from the entry") end
  if path == "/cookies" then
    return dobj.response("two cookies", { headers = {
      ["Set-Cookie"] = { "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2" } } })
  end
  if path == "/badheader" then
    local r = dobj.response("bad")
    r.headers["x-bad"] = "a\r\nInjected: yes" -- a plain table: changed after the rules ran
    return r
  end
  return dobj.response("not found", { status = 404 })
end

return { fetch = fetch, Counter = Counter }
