-- One side of `make bench` for Lua: the dobj module (LUA_CPATH=build/?.so).
--
-- Reads "OP N" lines on stdin, runs OP N times and answers "ok -" (Lua has
-- no wall clock finer than a second: bench/run.py times each line from
-- outside, a pipe round trip of some microseconds) or "error MESSAGE";
-- "hex" answers the ID of the name "x".  Ops: id_from_name, id_from_string,
-- new_unique_id, fetch_main (stub:fetch from the main chunk) and fetch_task
-- (stub:fetch inside an rt:spawn task, then rt:run()).
--
-- Storage and RPC ops answer "ok SECONDS", timed with rt:now() (whole ms;
-- the runs last 0.1 s and more), because some do untimed preparation first:
--   store_put N / store_get N   one stub:fetch whose handler does N
--                               ctx.storage:put / :get of keys "k0".."k<N-1>"
--                               (store_get writes them first, untimed)
--   store_inc N                 N sequential fetches that read "n", add one,
--                               write it and reply (after the commit)
--   store_inc_rpc N             the same by RPC: stub:inc()
--   rpc_add N                   N sequential stub:add(5) from the main chunk
--   native_add N                N stub:add(5) on a native class (the bench's
--                               build/libbench_native.so, $DOBJ_BENCH_NATIVE)
--   native_take N               N stub:take(1) on the rate limiter
--                               (build/librate.so, $DOBJ_BENCH_RATE)
-- Storage lives under $DOBJ_BENCH_STORE (made and removed by run.py).  A
-- feature missing from this build (RPC, bind_native) answers
-- "error n/a: ..." for its ops.

local function say(...)
  io.write(table.concat({ ... }, " "), "\n")
  io.flush()
end

local ok, dobj = pcall(require, "dobj")
if not ok then
  say("error", (tostring(dobj):gsub("%s+", " ")))
  return
end

local Bench = {}
Bench.__index = Bench
function Bench.new(ctx, env)
  return setmetatable({ ctx = ctx, env = env }, Bench)
end
local calls = 0 -- every fetch must reach the handler
function Bench:fetch(request)
  calls = calls + 1
  return dobj.response("ok")
end

-- Storage and RPC classes.
local Store = {}
Store.__index = Store
function Store.new(ctx, env)
  return setmetatable({ ctx = ctx, env = env }, Store)
end
local function store_op(self, op, n)
  local st = self.ctx.storage
  if op == "put" then
    for i = 0, n - 1 do st:put("k" .. i, i) end
    return n
  elseif op == "get" then
    local sum = 0
    for i = 0, n - 1 do sum = sum + st:get("k" .. i) end
    return sum
  elseif op == "inc" then
    local v = (st:get("n") or 0) + 1
    st:put("n", v)
    return v
  end
  error("unknown op " .. tostring(op))
end
function Store:fetch(request)
  local op, n = request.url:match("^https://x/(%a+)%?(%d+)$")
  return dobj.response(tostring(store_op(self, op, tonumber(n))))
end
function Store:inc() -- RPC
  return store_op(self, "inc", 0)
end

local Adder = {}
Adder.__index = Adder
function Adder.new(ctx, env)
  return setmetatable({ ctx = ctx, env = env, n = 0 }, Adder)
end
function Adder:add(x) -- RPC
  self.n = self.n + x
  return self.n
end

