-- require "dobj.test": the busted helpers (runtime per test, leak report,
-- run_in_durable_object, run_durable_object_alarm, list_durable_object_ids,
-- evict, evict_all, abort_all, reset, advance, project).
local HERE = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local H = dofile(HERE .. "helpers.lua")
local dobj = H.dobj
local dt = require "dobj.test"

local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  return assert(os.getenv("PWD")) .. "/" .. p
end

local function exists(path)
  return os.execute("test -e '" .. path .. "'") == true
end

-- A class with a counter in storage, an alarm handler that calls
-- C.on_alarm(self, info) and a `log` RPC method.
local function counter_class(name)
  local C = H.class(name or "Counter")
  C.constructed = 0
  function C.new(ctx, env)
    C.constructed = C.constructed + 1
    return setmetatable({ ctx = ctx, env = env, hits = 0 }, C)
  end
  function C:fetch(req)
    self.hits = self.hits + 1
    local n = (self.ctx.storage:get("n") or 0) + 1
    self.ctx.storage:put("n", n)
    return dobj.response(tostring(n))
  end
  function C:alarm(info)
    if C.on_alarm then return C.on_alarm(self, info) end
  end
  return C
end

local function ids_of(list)
  local out = {}
  for i, id in ipairs(list) do out[i] = tostring(id) end
  table.sort(out)
  return out
end

describe("dobj.test.runtime", function()
  it("has virtual time on: an hour of dobj.sleep takes no wall-clock time", function()
    local rt = dt.runtime()
    local C = counter_class()
    local stub = rt:bind("COUNTER", C):get_by_name("a")
    local t0, wall = rt:now(), os.time()
    rt:spawn(function() dobj.sleep(3600) end)
    rt:run()
    assert.is_true(rt:now() - t0 >= 3600 * 1000, "the clock jumped an hour")
    assert.is_true(os.time() - wall <= 1, "in no wall-clock time")
    assert.are.equal("1", stub:fetch("https://a/"):text())
    assert.is_nil(dt.close(rt))
    assert.are.equal("dobj.Runtime(closed)", tostring(rt))
  end)

  -- The folder is the runtime's own (dt.folder): a listing of $TMPDIR before
  -- and after saw the folders other test runs made and removed meanwhile.
  it("puts storage on disk in a folder of its own, removed by close", function()
    local rt = dt.runtime()
    local dir = dt.folder(rt)
    assert.is_string(dir, "a new temporary folder")
    assert.matches("/dobj%-test%-[^/]+$", dir)
    assert.is_true(exists(dir), "made by dt.runtime")
    local stub = rt:bind("COUNTER", counter_class(), { unique_key = "ck" }):get_by_name("a")
    stub:fetch("https://a/")
    assert.is_true(exists(dir .. "/ck/metadata.sqlite"), "the namespace's folder is in it")
    assert.is_nil(dt.close(rt))
    assert.is_false(exists(dir), "removed by close")
  end)

  it("keeps storage in memory with memory = true", function()
    local rt = dt.runtime { memory = true, env = { GREETING = "hi" } }
    assert.is_nil(dt.folder(rt), "no temporary folder")
    assert.are.equal("hi", rt.env.GREETING)
    local stub = rt:bind("COUNTER", counter_class()):get_by_name("a")
    assert.are.equal("1", stub:fetch("https://a/"):text())
    assert.are.equal("2", stub:fetch("https://a/"):text())
    assert.is_nil(dt.close(rt))
  end)

  it("refuses a memory option that is not a boolean", function()
    assert.has_error(function() dt.runtime { memory = "yes" } end,
      "dobj.test.runtime: memory must be a boolean")
  end)
end)

