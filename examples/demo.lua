-- dobj demo in Lua: two classes, objects calling objects, tasks, errors, IDs.
local dobj = require "dobj"

local Counter = {}
Counter.__index = Counter
function Counter.new(ctx, env)
  return setmetatable({ ctx = ctx, env = env, n = 0 }, Counter)
end
function Counter:fetch(request)
  if request.method == "POST" then self.n = self.n + 1 end
  return dobj.response(tostring(self.n), { status = 200, headers = { ["content-type"] = "text/plain" } })
end

local Greeter = {}
Greeter.__index = Greeter
function Greeter:fetch(request)
  local counter = self.env.COUNTER:get_by_name("visits")
  local visits = counter:fetch("https://counter/inc", { method = "POST" }):text()
  if request.url:match("/fail$") then error("the greeter was asked to fail") end
  dobj.sleep(0.001) -- suspends this handler only
  return dobj.response(self.env.GREETING .. ", visit " .. visits)
end

local rt = dobj.runtime { env = { GREETING = "hello from Lua" } }
local counter = rt:bind("COUNTER", Counter, { unique_key = "counter" })
local greeter = rt:bind("GREETER", Greeter)

local foo = counter:id_from_name("foo")
print("id_from_name('foo')     = " .. tostring(foo))
print("same id from its string = " .. tostring(counter:id_from_string(tostring(foo)) == foo))
print("new_unique_id()         = " .. tostring(counter:new_unique_id()))
print("id_from_string('nope')  -> " .. select(2, counter:id_from_string("nope")))

local stub = counter:get(foo)
local res
for _ = 1, 3 do res = stub:fetch("https://counter/inc", { method = "POST" }) end
print("counter 'foo' after 3 POSTs: " .. res.status .. " " .. res:text())

-- Tasks: 100 concurrent calls from spawned coroutines arrive in order.
local seen = {}
for i = 1, 100 do
  rt:spawn(function() seen[i] = stub:fetch("https://counter/inc", { method = "POST" }):text() end)
end
rt:run()
print("100 concurrent POSTs, last count: " .. seen[100])

local alice = greeter:get_by_name("alice")
print("greeter: " .. alice:fetch("https://greeter/"):text())
local ok, err = pcall(alice.fetch, alice, "https://greeter/fail")
print("remote error: " .. tostring(err) .. " (remote=" .. tostring(err.remote) ..
  ", id=" .. err.durable_object_id:sub(1, 16) .. "...)")
