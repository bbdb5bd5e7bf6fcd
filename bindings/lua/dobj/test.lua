--[[
dobj.test: helpers for testing Durable Objects with busted (docs/testing.md).

    local dt = require "dobj.test"
    describe("counter", function()
      local t = dt.setup()            -- a fresh runtime per `it`, checked for leaks after it
      it("counts", function()
        local stub = t.rt:bind("COUNTER", Counter):get_by_name("a")
        ...
      end)
    end)

This file is glue: every rule (what a leak is, how an alarm is run now, in
which order `advance` fires timers, what `reset` drops) is the core's
(core/include/dobj/testkit.h), reached through the C functions in
dobj._testkit (bindings/lua/src/testkit.c).  The same rules serve Python's
pytest plugin.
]]
local dobj = require "dobj"
local kit = dobj._testkit

local M = {}

-- Runtimes made here and the temporary folder each one owns (removed when
-- the runtime is closed with M.close).  Weak: a dropped runtime is collected
-- as usual (its folder then stays: close what you open).
local folders = setmetatable({}, { __mode = "k" })

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

--- A fresh runtime for a test: virtual time on (dobj.sleep, alarms and
-- eviction take no wall-clock time), storage in a new temporary folder
-- removed by M.close, or in memory with `memory = true`.  Other options are
-- dobj.runtime's (`env`, `id_seed`, `idle_timeout`, `storage` = a folder of
-- your own, which M.close leaves in place).
function M.runtime(opts)
  opts = copy(opts)
  if type(opts.memory) ~= "nil" and type(opts.memory) ~= "boolean" then
    error("dobj.test.runtime: memory must be a boolean", 2)
  end
  local memory = opts.memory
  opts.memory = nil
  if opts.virtual_time == nil then opts.virtual_time = true end
  local dir
  if not memory and opts.storage == nil then
    dir = kit.mkdtemp()
    opts.storage = dir
  end
  local ok, rt = pcall(dobj.runtime, opts)
  if not ok then
    if dir then kit.rmtree(dir) end
    error(rt, 2)
  end
  folders[rt] = dir
  return rt
end

--- A Workers project (dobj.load) for a test: `config` (a folder or a
-- wrangler file) and `env` (an environment name) as dobj.load takes them,
-- its state in a new temporary folder (`persist_to`, removed by M.close)
-- instead of the project's .wrangler folder, virtual time on.  Returns the
-- runtime (rt.env, rt.default.fetch, ...); a bad project raises.
function M.project(opts)
  if type(opts) == "string" then opts = { config = opts } end
  opts = copy(opts)
  if opts.virtual_time == nil then opts.virtual_time = true end
  local dir
  if opts.persist_to == nil then
    dir = kit.mkdtemp()
    opts.persist_to = dir
  end
  local ok, rt, err = pcall(dobj.load, opts)
  if not ok or not rt then
    if dir then kit.rmtree(dir) end
    error(ok and err or rt, 2)
  end
  folders[rt] = dir
  return rt
end

--- The temporary folder M.runtime or M.project made for rt's storage
-- (removed by M.close), or nil: in memory, or a folder of the test's own.
function M.folder(rt)
  return folders[rt]
end

--- What the runtime still has open (the core's leak report: unfinished
-- tasks, pending alarms, one per line), or nil when nothing is.
function M.leaks(rt)
  return kit.leaks(rt)
end

--- Close a runtime made by M.runtime or M.project and remove its temporary
-- folder.  Returns nil when nothing leaked, else a message listing what was
-- still open (the runtime is closed all the same).
local function close(rt, who)
  local report = kit.leaks(rt)
  rt:close()
  local dir = folders[rt]
  folders[rt] = nil
  if dir then kit.rmtree(dir) end
  if report then
    return "dobj.test: " .. who .. " left work behind in its runtime: " .. report
  end
  return nil
end

function M.close(rt)
  return close(rt, "the test")
end

