-- Hostile input to the binding: NUL bytes in names and paths, user code
-- (metamethods, finalizers) running while the binding is in the middle of
-- something.  Each case crashed, leaked or silently did the wrong thing.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local function message(f, ...)
  local err = H.catch(f, ...)
  return type(err) == "table" and err.message or tostring(err)
end

describe("NUL bytes", function()
  it("are refused in binding names (q\\0one and q\\0two would be one namespace)", function()
    local rt = H.runtime()
    assert.matches("binding name must not contain a NUL byte",
      message(rt.bind, rt, "q\0one", H.class("Q")))
    local kinds = assert(package.searchpath("dobj", package.cpath)):gsub("[^/]*$", "") ..
      "libdobjtest_kinds.so"
    assert.matches("binding name must not contain a NUL byte",
      message(rt.bind_native, rt, "q\0two", kinds, "Kinds"))
    assert.is_nil(rt.env.q)
  end)

  it("are refused in the storage directory (it would be cut at the NUL)", function()
    assert.matches("storage directory must not contain a NUL byte",
      message(dobj.runtime, { storage = os.tmpname() .. "\0/elsewhere" }))
  end)

  it("are refused in a native library's path and class name", function()
    local rt = H.runtime()
    assert.matches("library path must not contain a NUL byte",
      message(rt.bind_native, rt, "N", "librate.so\0.txt", "Rate"))
    assert.matches("class name must not contain a NUL byte",
      message(rt.bind_native, rt, "N", "librate.so", "Rate\0x"))
  end)
end)

describe("an empty storage directory", function()
  it("is refused (it put the namespaces' folders at the filesystem's root)", function()
    assert.matches("the storage directory must not be empty", message(dobj.runtime, { storage = "" }))
  end)
end)

describe("user code inside the binding", function()
  it("an error from a class's __index during bind leaves the runtime usable", function()
    local rt = H.runtime()
    local Bad = setmetatable({}, { __index = function(_, k)
      if k == "alarm" then error("no alarms here", 0) end
    end })
    assert.are.equal("no alarms here", message(rt.bind, rt, "BAD", Bad))
    assert.is_nil(rt.env.BAD)
    local Good = H.class("Good")
    function Good:fetch() return dobj.response("good") end
    assert.are.equal("good", rt:bind("BAD", Good):get_by_name("g"):fetch("https://g/"):text())
  end)
end)

-- Run call() while objects with finalizers are pending, the collector set to
-- run at nearly every allocation, until one finalizer has run `action`
-- inside the call.  Returns pcall's results.
local function finalizer_inside(call, action)
  collectgarbage("incremental", 1, 1000, 0)
  for _ = 1, 100 do
    local inside, fired = false, false
    for _ = 1, 200 do
      setmetatable({}, { __gc = function()
        if inside and not fired then
          fired = true
          action()
        end
      end })
    end
    inside = true
    local res = table.pack(pcall(call))
    inside = false
    if fired then
      collectgarbage("incremental", 200, 100, 13)
      return table.unpack(res, 1, res.n)
    end
  end
  collectgarbage("incremental", 200, 100, 13)
  error("no finalizer ran inside the call")
end

-- A value whose decoding allocates many times.
local function big_value(tag)
  local t = {}
  for i = 1, 150 do t[i] = { tag = tag, i = i, s = string.rep("v", i % 50), nested = { i, { i } } } end
  return t
end

describe("rt.env with a metatable of the script's", function()
  it("cannot fail a bind half-way or hide a binding", function()
    local rt = H.runtime()
    setmetatable(rt.env, {
      __newindex = function() error("no new keys", 0) end,
      __index = function() return "not a namespace" end,
    })
    local C = H.class("EnvTest")
    function C:fetch() return dobj.response("bound") end
    local ns = rt:bind("A", C)
    assert.are.equal(ns, rawget(rt.env, "A"))
    assert.matches("already bound as A", message(rt.bind, rt, "A", C))
    assert.are.equal("bound", ns:get_by_name("x"):fetch("https://x/"):text())
  end)
end)

describe("a stub closed while its call is in flight", function()
  it("by the called object: the caller still gets the result or the error", function()
    local rt = H.runtime()
    local stub
    local function close_stub() local s <close> = stub end -- closed at the block's end
    local C = H.class("StubCloser")
    function C:fetch() close_stub(); return dobj.response("fetched") end
    function C:method() close_stub(); return "returned" end
    function C:fail() close_stub(); error("failed on purpose", 0) end
    local ns = rt:bind("STUBCLOSER", C)
    stub = ns:get_by_name("a")
    assert.are.equal("fetched", stub:fetch("https://a/"):text())
    stub = ns:get_by_name("b")
    assert.are.equal("returned", stub:method())
    stub = ns:get_by_name("c")
    assert.are.equal("failed on purpose", message(function() return stub:fail() end))
    -- the same from inside another object (the waiting coroutine path)
    local Caller = H.class("Caller")
    function Caller:fetch()
      stub = ns:get_by_name("d")
      local err = message(function() return stub:fail() end)
      return dobj.response(err)
    end
    assert.are.equal("failed on purpose", rt:bind("CALLER", Caller):get_by_name("x"):fetch("https://x/"):text())
    assert.matches("the stub is closed", message(stub.fetch, stub, "https://a/"))
  end)
end)