local ops, hex_x
local setup_ok, setup_err = pcall(function()
  local rt = dobj.runtime {}
  local ns = rt:bind("B", Bench, { unique_key = "bench-key" })
  local stub = ns:get_by_name("bench")
  hex_x = tostring(ns:id_from_name("x"))

  local function check(res, before, n)
    if res.status ~= 200 or res:text() ~= "ok" then
      error("unexpected response " .. tostring(res.status))
    end
    if calls - before ~= n + 1 then
      error(("%d calls reached the handler, expected %d"):format(calls - before, n + 1))
    end
  end

  ops = {
    id_from_name = function(n)
      for _ = 1, n do ns:id_from_name("x") end
    end,
    id_from_string = function(n)
      for _ = 1, n do ns:id_from_string(hex_x) end
    end,
    new_unique_id = function(n)
      for _ = 1, n do ns:new_unique_id() end
    end,
    fetch_main = function(n)
      local before = calls
      for _ = 1, n do stub:fetch("https://x/") end
      check(stub:fetch("https://x/"), before, n)
    end,
    fetch_task = function(n)
      local done, err = false, nil
      rt:spawn(function()
        local ok2, e = pcall(function()
          local before = calls
          for _ = 1, n do stub:fetch("https://x/") end
          check(stub:fetch("https://x/"), before, n)
        end)
        done, err = ok2, e
      end)
      rt:run()
      if not done then error(err or "task did not finish") end
    end,
  }

  -- ------------------------------------------------ storage and RPC ops
  local function na(what, e)
    error("n/a: " .. what .. ": " .. (tostring(e):gsub("%s+", " ")):sub(1, 200), 0)
  end
  local function timed(clock_rt, fn)
    local t0 = clock_rt:now()
    fn()
    return (clock_rt:now() - t0) / 1000
  end
  local function number_of(res)
    if res.status ~= 200 then error("status " .. tostring(res.status) .. ": " .. res:text()) end
    return tonumber(res:text())
  end

  local srt, sstub, sinc
  local function store()
    if not srt then
      local dir = os.getenv("DOBJ_BENCH_STORE")
      if not dir or dir == "" then error("DOBJ_BENCH_STORE is not set", 0) end
      srt = dobj.runtime { storage = dir, idle_timeout = false }
      local sns = srt:bind("STORE", Store, { unique_key = "bench-store" })
      sstub, sinc = sns:get_by_name("bench"), sns:get_by_name("inc")
    end
    return srt
  end
  ops.store_put = function(n)
    local r = store()
    local got
    local t = timed(r, function() got = number_of(sstub:fetch("https://x/put?" .. n)) end)
    if got ~= n then error("store_put: handler answered " .. tostring(got)) end
    return t
  end
  ops.store_get = function(n)
    local r = store()
    number_of(sstub:fetch("https://x/put?" .. n)) -- the keys, untimed
    local sum
    local t = timed(r, function() sum = number_of(sstub:fetch("https://x/get?" .. n)) end)
    if sum ~= n * (n - 1) // 2 then error("store_get: wrong sum " .. tostring(sum)) end
    return t
  end
  ops.store_inc = function(n)
    local r = store()
    local first = number_of(sinc:fetch("https://x/inc?0"))
    local last
    local t = timed(r, function()
      for _ = 1, n do last = number_of(sinc:fetch("https://x/inc?0")) end
    end)
    if last ~= first + n then error("store_inc: counter went from " .. first .. " to " .. tostring(last)) end
    return t
  end
  ops.store_inc_rpc = function(n)
    local r = store()
    local ok4, first = pcall(function() return sinc:inc() end)
    if not ok4 then na("RPC (stub:inc())", first) end
    local last
    local t = timed(r, function()
      for _ = 1, n do last = sinc:inc() end
    end)
    if last ~= first + n then error("store_inc_rpc: counter went from " .. first .. " to " .. tostring(last)) end
    return t
  end

  local astub = rt:bind("ADDER", Adder, { unique_key = "bench-rpc" }):get_by_name("bench")
  ops.rpc_add = function(n)
    local ok4, first = pcall(function() return astub:add(5) end)
    if not ok4 then na("RPC (stub:add(5))", first) end
    local total
    local t = timed(rt, function()
      for _ = 1, n do total = astub:add(5) end
    end)
    if total ~= first + 5 * n then error("rpc_add: wrong total " .. tostring(total)) end
    return t
  end

  local nstubs = {}
  local function native(envname, class, binding)
    if not nstubs[envname] then
      local path = os.getenv(envname)
      if not path or path == "" then error("n/a: " .. envname .. " is not set", 0) end
      local ok4, ns_or_err = pcall(function()
        return rt:bind_native(binding, path, class, { unique_key = "bench-" .. binding:lower() })
      end)
      if not ok4 then na("rt:bind_native", ns_or_err) end
      nstubs[envname] = ns_or_err:get_by_name("bench")
    end
    return nstubs[envname]
  end
  ops.native_add = function(n)
    local stub = native("DOBJ_BENCH_NATIVE", "Adder", "NADDER")
    local ok4, first = pcall(function() return stub:add(5) end)
    if not ok4 then na("RPC on a native class (stub:add(5))", first) end
    local total
    local t = timed(rt, function()
      for _ = 1, n do total = stub:add(5) end
    end)
    if total ~= first + 5 * n then error("native_add: wrong total " .. tostring(total)) end
    return t
  end
  ops.native_take = function(n)
    local stub = native("DOBJ_BENCH_RATE", "RateLimiter", "LIMITER")
    local ok4, e = pcall(function() return stub:configure(1e12, 1e12) end)
    if not ok4 then na("RPC on a native class (stub:configure())", e) end
    return timed(rt, function()
      for _ = 1, n do stub:take(1) end
    end)
  end
end)
if not setup_ok then
  say("error", (tostring(setup_err):gsub("%s+", " ")))
  return
end

say("ready")
for line in io.lines() do
  local op, n = line:match("^(%S+)%s+(%d+)%s*$")
  if line:match("^hex%s*$") then
    say("ok", hex_x)
  elseif op and ops[op] then
    local ok3, e = pcall(ops[op], tonumber(n))
    if not ok3 then
      say("error", (tostring(e):gsub("%s+", " ")))
    elseif type(e) == "number" then
      say("ok", ("%.9f"):format(e))
    else
      say("ok", "-")
    end
  else
    say("error", "bad command " .. line)
  end
end
