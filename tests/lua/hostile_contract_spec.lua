-- The host contract attacked as a hostile user would: hooks and handlers
-- that re-enter the runtime, close it or fail.  Each case crashed or hung.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

describe("a dobj.on_error handler", function()
  local previous
  after_each(function() dobj.on_error(previous) end)

  -- A class whose fetch starts background work that fails.
  local function failing_background()
    local C = H.class("Bg")
    function C.new(ctx) return setmetatable({ ctx = ctx }, C) end
    function C:fetch()
      self.ctx:wait_until(function() error("background failure") end)
      return dobj.response("started")
    end
    return C
  end

  it("may close the runtime (it ran on the anchor thread and corrupted it: SIGSEGV)", function()
    local rt = H.runtime()
    local ns = rt:bind("BG", failing_background())
    local seen
    previous = dobj.on_error(function(err)
      seen = err.message
      rt:close()
    end)
    local stub = ns:get_by_name("a")
    assert.are.equal("started", stub:fetch("https://x/"):text())
    rt:run()
    assert.matches("background failure", seen)
    local ok, err = pcall(stub.fetch, stub, "https://x/")
    assert.is_false(ok)
    assert.are.equal("the runtime is closed", err.message)
  end)

  it("may make stubs and IDs of the runtime (values anchored while it runs)", function()
    local rt = H.runtime()
    local ns = rt:bind("BG", failing_background())
    local made = {}
    previous = dobj.on_error(function()
      for i = 1, 50 do made[#made + 1] = ns:get_by_name("n" .. i) end
    end)
    ns:get_by_name("a"):fetch("https://x/")
    rt:run()
    assert.are.equal(50, #made)
    -- The runtime's own values are where they were: calls still work.
    assert.are.equal("started", made[50]:fetch("https://x/"):text())
    rt:run()
    rt:close()
  end)
end)

describe("ctx:abort where the handler's coroutine cannot be ended", function()
  -- It returned normally there, and the object's code went on after abort.
  local function run_case(setup)
    local rt = H.runtime()
    local after = {}
    local C = H.class("Aborts")
    function C.new(ctx)
      local self = setmetatable({ ctx = ctx }, C)
      if setup == "constructor" then
        ctx:abort("from a constructor")
        after[#after + 1] = "constructor"
      end
      return self
    end
    function C:fetch()
      local ctx = self.ctx
      if setup == "comparator" then
        table.sort({ 1, 2, 3 }, function(a, b) ctx:abort("from a comparator"); return a < b end)
        after[#after + 1] = "comparator"
      elseif setup == "coroutine" then
        coroutine.wrap(function()
          ctx:abort("from a nested coroutine")
          after[#after + 1] = "inner coroutine"
        end)()
        after[#after + 1] = "handler"
      end
      return dobj.response("not aborted")
    end
    local ok, err = pcall(function() return rt:bind("A", C):get_by_name("a"):fetch("https://a/") end)
    rt:run()
    rt:close()
    return ok, err, after
  end

  for _, case in ipairs({ "constructor", "comparator", "coroutine" }) do
    it("stops the object's code in a " .. case, function()
      local ok, err, after = run_case(case)
      assert.is_false(ok)
      assert.matches("^from a", type(err) == "table" and err.message or tostring(err))
      assert.are.same({}, after)
    end)
  end
end)