--- Run fn(instance, ctx) inside the object of `stub`, as one of its events
-- (after the calls made before it, before those made after it; the instance
-- is constructed first), and return fn's results as they are.  An error
-- raised by fn is raised here (a dobj.Error with the object's ID).
function M.run_in_durable_object(stub, fn)
  local results = kit.run_in(stub, fn)
  return table.unpack(results, 1, results.n)
end

--- Run the object's alarm now if one is scheduled (its handler runs once,
-- as at its time); returns whether one ran.
function M.run_durable_object_alarm(stub)
  return kit.run_alarm(stub)
end

--- The IDs of the namespace's objects that have storage or are live
-- (a list of dobj.Id).
function M.list_durable_object_ids(ns)
  return kit.list_ids(ns)
end

--- Evict the object of `stub` as idleness would: its instance goes, its
-- storage stays.
function M.evict(stub) return kit.evict(stub) end

--- Evict every live object of the runtime.
function M.evict_all(rt) return kit.evict_all(rt) end

--- Abort every live object of the runtime (as ctx:abort(reason) would).
function M.abort_all(rt, reason) return kit.abort_all(rt, reason) end

--- Drop every object of the runtime and its storage and alarms.
function M.reset(rt) return kit.reset(rt) end

--- Move virtual time forward by `seconds`: timers (alarms, their retries,
-- idle eviction, dobj.sleep) fire in time order, each at its own time.
function M.advance(rt, seconds)
  return rt:advance(seconds)
end

-- The per-test fixture made by M.setup --------------------------------------

local Fixture = {}
Fixture.__index = Fixture
Fixture.__name = "dobj.test.Fixture"

local function current(t)
  local rt = rawget(t, "rt")
  if not rt then error("dobj.test: no runtime outside an `it` (the fixture makes one per test)", 3) end
  return rt
end

function Fixture:run_in_durable_object(stub, fn) return M.run_in_durable_object(stub, fn) end
function Fixture:run_durable_object_alarm(stub) return kit.run_alarm(stub) end
function Fixture:list_durable_object_ids(ns) return kit.list_ids(ns) end
function Fixture:evict(stub) return kit.evict(stub) end
function Fixture:evict_all() return kit.evict_all(current(self)) end
function Fixture:abort_all(reason) return kit.abort_all(current(self), reason) end
function Fixture:reset() return kit.reset(current(self)) end
function Fixture:advance(seconds) return current(self):advance(seconds) end
function Fixture:leaks() return kit.leaks(current(self)) end
--- A request to the project's entry (M.setup{ config = ... } only).
function Fixture:fetch(...)
  local rt = current(self)
  if not rt.default then error("dobj.test: fetch() needs a project (setup{ config = ... })", 2) end
  return rt.default.fetch(...)
end

--- Register busted before_each/after_each hooks (call it inside a
-- `describe`): each `it` gets a fresh runtime in `t.rt` (M.runtime(opts),
-- or M.project(opts) when opts.config is set; `t.env` is its env), and after
-- each `it`, passed or failed, the runtime is closed and its folder removed;
-- if it leaked, the test's after_each fails with the list, naming the test.
-- The name of the test busted is running ("describe it"), for leak reports;
-- heard of through busted's test/start event (subscribed once).
local running_test

local function follow_tests(busted)
  if running_test ~= nil then return end
  running_test = false
  busted.subscribe({ "test", "start" }, function(element, parent)
    local name = element and element.name or "?"
    if parent and parent.descriptor == "describe" and parent.name then
      name = parent.name .. " " .. name
    end
    running_test = name
    return nil, true -- let busted's other handlers run
  end)
end

function M.setup(opts)
  opts = copy(opts)
  local make = opts.config and M.project or M.runtime
  local t = setmetatable({}, Fixture)
  -- busted's hooks: globals of the spec file, not of this module; the
  -- running busted's API has them too.
  local busted = require "busted"
  follow_tests(busted)
  busted.before_each(function()
    local rt = make(opts)
    t.rt, t.env = rt, rt.env
  end)
  busted.after_each(function()
    local rt = t.rt
    t.rt, t.env = nil, nil
    if rt then
      local report = close(rt, running_test and string.format("the test %q", running_test) or "the test")
      if report then error(report, 0) end
    end
  end)
  return t
end

return M
