-- The Lua side of the interop check (run by run.py):
--   lua5.4 side.lua write DIR   store every case under DIR (object "from-lua")
--   lua5.4 side.lua read DIR    read object "from-workerd" and compare
-- Exit status 0 when everything matched; mismatches are printed.
local here = arg[0]:match("^(.*[/\\])") or "./"
local dobj = require "dobj"
local H = dofile(here .. "../helpers.lua")
local cases = dofile(here .. "cases.lua")

local mode, dir = arg[1], arg[2]
local rt = dobj.runtime{ storage = dir }
local C = { __name = "Interop" }
C.__index = C
local result
function C:fetch(req)
  local s = self.ctx.storage
  if req.url:find("/write") then
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
if mode == "write" then
  ns:get_by_name("from-lua"):fetch("https://x/write")
  print("lua wrote " .. #cases .. " values")
else
  ns:get_by_name("from-workerd"):fetch("https://x/read")
  for _, b in ipairs(result) do print("MISMATCH (workerd -> lua) " .. b) end
  print(("lua read %d values written by workerd, %d mismatches"):format(#cases, #result))
end
rt:close()
os.exit(mode == "write" or #result == 0)
