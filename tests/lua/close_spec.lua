-- Closing a runtime from inside its own code (a handler, a constructor, an
-- alarm): the caller hears "the runtime is closed", nothing is used after it
-- is freed (these crashed or read freed memory under ASan before).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

-- A runtime and a class whose handlers run `body(rt, self)`.
local function closing_class(body, ctor)
  local rt = H.runtime()
  local C = H.class("Closer")
  function C.new(ctx, env)
    if ctor then ctor(rt) end
    return setmetatable({ ctx = ctx }, C)
  end
  function C:fetch() return body(rt, self) or dobj.response("still here") end
  function C:method() return body(rt, self) or "still here" end
  function C:alarm() body(rt, self) end
  return rt, rt:bind("CLOSER", C)
end

local function closed_message(f, ...)
  local err = H.catch(f, ...)
  return type(err) == "table" and err.message or tostring(err)
end

describe("rt:close() from inside the runtime", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  it("in a fetch handler: the caller gets an error, the runtime is closed", function()
    local rt, ns = closing_class(function(rt) rt:close() end)
    local stub = ns:get_by_name("a")
    assert.are.equal("the runtime is closed", closed_message(stub.fetch, stub, "https://a/"))
    assert.are.equal("dobj.Runtime(closed)", tostring(rt))
    assert.matches("the runtime is closed", closed_message(rt.bind, rt, "OTHER", H.class("Other")))
  end)

  it("by calling its __gc by hand in a handler: closed now, freed by the collector", function()
    local rt, ns = closing_class(function(rt) getmetatable(rt).__gc(rt) end)
    local stub = ns:get_by_name("a")
    assert.are.equal("the runtime is closed", closed_message(stub.fetch, stub, "https://a/"))
    assert.are.equal("dobj.Runtime(closed)", tostring(rt))
    local before = dobj._stats().runtimes
    rt, ns, stub = nil, nil, nil
    collectgarbage()
    collectgarbage()
    assert.are.equal(before - 1, dobj._stats().runtimes)
  end)

  it("in an RPC method", function()
    local _, ns = closing_class(function(rt) rt:close() end)
    local stub = ns:get_by_name("a")
    assert.are.equal("the runtime is closed", closed_message(function() return stub:method() end))
  end)

  it("in a constructor", function()
    local _, ns = closing_class(function() end, function(rt) rt:close() end)
    local stub = ns:get_by_name("a")
    assert.are.equal("the runtime is closed", closed_message(stub.fetch, stub, "https://a/"))
  end)

  it("in a handler that goes on using storage and sleep after closing", function()
    local _, ns = closing_class(function(rt, self)
      rt:close()
      pcall(self.ctx.storage.put, self.ctx.storage, "k", 1)
      pcall(dobj.sleep, 1)
      collectgarbage()
    end)
    local stub = ns:get_by_name("a")
    assert.are.equal("the runtime is closed", closed_message(stub.fetch, stub, "https://a/"))
  end)

  it("inside block_concurrency_while", function()
    local _, ns = closing_class(function(rt, self)
      return self.ctx:block_concurrency_while(function() rt:close(); return "done" end)
    end)
    local stub = ns:get_by_name("a")
    assert.are.equal("the runtime is closed", closed_message(function() return stub:method() end))
  end)

  it("in an object called by another object", function()
    local rt = H.runtime()
    local Inner = H.class("Inner")
    function Inner:method() rt:close(); return 1 end
    local inner = rt:bind("INNER", Inner)
    local Outer = H.class("Outer")
    function Outer:method() return inner:get_by_name("i"):method() end
    local stub = rt:bind("OUTER", Outer):get_by_name("o")
    assert.are.equal("the runtime is closed", closed_message(function() return stub:method() end))
  end)

  it("in an alarm handler, also one that set its next alarm first", function()
    for _, rearm in ipairs({ false, true }) do
      local rt = H.runtime()
      local C = H.class("AlarmCloser")
      function C.new(ctx) return setmetatable({ ctx = ctx }, C) end
      function C:fetch()
        self.ctx.storage:set_alarm(rt:now() + 10)
        return dobj.response("armed")
      end
      function C:alarm()
        if rearm then self.ctx.storage:set_alarm(rt:now() + 1000) end
        rt:close()
      end
      local stub = rt:bind("ALARMCLOSER", C):get_by_name("a")
      assert.are.equal("armed", stub:fetch("https://a/"):text())
      rt:advance(100)
      assert.are.equal("dobj.Runtime(closed)", tostring(rt))
    end
  end)
end)

describe("a serving loop in the main chunk", function()
  it("ends when a handler closes the runtime: dobj.sleep returns, rt:closed() says so", function()
    local rt = H.runtime{ virtual_time = false } -- real time: the sleep must end, not jump
    local C = H.class("Stopper")
    function C.new(ctx) return setmetatable({ ctx = ctx }, C) end
    function C:stop() rt:close() return "bye" end
    local ns = rt:bind("STOPPER", C)
    assert.is_false(rt:closed())
    -- A task that asks the object to stop the runtime a little later, as
    -- a shutdown request from another node or client would.
    rt:spawn(function()
      dobj.sleep(0.05)
      pcall(function() return ns:get_by_name("x"):stop() end)
    end)
    local t0, rounds = os.time(), 0
    while not rt:closed() do
      dobj.sleep(60)
      rounds = rounds + 1
      assert.is_true(rounds < 3, "dobj.sleep kept sleeping after the runtime closed")
    end
    assert.is_true(os.time() - t0 < 10)
    assert.is_true(rt:closed())
  end)
end)
