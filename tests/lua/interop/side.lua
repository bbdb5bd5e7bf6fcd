-- The Lua side of the interop check (run by run.py):
--   lua5.4 side.lua write DIR   store every case under DIR (object "from-lua"),
--                               and set an alarm for workerd to fire (object
--                               "alarm-from-lua", 4 s ahead; its time is printed)
--   lua5.4 side.lua read DIR T  read object "from-workerd" and compare, then
--                               fire the alarm workerd set for time T (object
--                               "alarm-from-workerd")
-- Exit status 0 when everything matched; mismatches are printed.
local here = arg[0]:match("^(.*[/\\])") or "./"
local dobj = require "dobj"
local H = dofile(here .. "../helpers.lua")
local cases = dofile(here .. "cases.lua")

local mode, dir = arg[1], arg[2]
local rt = dobj.runtime{ storage = dir }
local C = { __name = "Interop" }
C.__index = C
local result, fired
function C:alarm(info)
  fired = info.scheduled_time
end
function C:fetch(req)
  local s = self.ctx.storage
  local at = req.url:match("/set%-alarm%?at=(%d+)$")
  if at then
    s:set_alarm(tonumber(at))
    return dobj.response("set")
  elseif req.url:find("/get%-alarm") then
    return dobj.response(tostring(s:get_alarm()))
  elseif req.url:find("/write") then
    for _, c in ipairs(cases) do s:put(c[1], c[2]) end
  else
    local bad = {}
    for _, c in ipairs(cases) do
      local ok, v = pcall(s.get, s, c[1])
      if not ok then
        bad[#bad + 1] = c[1] .. ": " .. tostring(v)
      else
        local same, why = H.same_value(c[2], v)
        if not same then bad[#bad + 1] = c[1] .. ": " .. tostring(why) end
      end
    end
    result = bad
  end
  return dobj.response("ok")
end
local ns = rt:bind("NS", C, { unique_key = "interop-key" })
local ok = true
if mode == "write" then
  ns:get_by_name("from-lua"):fetch("https://x/write")
  print("lua wrote " .. #cases .. " values")
  local when = math.floor(rt:now()) + 4000 -- whole ms: workerd's unit
  ns:get_by_name("alarm-from-lua"):fetch(("https://x/set-alarm?at=%d"):format(when))
  print(("lua set an alarm at %d"):format(when))
else
  ns:get_by_name("from-workerd"):fetch("https://x/read")
  for _, b in ipairs(result) do print("MISMATCH (workerd -> lua) " .. b) end
  print(("lua read %d values written by workerd, %d mismatches"):format(#cases, #result))
  local want = tonumber(arg[3])
  local alarm = ns:get_by_name("alarm-from-workerd")
  local seen = alarm:fetch("https://x/get-alarm"):text()
  rt:run() -- until the alarm has run
  local after = alarm:fetch("https://x/get-alarm"):text()
  print(("lua saw the alarm workerd set at %s, fired it at %s, then saw %s"):format(
    seen, tostring(fired), after))
  ok = #result == 0 and tonumber(seen) == want and fired == want and after == "nil"
end
rt:close()
os.exit(ok)
