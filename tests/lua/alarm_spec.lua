-- Alarms: set/get/delete, the alarm(info) handler, retries with backoff,
-- never early, persistence across runtimes.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local function fixture(opts)
  local rt = H.runtime(opts)
  local C = H.job_class("Alarmed")
  local ns = rt:bind("ALARMED", C, { unique_key = "alarmed" })
  return rt, ns:get_by_name("a"), C, ns
end

describe("alarms", function()
  it("set_alarm needs an alarm() handler, with workerd's message", function()
    local rt = H.runtime()
    local C = H.job_class("NoAlarm")
    C.alarm = nil
    local s = rt:bind("NOALARM", C):get_by_name("x")
    assert.are.equal("Your Durable Object class must have an alarm() handler in order to call setAlarm()",
      H.job_error(s, function(st) st:set_alarm(os.time() * 1000) end))
  end)

  it("get_alarm returns what was set; delete_alarm clears it", function()
    local rt, a = fixture()
    local when = rt:now() + 60000
    assert.are.equal(when, H.job(a, function(s) s:set_alarm(when); return s:get_alarm() end))
    assert.are.equal(when, H.job(a, function(s) return s:get_alarm() end))
    assert.is_nil(H.job(a, function(s) s:delete_alarm(); return s:get_alarm() end))
  end)

  it("accepts a dobj.date and refuses times <= 0", function()
    local rt, a = fixture()
    local when = rt:now() + 1000
    assert.are.equal(when, H.job(a, function(s) s:set_alarm(dobj.date(when)); return s:get_alarm() end))
    assert.matches("setAlarm%(%) cannot be called with an alarm time <= 0",
      H.job_error(a, function(s) s:set_alarm(0) end))
    -- Beyond int64 nanoseconds (2262; JS dates go on to 275760): refused as
    -- workerd refuses them, not accepted and lost on restart.
    assert.matches("This API doesn't support dates after 2189.",
      H.job_error(a, function(s) s:set_alarm(8.64e15) end), nil, true)
    assert.matches("not a valid Date", H.job_error(a, function(s) s:set_alarm(0 / 0) end))
    assert.matches("not a valid Date", H.job_error(a, function(s) s:set_alarm(math.huge) end))
    assert.matches("number expected", H.job_error(a, function(s) s:set_alarm("soon") end))
  end)

  it("fires from rt:run() with scheduled_time, retry_count and is_retry, never early", function()
    local rt, a, C = fixture()
    local when = rt:now() + 5000
    local got = {}
    C.on_alarm = function(self, info)
      got[#got + 1] = { info = info, now = rt:now(), inside = self.ctx.storage:get_alarm() }
      self.ctx.storage:put("fired", true)
    end
    H.job(a, function(s) s:set_alarm(when) end)
    rt:run()
    assert.are.equal(1, #got)
    assert.are.same({ scheduled_time = when, retry_count = 0, is_retry = false }, got[1].info)
    assert.is_true(got[1].now >= when, "never early")
    assert.is_nil(got[1].inside, "get_alarm() is nil inside the handler")
    assert.is_true(H.job(a, function(s) return s:get("fired") end))
    assert.is_nil(H.job(a, function(s) return s:get_alarm() end), "a successful alarm is cleared")
  end)

  it("an alarm set again inside the handler shows in get_alarm and fires again", function()
    local rt, a, C = fixture()
    local runs, inside = 0, nil
    C.on_alarm = function(self, info)
      runs = runs + 1
      if runs == 1 then
        self.ctx.storage:set_alarm(info.scheduled_time + 1000)
        inside = self.ctx.storage:get_alarm()
      end
    end
    local when = rt:now() + 100
    H.job(a, function(s) s:set_alarm(when) end)
    rt:run()
    assert.are.equal(2, runs)
    assert.are.equal(when + 1000, inside)
  end)

  it("a failing handler is retried after 2, 4, 8, 16, 32, 64 s (+ up to 25 %), then dropped", function()
    local rt, a, C = fixture()
    local runs = {}
    C.on_alarm = function(self, info)
      runs[#runs + 1] = { at = rt:now(), retry = info.retry_count, is_retry = info.is_retry,
        scheduled = info.scheduled_time }
      error("alarm failed")
    end
    local when = rt:now() + 1000
    H.job(a, function(s) s:set_alarm(when) end)
    local reported = H.capture_errors(finally)
    rt:run()
    assert.are.equal(7, #runs)
    -- Each failed run goes to dobj.on_error, as workerd logs each one.
    assert.are.equal(7, #reported)
    for i, r in ipairs(reported) do
      assert.are.same({ kind = "alarm", class = "Alarmed", id = tostring(a.id), retry_count = i - 1 },
        r.info)
      assert.matches("alarm failed", r.message)
    end
    for i, r in ipairs(runs) do
      assert.are.equal(i - 1, r.retry)
      assert.are.equal(i > 1, r.is_retry)
      assert.are.equal(when, r.scheduled)
      if i > 1 then
        local gap, base = (r.at - runs[i - 1].at) / 1000, 2 ^ (i - 1)
        assert(gap >= base - 0.01 and gap <= base * 1.25 + 0.01,
          ("retry %d came after %.3f s, expected %d..%g s"):format(i - 1, gap, base, base * 1.25))
      end
    end
    assert.is_nil(H.job(a, function(s) return s:get_alarm() end), "dropped after 6 retries")
  end)

  it("a handler that succeeds on a retry stops the retries", function()
    local rt, a, C = fixture()
    local runs = 0
    C.on_alarm = function() runs = runs + 1; if runs < 3 then error("not yet", 0) end end
    H.job(a, function(s) s:set_alarm(rt:now() + 10) end)
    local reported = H.capture_errors(finally)
    rt:run()
    assert.are.equal(3, runs)
    -- the two failed runs were reported, the successful one was not
    assert.are.equal(2, #reported)
    for i, r in ipairs(reported) do
      assert.are.equal("not yet", r.message)
      assert.are.equal(tostring(a.id), r.err.durable_object_id)
      assert.are.same({ kind = "alarm", class = "Alarmed", id = tostring(a.id), retry_count = i - 1 },
        r.info)
    end
  end)

  it("a deleted alarm does not fire", function()
    local rt, a, C = fixture()
    local runs = 0
    C.on_alarm = function() runs = runs + 1 end
    H.job(a, function(s) s:set_alarm(rt:now() + 1000) end)
    H.job(a, function(s) s:delete_alarm() end)
    rt:run()
    assert.are.equal(0, runs)
  end)

  it("deleted or moved after it came due but before its handler began: not run (as workerd)", function()
    local rt, a, C = fixture()
    local runs = {}
    C.on_alarm = function(_, info) runs[#runs + 1] = info.scheduled_time end
    -- The alarm comes due while block_concurrency_while holds the gate: its
    -- call waits, and the block deletes the alarm before it can begin.
    H.job(a, function(s, ctx)
      ctx:block_concurrency_while(function()
        s:set_alarm(rt:now() + 10)
        dobj.sleep(0.05)
        s:delete_alarm()
      end)
    end)
    rt:run()
    assert.are.same({}, runs)
    local moved
    H.job(a, function(s, ctx)
      ctx:block_concurrency_while(function()
        s:set_alarm(rt:now() + 10)
        dobj.sleep(0.05)
        moved = rt:now() + 1000
        s:set_alarm(moved)
      end)
    end)
    rt:run()
    assert.are.same({ moved }, runs)
  end)

  it("a time in the past fires as soon as the runtime runs", function()
    local rt, a, C = fixture()
    local info
    C.on_alarm = function(_, i) info = i end
    H.job(a, function(s) s:set_alarm(1000) end)
    -- As workerd: kept as given, and read back until the handler has begun.
    local ran, got = H.job(a, function(s) return info ~= nil, s:get_alarm() end)
    assert.are.same({ false, 1000 }, { ran, got })
    rt:run()
    assert.are.equal(1000, info.scheduled_time)
    assert.is_nil(H.job(a, function(s) return s:get_alarm() end))
  end)

  it("reaches a class whose instance has no alarm method through the class", function()
    local rt = H.runtime()
    local C = H.class("ClassAlarm")
    local fired = false
    function C:fetch() self.ctx.storage:set_alarm(rt:now() + 5); return dobj.response("ok") end
    function C.alarm(self, info) fired = info.retry_count == 0 end
    rt:bind("CA", C):get_by_name("x"):fetch("https://x/")
    rt:run()
    assert.is_true(fired)
  end)
end)

describe("alarms on disk", function()
  it("are stored in metadata.sqlite as _cf_ALARM (ns since the epoch)", function()
    local dir = H.tmpdir()
    local rt, a = fixture({ storage = dir })
    local when = 1893456000000 -- 2030-01-01
    H.job(a, function(s) s:set_alarm(when) end)
    local id = tostring(a.id)
    rt:close()
    local row = H.sh(("sqlite3 %s/alarmed/metadata.sqlite \"SELECT actor_id, scheduled_time, actor_name FROM _cf_ALARM\""):format(dir))
    assert.are.equal(id .. "|" .. string.format("%d", when * 1000000) .. "|a", row)
    H.rm_rf(dir)
  end)

  it("survive a restart and fire in the next runtime", function()
    local dir = H.tmpdir()
    local rt, a = fixture({ storage = dir })
    local when = rt:now() + 30000.123456 -- a fractional ms, stored as int64 ns
    H.job(a, function(s) s:set_alarm(when) end)
    rt:close()
    local rt2, a2, C2 = fixture({ storage = dir })
    local got
    C2.on_alarm = function(self, info) got = info end
    -- Reloaded from ns since the epoch, finer than a double's ulp for any
    -- date after 1970-04: the very double that was set.
    assert.are.equal(when, H.job(a2, function(s) return s:get_alarm() end))
    rt2:run()
    assert.are.equal(when, got.scheduled_time)
    rt2:close()
    H.rm_rf(dir)
  end)

  it("an alarm only in the object's record (schedule row deleted) fires once the object runs", function()
    -- As workerd: the object's _cf_METADATA is the truth, so what get_alarm
    -- reports also fires; the first storage use puts it back on the schedule.
    local dir = H.tmpdir()
    local rt, a = fixture({ storage = dir })
    local when = rt:now() + 60000
    H.job(a, function(s) s:set_alarm(when) end)
    rt:close()
    local meta = dir .. "/alarmed/metadata.sqlite"
    H.sh("sqlite3 " .. meta .. " 'DELETE FROM _cf_ALARM'")
    local rt2, a2, C2 = fixture({ storage = dir })
    local got
    C2.on_alarm = function(_, info) got = info end
    assert.are.equal(when, H.job(a2, function(s) return s:get_alarm() end))
    assert.are.equal(string.format("%d", math.floor(when)),
      H.sh("sqlite3 " .. meta .. " 'SELECT scheduled_time / 1000000 FROM _cf_ALARM'"))
    rt2:advance(61)
    assert.are.equal(when, got and got.scheduled_time)
    rt2:close()
    H.rm_rf(dir)
  end)

  it("an alarm already due when a runtime starts fires (workerd #3138)", function()
    local dir = H.tmpdir()
    local rt, a = fixture({ storage = dir })
    H.job(a, function(s) s:set_alarm(rt:now() + 1) end)
    rt:close() -- never ran its timers
    local deadline = os.clock() + 0.01
    repeat until os.clock() > deadline
    local rt2, _, C2 = fixture({ storage = dir })
    local fired = 0
    C2.on_alarm = function() fired = fired + 1 end
    rt2:run()
    assert.are.equal(1, fired)
    rt2:close()
    -- ... and only once: a third runtime finds nothing to run
    local rt3, _, C3 = fixture({ storage = dir })
    C3.on_alarm = function() fired = fired + 1 end
    rt3:run()
    assert.are.equal(1, fired)
    rt3:close()
    H.rm_rf(dir)
  end)

  it("a retry pending at shutdown runs again in the next runtime (at least once)", function()
    local dir = H.tmpdir()
    local rt, a, C = fixture({ storage = dir })
    C.on_alarm = function() error("fails in the first runtime", 0) end
    H.job(a, function(s) s:set_alarm(rt:now() + 1) end)
    local reported = H.capture_errors(finally)
    rt:advance(0.5)
    assert.are.equal(1, #reported)
    assert.are.equal("fails in the first runtime", reported[1].message)
    assert.are.equal(0, reported[1].info.retry_count)
    rt:close()
    local rt2, _, C2 = fixture({ storage = dir })
    local fired = 0
    C2.on_alarm = function() fired = fired + 1 end
    rt2:run()
    assert.are.equal(1, fired)
    rt2:close()
    H.rm_rf(dir)
  end)
end)
