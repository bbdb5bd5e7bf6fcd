-- Crash safety: a child process increments a durable counter and prints each
-- acknowledged value; it is killed with SIGKILL at random moments.  A new
-- runtime on the same directory finds every acknowledged write, and SQLite
-- finds the database intact.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local HERE = (debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./")
local CPATH = package.cpath

local Counter = {}
Counter.__index = Counter
function Counter:fetch()
  local s = self.ctx.storage
  return dobj.response(tostring(s:get("n") or 0))
end

describe("crash safety", function()
  it("keeps every acknowledged write across SIGKILLs", function()
    local dir = H.tmpdir()
    math.randomseed(os.time())
    local last = 0
    for round = 1, 6 do
      local out = dir .. "/acks-" .. round
      local ms = 40 + math.random(0, 120)
      -- `timeout -s KILL` is the SIGKILL, at a random moment of the run;
      -- --foreground makes timeout wait for the child to be gone (it would
      -- otherwise kill itself too, and the child might still hold the
      -- folder's lock when the next runtime binds).
      os.execute(string.format("LUA_CPATH=%q timeout --foreground -s KILL %.3f lua5.4 %q %q > %q 2>/dev/null",
        CPATH, ms / 1000, HERE .. "crash/child.lua", dir, out))
      local acked = 0
      for line in io.lines(out) do
        acked = tonumber(line) or acked -- a torn last line is not an acknowledgement
      end
      local rt = dobj.runtime { storage = dir }
      local found = tonumber(rt:bind("C", Counter, { unique_key = "crash-key" })
        :get_by_name("c"):fetch("https://c/"):text())
      rt:close()
      assert.is_true(found >= acked, string.format("round %d: acknowledged %d, found %d", round, acked, found))
      assert.is_true(found >= last)
      last = found
    end
    assert.is_true(last > 6, "the children did real work")
    local files = H.sh("ls " .. dir .. "/crash-key/*.sqlite | grep -v metadata")
    assert.are.equal("ok", H.sh("sqlite3 " .. files .. " 'PRAGMA integrity_check'"))
    H.rm_rf(dir)
  end)
end)
