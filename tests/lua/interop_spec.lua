-- Storage interop with workerd: values written by dobj (Lua) are read by a
-- workerd object on the same localDisk folder, and the other way round, for
-- every type of the mapping (tests/lua/interop/).  Pending when workerd is
-- not installed in bench/.node (make bench installs it).
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"

describe("workerd interop", function()
  it("workerd reads what Lua wrote and Lua reads what workerd wrote", function()
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
  end)
end)
