-- rt:close() from a handler of a cluster node, mid-call, after its own write
-- (whose append is out on the node's connection): the caller hears a clear
-- error, the acknowledged write is kept, nothing is used after it is freed
-- (ASan: make sanitize).  (Python: test_cluster_hostile.py, with a routed
-- call waiting too.)
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local RT = {}
local Closer = H.class("Closer")
function Closer.new(ctx) return setmetatable({ ctx = ctx }, Closer) end
function Closer:add(n)
  local v = (self.ctx.storage:get("n") or 0) + (n or 1)
  self.ctx.storage:put("n", v)
  return v
end
function Closer:close_runtime(key)
  self.ctx.storage:put("n", 99) -- its append is out when the runtime closes
  RT[key]:close()
  return "closed"
end

describe("rt:close() from a cluster handler", function()
  local pg, dirs
  setup(function() pg = H.postgres() end)
  teardown(function() if pg then pg.stop() end end)
  before_each(function() dirs = {} end)
  after_each(function()
    collectgarbage()
    collectgarbage()
    for _, d in ipairs(dirs) do H.rm_rf(d) end
  end)

  local function node(key)
    local d = H.tmpdir()
    dirs[#dirs + 1] = d
    local rt = assert(dobj.runtime{ storage = d, cluster = pg.url, node_addr = "127.0.0.1:0",
      cluster_ttl = 1.5, cluster_grace = 0.5 })
    RT[key] = rt
    return rt, rt:bind("CLOSER", Closer)
  end

  it("after the handler's own write: the caller gets an error, the write before stays", function()
    local a, nsa = node("a")
    assert.are.equal(1, nsa:get_by_name("own"):add())
    local err = H.catch(function() return nsa:get_by_name("own"):close_runtime("a") end)
    assert.matches("the runtime is closed", type(err) == "table" and err.message or tostring(err))
    assert.are.equal("dobj.Runtime(closed)", tostring(a))
    local _, nsb = node("b")
    local n = nsb:get_by_name("own"):add(0)
    assert.is_true(n == 1 or n == 99, tostring(n)) -- its write was never acknowledged
    RT.b:close()
  end)
end)
