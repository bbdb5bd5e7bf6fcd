-- One side of `make bench` for Lua: the dobj module (LUA_CPATH=build/?.so).
--
-- Reads "OP N" lines on stdin, runs OP N times and answers "ok -" (Lua has
-- no wall clock finer than a second: bench/run.py times each line from
-- outside, a pipe round trip of some microseconds) or "error MESSAGE";
-- "hex" answers the ID of the name "x".  Ops: id_from_name, id_from_string,
-- new_unique_id, fetch_main (stub:fetch from the main chunk) and fetch_task
-- (stub:fetch inside an rt:spawn task, then rt:run()).

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
    if ok3 then say("ok", "-") else say("error", (tostring(e):gsub("%s+", " "))) end
  else
    say("error", "bad command " .. line)
  end
end