describe("finalizers running inside storage and SQL calls", function()
  -- Run test(storage, rt) inside an object's handler; its failures are the
  -- test's (the call itself may fail: the runtime may be closed).
  local function in_object(test)
    local rt = H.runtime()
    local result
    local C = H.class("Finalized")
    function C.new(ctx) return setmetatable({ ctx = ctx }, C) end
    function C:fetch()
      result = table.pack(pcall(test, self.ctx.storage, rt))
      return dobj.response("done")
    end
    local stub = rt:bind("FINALIZED", C):get_by_name("f")
    pcall(stub.fetch, stub, "https://f/")
    assert(result, "the handler did not run")
    assert(result[1], result[2])
  end

  after_each(function()
    collectgarbage("incremental", 200, 100, 13)
    collectgarbage()
  end)

  it("a storage:get inside storage:get leaves the outer value intact", function()
    in_object(function(s)
      s:put("outer", big_value("outer"))
      s:put("inner", big_value("inner"))
      local ok, v = finalizer_inside(function() return s:get("outer") end,
        function() s:get("inner") end)
      assert.is_true(ok, v)
      assert.is_true(H.same_value(big_value("outer"), v))
    end)
  end)

  it("a storage:put inside storage:put stores both values intact", function()
    in_object(function(s)
      local ok, err = finalizer_inside(function() s:put("outer", big_value("outer")) end,
        function() s:put("inner", big_value("inner")) end)
      assert.is_true(ok, err)
      assert.is_true(H.same_value(big_value("outer"), s:get("outer")))
      assert.is_true(H.same_value(big_value("inner"), s:get("inner")))
    end)
  end)

  -- The runtime's __gc only closes a runtime in use (its memory is still
  -- used below) and frees it later.  "In use" was counted for the whole
  -- module, so every other runtime collected during any storage call was
  -- closed and never freed (LeakSanitizer: whole runtimes).
  it("another runtime finalized during a storage call is freed", function()
    in_object(function(s)
      s:put("outer", big_value("outer"))
      local other = H.runtime()
      local ok, err = finalizer_inside(function() return s:get("outer") end,
        function() getmetatable(other).__gc(other) end)
      assert.is_true(ok, err)
      assert.are.equal("dobj.Runtime(freed)", tostring(other))
    end)
  end)

  it("runtimes collected during storage calls are all freed", function()
    collectgarbage()
    collectgarbage()
    local before = dobj._stats().runtimes
    in_object(function(s)
      s:put("outer", big_value("outer"))
      for _ = 1, 20 do
        for _ = 1, 5 do H.runtime() end -- garbage, collected during the get below
        collectgarbage("incremental", 1, 1000, 0)
        local ok, err = pcall(s.get, s, "outer")
        collectgarbage("incremental", 200, 100, 13)
        assert.is_true(ok, err)
      end
    end)
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, dobj._stats().runtimes)
  end)

  -- Only a storage kept past its handler reaches the instance; nothing
  -- reaches the runtime, so the collector may finalize it during a call on
  -- that storage: it is closed then (the call fails cleanly) and freed by a
  -- later cycle.  Freed in the same cycle, the call ended on freed memory.
  it("a runtime collected during a call on its stashed storage is freed after the call", function()
    collectgarbage()
    collectgarbage()
    local before = dobj._stats().runtimes
    local function stashed_storage()
      local rt, storage = H.runtime(), nil
      local C = H.class("Stash")
      function C.new(ctx) return setmetatable({ ctx = ctx }, C) end
      function C:fetch()
        storage = self.ctx.storage
        local t = {}
        for i = 1, 3000 do t[i] = { i = i, n = { i } } end
        storage:put("big", t)
        return dobj.response("ok")
      end
      rt:bind("STASH", C):get_by_name("s"):fetch("https://s/")
      return storage
    end
    local s, closed = stashed_storage(), nil
    for _ = 1, 20 do
      collectgarbage("incremental", 1, 1000, 0)
      local ok, v = pcall(s.get, s, "big")
      collectgarbage("incremental", 200, 100, 13)
      if not ok then
        closed = type(v) == "table" and v.message or tostring(v)
        break
      end
      assert.are.equal(3000, #v)
    end
    assert.matches("reset or evicted", closed)
    s = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, dobj._stats().runtimes)
  end)

  for _, method in ipairs({ "get", "put", "list", "sql" }) do
    it("rt:close() from a finalizer during storage " .. method .. " is a clean error", function()
      in_object(function(s, rt)
        s:put("outer", big_value("outer"))
        for i = 1, 10 do s:put("row" .. i, big_value(i)) end
        local calls = {
          get = function() return s:get({ "outer", "row1", "row2" }) end,
          put = function() return s:put({ a = big_value("a"), b = big_value("b") }) end,
          list = function() return s:list() end,
          sql = function() return s.sql:exec("SELECT ?, ?, ?", string.rep("x", 100), 2, 3):to_array() end,
        }
        local ok, err = finalizer_inside(calls[method], function() rt:close() end)
        if not ok then
          assert.matches("reset or evicted", type(err) == "table" and err.message or tostring(err))
        end
        assert.are.equal("dobj.Runtime(closed)", tostring(rt))
      end)
    end)
  end
end)
