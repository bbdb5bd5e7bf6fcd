-- Run by test_helpers_spec.lua as a busted run of its own (not a *_spec
-- file, so the suite does not run it directly): the first test leaves an
-- alarm and an unfinished task behind and fails on purpose; the second must
-- see nothing of them.
local dobj = require "dobj"
local dt = require "dobj.test"

local fired = 0
local Leaky = { __name = "LeakyAlarm" }
Leaky.__index = Leaky
function Leaky:fetch() return dobj.response(tostring(self.ctx.storage:get("n"))) end
function Leaky:alarm() fired = fired + 1 end

describe("leaky", function()
  local t = dt.setup()

  it("sets an alarm and fails on purpose", function()
    local stub = t.rt:bind("LEAKY", Leaky, { unique_key = "leaky" }):get_by_name("a")
    t:run_in_durable_object(stub, function(_, ctx)
      ctx.storage:put("n", 1)
      ctx.storage:set_alarm(t.rt:now() + 1000)
    end)
    t.rt:spawn(function() dobj.sleep(3600) end)
    t.rt:process()
    error("failed on purpose")
  end)

  it("sees nothing of the test before", function()
    local ns = t.rt:bind("LEAKY", Leaky, { unique_key = "leaky" })
    assert.are.same({}, t:list_durable_object_ids(ns))
    t:advance(3600)
    assert.are.equal(0, fired)
    assert.are.equal("nil", ns:get_by_name("a"):fetch("https://a/"):text())
    assert.is_nil(t:leaks())
  end)
end)