describe("dobj.test leak report", function()
  it("lists pending alarms and unfinished tasks, and closes all the same", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class("Leaky")
    local ns = rt:bind("LEAKY", C)
    local a = ns:get_by_name("a")
    local when = rt:now() + 60000
    dt.run_in_durable_object(a, function(_, ctx) ctx.storage:set_alarm(when) end)
    -- a task that waits for ever (on an hour-long sleep nobody drives)
    rt:spawn(function() dobj.sleep(3600) end)
    rt:process()
    local listed = assert(dt.leaks(rt))
    assert.matches("1 task, 1 alarm", listed, 1, true)
    local report = assert(dt.close(rt))
    assert.matches("dobj.test: the test left work behind in its runtime:", report, 1, true)
    assert.matches("alarm", report, 1, true)
    assert.matches("LEAKY", report, 1, true)
    assert.matches(tostring(a.id), report, 1, true)
    assert.matches("task", report, 1, true)
    assert.are.equal("dobj.Runtime(closed)", tostring(rt))
  end)

  it("is empty when the test finished its work", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class()
    local a = rt:bind("COUNTER", C):get_by_name("a")
    local fired = 0
    C.on_alarm = function() fired = fired + 1 end
    dt.run_in_durable_object(a, function(_, ctx) ctx.storage:set_alarm(rt:now() + 1000) end)
    rt:run()
    assert.are.equal(1, fired)
    assert.is_nil(dt.leaks(rt))
    assert.is_nil(dt.close(rt))
  end)
end)

