-- Storage interop with workerd: values written by dobj (Lua) are read by a
-- workerd object on the same localDisk folder, and the other way round, for
-- every type of the mapping (tests/lua/interop/).  Pending when workerd is
-- not installed in bench/.node (make bench installs it).
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"

describe("workerd interop", function()
  it("workerd reads what Lua wrote and Lua reads what workerd wrote, alarms included", function()
    local p = io.popen("python3 " .. here .. "interop/run.py 2>&1; echo \"rc=$?\"")
    local out = p:read("a")
    p:close()
    local rc = tonumber(out:match("rc=(%d+)%s*$"))
    if rc == 77 then
      pending("workerd is not installed (make bench installs it into bench/.node)")
      return
    end
    assert(rc == 0, out)
    assert.matches("workerd read %d+ values written by Lua, 0 mismatches", out)
    assert.matches("lua read %d+ values written by workerd, 0 mismatches", out)
    -- Alarms cross too (workerd dropped the ones dobj set, which its object's
    -- own database did not know of).
    assert.matches("workerd saw the alarm Lua set at (%d+) as %1; fired it", out)
    assert.matches("lua saw the alarm workerd set at (%d+), fired it at %1, then saw nil", out)
  end)
end)
