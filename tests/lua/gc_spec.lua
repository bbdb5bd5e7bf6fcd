-- Collection: runtimes, namespaces, stubs, instances and the cycles between
-- them are freed by Lua's collector; __gc and __close run.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local function full_gc()
  for _ = 1, 4 do collectgarbage("collect") end
end

-- A class whose instances report their collection through `flags`, and
-- which makes a cycle: instance -> env -> namespace -> runtime -> instance.
local function tracked_class(flags)
  local T = H.class("Tracked")
  T.__gc = function(self) flags[self.tag] = true end
  function T.new(ctx, env)
    return setmetatable({ ctx = ctx, env = env, tag = "instance" }, T)
  end
  function T:fetch()
    self.self_stub = self.env.T:get(self.ctx.id) -- another cycle through a stub
    return dobj.response("ok")
  end
  return T
end

describe("garbage collection", function()
  it("frees a dropped runtime with its instances (__gc runs)", function()
    full_gc()
    local before = dobj._stats().runtimes
    local flags = {}
    do
      local rt = H.runtime { env = { keep = {} } }
      local ns = rt:bind("T", tracked_class(flags))
      assert.are.equal("ok", ns:get_by_name("x"):fetch("https://t/"):text())
      assert.are.equal(before + 1, dobj._stats().runtimes)
    end
    full_gc()
    assert.is_true(flags.instance)
    assert.are.equal(before, dobj._stats().runtimes)
  end)

  it("keeps the runtime while a stub is alive", function()
    full_gc()
    local before = dobj._stats().runtimes
    local flags = {}
    local stub
    do
      local rt = H.runtime()
      stub = rt:bind("T", tracked_class(flags)):get_by_name("x")
    end
    full_gc()
    assert.are.equal(before + 1, dobj._stats().runtimes)
    assert.are.equal("ok", stub:fetch("https://t/"):text())
    stub = nil
    full_gc()
    assert.is_true(flags.instance)
    assert.are.equal(before, dobj._stats().runtimes)
  end)

  it("frees runtimes with suspended tasks and sleeping handlers", function()
    full_gc()
    local before = dobj._stats().runtimes
    for _ = 1, 20 do
      local rt = H.runtime()
      local Sleepy = H.class("Sleepy")
      function Sleepy:fetch() dobj.sleep(100); return dobj.response("late") end
      local stub = rt:bind("S", Sleepy):get_by_name("s")
      rt:spawn(function() stub:fetch("https://s/") end)
      rt:spawn(function() dobj.sleep(100) end)
      dobj.sleep(0.001) -- runs the tasks until they sleep
    end
    full_gc()
    assert.are.equal(before, dobj._stats().runtimes)
  end)

  it("closes a runtime with <close> and frees its instances", function()
    local flags = {}
    local stub
    do
      local rt <close> = H.runtime()
      stub = rt:bind("T", tracked_class(flags)):get_by_name("x")
      stub:fetch("https://t/")
    end
    full_gc()
    assert.is_true(flags.instance)
    local err = H.catch(stub.fetch, stub, "https://t/")
    assert.are.equal("the runtime is closed", err.message)
  end)

  it("fails pending calls when the runtime closes", function()
    local rt = H.runtime()
    local Sleepy = H.class("Sleepy")
    function Sleepy:fetch() dobj.sleep(10); return dobj.response("late") end
    local stub = rt:bind("S", Sleepy):get_by_name("s")
    local resumed = false
    rt:spawn(function() pcall(stub.fetch, stub, "https://s/"); resumed = true end)
    dobj.sleep(0.001)
    rt:close()
    -- Every unfinished task failed with the runtime: the caller task too, so
    -- it never resumes; later calls fail at once.
    rt:run()
    assert.is_false(resumed)
    local err = H.catch(stub.fetch, stub, "https://s/")
    assert.are.equal("the runtime is closed", err.message)
    assert.has_error(function() rt:spawn(function() end) end)
  end)

  it("closes a stub with <close>", function()
    local rt = H.runtime()
    local ns = rt:bind("E", H.Echo)
    local kept
    do
      local stub <close> = ns:get_by_name("e")
      kept = stub
      assert.matches("^GET", stub:fetch("https://e/"):text())
    end
    assert.has_error(function() kept:fetch("https://e/") end, nil)
    assert.are.equal("dobj.Stub(closed)", tostring(kept))
  end)

  it("does not grow memory over many round trips", function()
    local rt = H.runtime()
    local stub = rt:bind("E", H.Echo):get_by_name("e")
    for _ = 1, 2000 do stub:fetch("https://e/") end
    full_gc()
    local base = collectgarbage("count")
    for _ = 1, 20000 do stub:fetch("https://e/", { headers = { a = "b" } }) end
    full_gc()
    assert.is_true(collectgarbage("count") < base + 64, "memory grew by " .. (collectgarbage("count") - base) .. " KiB")
  end)

  it("frees many short-lived runtimes", function()
    full_gc()
    local before = dobj._stats().runtimes
    for i = 1, 200 do
      local rt = H.runtime()
      rt:bind("E", H.Echo):get_by_name(tostring(i)):fetch("https://e/")
    end
    full_gc()
    assert.are.equal(before, dobj._stats().runtimes)
  end)

  it("lets go of each finished call's error while a task goes on calling (rt:process)", function()
    -- rt:process runs what is ready until nothing is: a task that keeps
    -- calling another object never lets it return.  What each call let go
    -- of (here the error value its handler raised) used to be released only
    -- then, so such a task grew with every call.
    local alive = setmetatable({}, { __mode = "k" })
    local Failing = H.class("Failing")
    function Failing.new() return setmetatable({}, Failing) end
    function Failing:fetch()
      local e = setmetatable({}, { __tostring = function() return "no" end })
      alive[e] = true
      error(e)
    end
    local rt = H.runtime()
    local stub = rt:bind("F", Failing):get_by_name("f")
    local kept
    rt:spawn(function()
      for _ = 1, 300 do assert(not pcall(stub.fetch, stub, "https://f/")) end
      full_gc()
      kept = 0
      for _ in pairs(alive) do kept = kept + 1 end
    end)
    rt:process()
    assert.is_true(kept ~= nil and kept <= 2, "errors kept: " .. tostring(kept))
    rt:close()
  end)
end)