describe("dobj.test.run_in_durable_object", function()
  it("runs fn(instance, ctx) in the object and returns its results", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class()
    local stub = rt:bind("COUNTER", C):get_by_name("a")
    stub:fetch("https://a/")
    local a, b, c = dt.run_in_durable_object(stub, function(instance, ctx)
      assert.are.equal(C, getmetatable(instance))
      assert.are.equal(stub.id, ctx.id)
      ctx.storage:put("seen", instance.hits)
      return instance.hits, ctx.storage:get("n"), { ok = true }
    end)
    assert.are.equal(1, a)
    assert.are.equal(1, b)
    assert.are.same({ ok = true }, c)
    assert.are.equal(1, C.constructed, "the instance the fetch made")
    assert.are.equal("2", stub:fetch("https://a/"):text())
    assert.are.equal(1, dt.run_in_durable_object(stub, function(_, ctx) return ctx.storage:get("seen") end))
    assert.is_nil(dt.close(rt))
  end)

  it("constructs the object when it is not live yet", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class()
    local stub = rt:bind("COUNTER", C):get_by_name("fresh")
    assert.are.equal(0, dt.run_in_durable_object(stub, function(instance) return instance.hits end))
    assert.are.equal(1, C.constructed)
    assert.is_nil(dt.close(rt))
  end)

  it("raises fn's error in the caller", function()
    local rt = dt.runtime { memory = true }
    local stub = rt:bind("COUNTER", counter_class()):get_by_name("a")
    local err = H.catch(dt.run_in_durable_object, stub, function() error({ message = "no", code = 7 }) end)
    assert.are.equal("no", type(err) == "table" and err.message or err)
    assert.are.equal(7, err.code)
    assert.is_true(err.remote)
    assert.are.equal(tostring(stub.id), err.durable_object_id)
    -- the object lives on
    assert.are.equal("1", stub:fetch("https://a/"):text())
    assert.is_nil(dt.close(rt))
  end)

  it("is delivered in order with the object's other events", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class()
    local log = {}
    function C:note(tag)
      log[#log + 1] = tag
      dobj.sleep(0.01)
    end
    local stub = rt:bind("COUNTER", C):get_by_name("a")
    rt:spawn(function() stub:note("before") end)
    rt:spawn(function()
      dt.run_in_durable_object(stub, function() log[#log + 1] = "run_in" end)
    end)
    rt:spawn(function() stub:note("after") end)
    rt:run()
    assert.are.same({ "before", "run_in", "after" }, log)
    assert.is_nil(dt.close(rt))
  end)

  it("fails with the reason of a ctx:abort() inside fn; a new stub reaches a fresh instance", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class()
    local ns = rt:bind("COUNTER", C)
    local err = H.catch(dt.run_in_durable_object, ns:get_by_name("a"), function(_, ctx)
      ctx:abort("gone")
      error("not reached")
    end)
    assert.are.equal("gone", err.message)
    assert.are.equal("1", ns:get_by_name("a"):fetch("https://a/"):text())
    assert.are.equal(2, C.constructed)
    assert.is_nil(dt.close(rt))
  end)

  it("refuses a native class, with the core's message", function()
    local rt = dt.runtime { memory = true }
    -- examples/native/ratelimit.c, built next to dobj.so (the native_spec way)
    local so = assert(package.searchpath("dobj", package.cpath)):match("^(.*)/") .. "/librate.so"
    local stub = rt:bind_native("LIMITER", so, "RateLimiter"):get_by_name("x")
    assert.has_error(function() dt.run_in_durable_object(stub, function() end) end,
      "a host function cannot run inside an object of the native class RateLimiter")
    assert.is_nil(dt.close(rt))
  end)

  it("is the one helper usable inside an object: the others raise there", function()
    local rt = dt.runtime { memory = true }
    local stub = rt:bind("COUNTER", counter_class()):get_by_name("a")
    assert.has_error(function() dt.run_in_durable_object(stub, function() dt.evict_all(rt) end) end,
      "this test helper cannot be used from inside an object's handler (call it from the test)")
    assert.is_nil(dt.close(rt))
  end)

  it("refuses what is not a stub or a function", function()
    local rt = dt.runtime { memory = true }
    local stub = rt:bind("COUNTER", counter_class()):get_by_name("a")
    assert.has_error(function() dt.run_in_durable_object({}, function() end) end)
    assert.has_error(function() dt.run_in_durable_object(stub, 42) end)
    assert.is_nil(dt.close(rt))
  end)
end)

describe("dobj.test.run_durable_object_alarm", function()
  it("runs a scheduled alarm now, once, and says whether one ran", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class()
    local stub = rt:bind("COUNTER", C):get_by_name("a")
    local got = {}
    C.on_alarm = function(self, info) got[#got + 1] = info end
    assert.is_false(dt.run_durable_object_alarm(stub), "none scheduled")
    local when = rt:now() + 3600 * 1000
    local t0 = rt:now()
    dt.run_in_durable_object(stub, function(_, ctx) ctx.storage:set_alarm(when) end)
    assert.is_true(dt.run_durable_object_alarm(stub))
    assert.are.equal(1, #got)
    assert.are.equal(when, got[1].scheduled_time)
    assert.are.equal(0, got[1].retry_count)
    assert.are.equal(t0, rt:now(), "the clock did not move")
    assert.is_nil(dt.run_in_durable_object(stub, function(_, ctx) return ctx.storage:get_alarm() end))
    assert.is_false(dt.run_durable_object_alarm(stub), "it was removed")
    rt:advance(7200)
    assert.are.equal(1, #got, "and does not fire again at its time")
    assert.is_nil(dt.close(rt))
  end)
end)

describe("dobj.test.run_durable_object_alarm with a failing handler", function()
  it("returns true, reports the failure and leaves the retry on its schedule", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class("Failing")
    local reports = H.capture_errors(finally)
    local t0 = rt:now()
    local runs = {}
    C.on_alarm = function(_, info)
      runs[#runs + 1] = { retry = info.retry_count, at = rt:now() - t0 }
      if info.retry_count == 0 then error("first run fails") end
    end
    local stub = rt:bind("FAILING", C):get_by_name("f")
    dt.run_in_durable_object(stub, function(_, ctx) ctx.storage:set_alarm(t0 + 3600 * 1000) end)
    assert.is_true(dt.run_durable_object_alarm(stub))
    assert.are.equal(1, #reports)
    assert.matches("first run fails", reports[1].message, 1, true)
    assert.are.same({ { retry = 0, at = 0 } }, runs)
    dt.advance(rt, 2.5)                                   -- the retry: 2 s, plus jitter
    assert.are.equal(2, #runs)
    assert.are.equal(1, runs[2].retry)
    assert.is_nil(dt.leaks(rt))
    assert.is_nil(dt.close(rt))
  end)
end)

describe("dobj.test.list_durable_object_ids", function()
  it("lists the IDs with storage or live, and nothing for a fresh namespace", function()
    local rt = dt.runtime()
    local C = counter_class()
    local ns = rt:bind("COUNTER", C)
    local other = rt:bind("OTHER", counter_class("Other"))
    assert.are.same({}, dt.list_durable_object_ids(ns))
    local a, b, c = ns:get_by_name("a"), ns:get_by_name("b"), ns:get_by_name("c")
    a:fetch("https://a/")                                        -- storage, live
    dt.run_in_durable_object(b, function() end)                  -- live only
    dt.run_in_durable_object(c, function(_, ctx) ctx.storage:put("k", 1) end)
    local want = ids_of { a.id, b.id, c.id }
    local got = dt.list_durable_object_ids(ns)
    assert.are.same(want, ids_of(got))
    assert.are.equal("dobj.Id", getmetatable(got[1]).__name)
    assert.are.same({}, dt.list_durable_object_ids(other))
    dt.evict_all(rt)
    assert.are.same(ids_of { a.id, c.id }, ids_of(dt.list_durable_object_ids(ns)),
      "after eviction, those with storage")
    assert.is_nil(dt.close(rt))
  end)
end)

describe("dobj.test.list_durable_object_ids on a folder of your own", function()
  it("lists what an earlier runtime stored there, before anything is live", function()
    local dir = H.tmpdir()
    local rt = dt.runtime { storage = dir }
    local ns = rt:bind("COUNTER", counter_class(), { unique_key = "kept" })
    local a = ns:get_by_name("a")
    a:fetch("https://a/")
    assert.is_nil(dt.close(rt))
    assert.is_true(exists(dir .. "/kept"), "a folder of your own stays")
    local rt2 = dt.runtime { storage = dir }
    local ns2 = rt2:bind("COUNTER", counter_class(), { unique_key = "kept" })
    assert.are.equal(0, ns2:_stats().live)
    assert.are.same({ tostring(a.id) }, ids_of(dt.list_durable_object_ids(ns2)))
    assert.is_nil(dt.close(rt2))
    H.rm_rf(dir)
  end)
end)

describe("dobj.test.evict / evict_all / abort_all / reset", function()
  it("evict drops the instance and keeps the storage", function()
    local rt = dt.runtime()
    local C = counter_class()
    local ns = rt:bind("COUNTER", C)
    local a, b = ns:get_by_name("a"), ns:get_by_name("b")
    a:fetch("https://a/")
    b:fetch("https://b/")
    assert.are.equal(2, ns:_stats().live)
    dt.evict(a)
    assert.are.equal(1, ns:_stats().live)
    assert.are.equal("2", a:fetch("https://a/"):text(), "storage kept; the old stub still works")
    assert.are.equal(3, C.constructed)
    dt.evict_all(rt)
    assert.are.equal(0, ns:_stats().live)
    assert.are.equal("2", b:fetch("https://b/"):text())
    assert.is_nil(dt.close(rt))
  end)

  it("evict refuses an object with an event in flight, naming it", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class()
    function C:slow() dobj.sleep(1) end
    local stub = rt:bind("COUNTER", C):get_by_name("a")
    rt:spawn(function() stub:slow() end)
    rt:process()
    local err = H.catch(dt.evict, stub)
    assert.matches(tostring(stub.id), tostring(err), 1, true)
    rt:run()
    assert.is_true(dt.evict(stub), "idle now")
    assert.is_false(dt.evict(stub), "not live any more")
    assert.is_nil(dt.close(rt))
  end)

  it("abort_all resets every live object; a new stub reaches a fresh instance", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class()
    local ns = rt:bind("COUNTER", C)
    local a = ns:get_by_name("a")
    a:fetch("https://a/")
    dt.abort_all(rt, "stop")
    local err = H.catch(a.fetch, a, "https://a/")
    assert.are.equal("stop", err.message)
    assert.are.equal("2", ns:get_by_name("a"):fetch("https://a/"):text())
    assert.are.equal(2, C.constructed)
    local b = ns:get_by_name("a")
    b:fetch("https://a/")                                 -- bound to the live instance
    assert.are.equal(1, dt.abort_all(rt))
    assert.are.equal("Application called abort() to reset Durable Object.",
      H.catch(b.fetch, b, "https://a/").message, "workerd's reason by default")
    assert.is_nil(dt.close(rt))
  end)

  for _, memory in ipairs { false, true } do
    it("reset drops every object, its storage and its alarms (memory = " .. tostring(memory) .. ")", function()
      local rt = dt.runtime { memory = memory }
      local C = counter_class()
      local fired = 0
      C.on_alarm = function() fired = fired + 1 end
      local ns = rt:bind("COUNTER", C)
      local a = ns:get_by_name("a")
      a:fetch("https://a/")
      dt.run_in_durable_object(a, function(_, ctx) ctx.storage:set_alarm(rt:now() + 1000) end)
      dt.reset(rt)
      assert.are.same({}, dt.list_durable_object_ids(ns))
      assert.is_nil(dt.leaks(rt), "no alarm left")
      rt:advance(10)
      assert.are.equal(0, fired)
      assert.are.equal("1", ns:get_by_name("a"):fetch("https://a/"):text(), "storage dropped")
      assert.is_nil(dt.close(rt))
    end)
  end
end)

describe("dobj.test.advance", function()
  it("fires alarms and idle eviction in time order, each at its own time", function()
    local rt = dt.runtime { memory = true, idle_timeout = 10 }
    local idle = rt:bind("IDLE", counter_class("Idle"))
    local C = counter_class("Timed")
    local timed = rt:bind("TIMED", C)
    local t0 = rt:now()
    local log = {}
    C.on_alarm = function(self, info)
      log[#log + 1] = { at = rt:now() - t0, idle_live = idle:_stats().live }
      if #log == 1 then self.ctx.storage:set_alarm(t0 + 20000) end
    end
    idle:get_by_name("x"):fetch("https://x/")       -- idle from t0: evicted at t0 + 10 s
    local stub = timed:get_by_name("t")
    dt.run_in_durable_object(stub, function(_, ctx) ctx.storage:set_alarm(t0 + 5000) end)
    dt.advance(rt, 60)
    assert.are.same({ { at = 5000, idle_live = 1 }, { at = 20000, idle_live = 0 } }, log)
    assert.are.equal(60000, rt:now() - t0)
    assert.is_nil(dt.close(rt))
  end)

  it("refuses an infinite or NaN time (an alarm that re-arms itself never let it end)", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class("Ticker")
    local runs = 0
    C.on_alarm = function(self)
      runs = runs + 1
      self.ctx.storage:set_alarm(rt:now() + 1000)
    end
    local stub = rt:bind("TICKER", C):get_by_name("t")
    dt.run_in_durable_object(stub, function(_, ctx) ctx.storage:set_alarm(rt:now() + 1000) end)
    local before = rt:now()
    assert.has_error(function() dt.advance(rt, math.huge) end, "a delay must be a finite number")
    assert.has_error(function() dt.advance(rt, 0 / 0) end, "a delay must be a finite number")
    assert.are.equal(before, rt:now())
    dt.advance(rt, 3.5)
    assert.are.equal(3, runs)
    dt.reset(rt)
    assert.is_nil(dt.close(rt))
  end)

  it("runs an alarm's retries without wall-clock time", function()
    local rt = dt.runtime { memory = true }
    local C = counter_class("Flaky")
    local reports = H.capture_errors(finally)
    local t0, wall = rt:now(), os.time()
    local runs = {}
    C.on_alarm = function(self, info)
      runs[#runs + 1] = { retry = info.retry_count, at = rt:now() - t0 }
      if info.retry_count < 2 then error("not yet") end
      self.ctx.storage:put("done", true)
    end
    local stub = rt:bind("FLAKY", C):get_by_name("f")
    dt.run_in_durable_object(stub, function(_, ctx) ctx.storage:set_alarm(t0 + 1000) end)
    dt.advance(rt, 30)
    assert.are.equal(3, #runs)
    assert.are.same({ 0, 1, 2 }, { runs[1].retry, runs[2].retry, runs[3].retry })
    assert.are.equal(1000, runs[1].at)
    -- the first retry after 2 s, the second 4 s later (plus up to 25 % jitter)
    assert.is_true(runs[2].at >= 3000 and runs[2].at <= 3500, tostring(runs[2].at))
    assert.is_true(runs[3].at - runs[2].at >= 4000 and runs[3].at - runs[2].at <= 5000)
    assert.are.equal(2, #reports)
    assert.is_true(dt.run_in_durable_object(stub, function(_, ctx) return ctx.storage:get("done") end))
    assert.is_true(os.time() - wall <= 1, "no wall-clock time")
    assert.is_nil(dt.close(rt))
  end)
end)

describe("dobj.test.project", function()
  local EXAMPLE = absolute(HERE .. "../../examples/workers/lua-counter")

  it("loads a Workers project with its state in a temporary folder", function()
    local rt = dt.project { config = EXAMPLE, env = "staging" }
    assert.are.equal("hello from staging", rt.env.GREETING)
    assert.are.equal("1", rt.default.fetch("https://example.com/alice"):text())
    assert.are.equal("2", rt.default.fetch("https://example.com/alice"):text())
    local state = rt.config.state_dir
    assert.is_nil(state:find(EXAMPLE, 1, true), "not in the project's folder: " .. state)
    assert.is_true(exists(state))
    assert.is_nil(dt.close(rt))
    assert.is_false(exists(state), "removed by close")
    -- a second project starts from nothing
    local rt2 = dt.project(EXAMPLE)
    assert.are.equal("1", rt2.default.fetch("https://example.com/alice"):text())
    assert.is_nil(dt.close(rt2))
  end)

  it("raises for a bad project", function()
    assert.has_error(function() dt.project { config = "/nonexistent/dobj-project" } end)
  end)
end)

describe("dobj.test.setup", function()
  local t = dt.setup { memory = true }
  local seen = {}

  it("gives each test a runtime of its own", function()
    assert.are.equal("dobj.Runtime(open)", tostring(t.rt))
    seen[1] = t.rt
    local stub = t.rt:bind("COUNTER", counter_class()):get_by_name("a")
    assert.are.equal("1", stub:fetch("https://a/"):text())
  end)

  it("(the next test gets a new one; the last was closed)", function()
    assert.are_not.equal(seen[1], t.rt)
    assert.are.equal("dobj.Runtime(closed)", tostring(seen[1]))
    local ns = t.rt:bind("COUNTER", counter_class())
    assert.are.same({}, t:list_durable_object_ids(ns))
    assert.are.equal("1", ns:get_by_name("a"):fetch("https://a/"):text())
    t:advance(1)
  end)
end)

describe("dobj.test.setup with a project", function()
  local t = dt.setup { config = absolute(HERE .. "../../examples/workers/lua-counter") }

  for round = 1, 2 do
    it("gives each test the project from empty storage (" .. round .. ")", function()
      assert.are.equal("hello", t.env.GREETING)
      assert.are.equal("1", t:fetch("https://example.com/bob"):text())
      assert.are.equal("2", t:fetch("https://example.com/bob"):text())
    end)
  end
end)

describe("dobj.test.setup in a busted run", function()
  -- tests/lua/testkit/leaky.lua: its first test sets an alarm and an
  -- unfinished task, then fails on purpose; its second sees nothing of them.
  it("reports the leak of a failing test and the next test starts clean", function()
    local out = H.sh(string.format("cd %q && busted --lua=lua5.4 -o TAP %q 2>&1",
      absolute(HERE), absolute(HERE .. "testkit/leaky.lua")))
    assert.matches("not ok 1 %- leaky sets an alarm and fails on purpose", out)
    assert.matches("failed on purpose", out, 1, true)
    -- the leak, reported by the fixture's after_each right after that test
    assert.matches("not ok 2 %- leaky after_each", out)
    assert.matches('dobj.test: the test "leaky sets an alarm and fails on purpose" left work behind in its runtime:',
      out, 1, true)
    assert.matches("alarm on LEAKY", out, 1, true)
    assert.matches("1 task, 1 alarm", out, 1, true)
    assert.matches("\nok 3 %- leaky sees nothing of the test before", out)
    assert.matches("1..3", out, 1, true)
  end)
end)

describe("docs/testing.md's Lua example", function()
  it("passes (examples/testing/reminder_spec.lua)", function()
    local example = absolute(HERE .. "../../examples/testing/reminder_spec.lua")
    local out = H.sh(string.format("cd %q && busted --lua=lua5.4 -o TAP %q 2>&1; echo \"exit $?\"",
      absolute(HERE), example))
    assert.matches("ok 1 %- Reminder retries a failed delivery", out)
    assert.matches("ok 2 %- Reminder runs a scheduled alarm now", out)
    assert.is_nil(out:find("not ok", 1, true), out)
    assert.matches("exit 0$", out)
  end)

  it("is the file docs/testing.md shows", function()
    local function read(path)
      local f = assert(io.open(path))
      local text = f:read("a")
      f:close()
      return text
    end
    local docs = read(absolute(HERE .. "../../docs/testing.md"))
    local example = read(absolute(HERE .. "../../examples/testing/reminder_spec.lua"))
    local shown = docs:match("## Lua: busted helpers.-```lua\n(.-)```")
    assert.are.equal(example:sub((example:find("local dobj = require", 1, true))), shown)
  end)
end)
