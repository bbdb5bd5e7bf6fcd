-- The native rate limiter (examples/native/ratelimit.c, built as librate.so)
-- used from Lua: a Lua object in front of it calls it over RPC, and the
-- script calls it directly.  Run from the repository root after a build:
--
--   LUA_CPATH="build/?.so;;" lua5.4 examples/native/demo.lua [path/to/librate.so]
local dobj = require "dobj"

-- librate.so sits next to dobj.so in the build directory.
local here = assert(package.searchpath("dobj", package.cpath), "dobj.so not on LUA_CPATH")
local library = arg[1] or os.getenv("DOBJ_RATE_LIBRARY") or here:gsub("[^/]*$", "") .. "librate.so"

-- A Lua class in front of the limiter: one bucket per user.
local Api = {}; Api.__index = Api; Api.__name = "Api"
function Api:fetch(request)
  local user = request.headers["x-user"] or "anonymous"
  local bucket = self.env.LIMITER:get_by_name(user)
  if not bucket:take(1) then
    return dobj.response("slow down, " .. user, { status = 429 })
  end
  return dobj.response(("hello %s (%.0f left)"):format(user, bucket:remaining()))
end

local dir = os.tmpname(); os.remove(dir) -- storage directory for the durable part

local function runtime()
  local rt = dobj.runtime { virtual_time = true, storage = dir }
  rt:bind_native("LIMITER", library, "RateLimiter", { unique_key = "demo-limits" })
  rt:bind("API", Api)
  return rt
end

local rt = runtime()
local api = rt.env.API:get_by_name("front")

-- Configure one user's bucket from the script: 3 requests, 1 more per second.
rt.env.LIMITER:get_by_name("ada"):configure(3, 1)

print("-- four requests in a row")
for _ = 1, 4 do
  local res = api:fetch("https://api.example/", { headers = { ["x-user"] = "ada" } })
  print(res.status, res:text())
end

print("-- two seconds later (virtual time)")
rt:advance(2)
print(rt.env.LIMITER:get_by_name("ada"):remaining() .. " tokens")
print(api:fetch("https://api.example/", { headers = { ["x-user"] = "ada" } }):text())

print("-- the limiter's own fetch handler")
local res = rt.env.LIMITER:get_by_name("bob"):fetch("https://limiter/", { method = "POST" })
print(res.status, res.headers["content-type"], res:text())

print("-- a new runtime on the same storage sees the buckets")
rt:close()
rt = runtime()
print(("ada has %.0f tokens after a restart"):format(rt.env.LIMITER:get_by_name("ada"):remaining()))
rt:close()

print("-- errors from C reach Lua")
local ok, err = pcall(function() return runtime().env.LIMITER:get_by_name("x"):take(-1) end)
print(ok, err.message, err.remote)

os.execute("rm -rf '" .. dir .. "'")
