-- A Durable Object tested with busted and dobj.test (docs/testing.md):
--   LUA_PATH="build/?.lua;;" LUA_CPATH="build/?.so;;" busted --lua=lua5.4 examples/testing/reminder_spec.lua
-- A reminder sends its text when its alarm fires; a failed delivery raises,
-- so the alarm is retried (2 s, then 4 s later, plus jitter) until it gets through.
local dobj = require "dobj"
local dt = require "dobj.test"

local Reminder = { __name = "Reminder" }
Reminder.__index = Reminder
Reminder.deliver = function(text, info) return true end  -- replaced by the tests

function Reminder:remind_at(when, text)                   -- an RPC method
  self.ctx.storage:put("text", text)
  self.ctx.storage:set_alarm(when)
end

function Reminder:alarm(info)
  if not Reminder.deliver(self.ctx.storage:get("text"), info) then
    error("delivery failed")                              -- the alarm is retried
  end
  self.ctx.storage:put("sent_after", info.retry_count + 1)
end

describe("Reminder", function()
  local t = dt.setup()  -- per test: a fresh runtime, virtual time, its own storage folder

  it("retries a failed delivery until it gets through, in no wall-clock time", function()
    local tries = {}
    Reminder.deliver = function(text, info)
      tries[#tries + 1] = { text = text, retry = info.retry_count }
      return #tries == 3                                  -- the third try gets through
    end
    local failures = 0
    local previous = dobj.on_error(function() failures = failures + 1 end)
    finally(function() dobj.on_error(previous) end)

    local stub = t.rt:bind("REMINDER", Reminder):get_by_name("ada")
    stub:remind_at(t.rt:now() + 60 * 1000, "call Bob")
    t:advance(59)
    assert.are.equal(0, #tries)                           -- never early
    t:advance(1 + (2 + 4) * 1.25)                         -- its time, then both retries
    assert.are.same({ 0, 1, 2 }, { tries[1].retry, tries[2].retry, tries[3].retry })
    assert.are.equal("call Bob", tries[3].text)
    assert.are.equal(2, failures)
    assert.are.equal(3, t:run_in_durable_object(stub, function(instance, ctx)
      return ctx.storage:get("sent_after")
    end))
  end)

  it("runs a scheduled alarm now", function()
    local sent = 0
    Reminder.deliver = function() sent = sent + 1; return true end
    local stub = t.rt:bind("REMINDER", Reminder):get_by_name("ada")
    assert.are.same({}, t:list_durable_object_ids(t.env.REMINDER))  -- nothing from the last test
    stub:remind_at(t.rt:now() + 24 * 3600 * 1000, "tomorrow")
    assert.is_true(t:run_durable_object_alarm(stub))
    assert.are.equal(1, sent)
    assert.is_false(t:run_durable_object_alarm(stub))    -- it ran and is gone
  end)
end)
