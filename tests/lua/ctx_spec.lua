-- ctx: block_concurrency_while (constructor and handler), abort, wait_until.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

describe("ctx:block_concurrency_while", function()
  it("in the constructor holds the first events until it finishes", function()
    local log = {}
    local Loader = H.class("Loader")
    function Loader.new(ctx, env)
      local self = setmetatable({ ctx = ctx, ready = false }, Loader)
      local r = ctx:block_concurrency_while(function()
        table.insert(log, "load start")
        dobj.sleep(0.05)
        self.ready = true
        table.insert(log, "load end")
      end)
      assert(r == nil, "from a constructor it returns nothing")
      return self
    end
    function Loader:fetch(req)
      table.insert(log, "fetch " .. req.url .. " ready=" .. tostring(self.ready))
      return dobj.response("ok")
    end
    local rt = H.runtime()
    local ns = rt:bind("LOADER", Loader)
    rt:spawn(function() ns:get_by_name("l"):fetch("https://l/1") end)
    rt:spawn(function() ns:get_by_name("l"):fetch("https://l/2") end)
    rt:run()
    assert.are.same({ "load start", "load end", "fetch https://l/1 ready=true",
      "fetch https://l/2 ready=true" }, log)
  end)

  it("in a handler returns fn's values and keeps other events out", function()
    local log = {}
    local Gate = H.class("Gate")
    function Gate:fetch(req)
      local tag = req.url:match("(%a+)$")
      if tag == "block" then
        local a, b = self.ctx:block_concurrency_while(function(x)
          table.insert(log, "block start")
          dobj.sleep(0.01)
          table.insert(log, "block end")
          return x * 2, "two"
        end, 21)
        table.insert(log, "after block " .. a .. " " .. b)
      else
        table.insert(log, "other")
      end
      return dobj.response(tag)
    end
    local rt = H.runtime()
    local stub = rt:bind("GATE", Gate):get_by_name("g")
    rt:spawn(function() stub:fetch("https://g/block") end)
    rt:spawn(function() dobj.sleep(0.001); stub:fetch("https://g/other") end)
    rt:run()
    -- Nothing else ran while fn was running, and the handler that awaited
    -- the block continued before the held event (as in workerd).
    assert.are.same({ "block start", "block end", "after block 42 two", "other" }, log)
  end)

  it("without it, a sleeping handler lets other events in", function()
    local log = {}
    local Open = H.class("Open")
    function Open:fetch(req)
      local tag = req.url:match("(%a+)$")
      if tag == "slow" then
        table.insert(log, "slow start")
        dobj.sleep(0.01)
        table.insert(log, "slow end")
      else
        table.insert(log, "other")
      end
      return dobj.response(tag)
    end
    local rt = H.runtime()
    local stub = rt:bind("OPEN", Open):get_by_name("o")
    rt:spawn(function() stub:fetch("https://o/slow") end)
    rt:spawn(function() dobj.sleep(0.001); stub:fetch("https://o/other") end)
    rt:run()
    assert.are.same({ "slow start", "other", "slow end" }, log)
  end)

  it("resets the object when fn raises", function()
    local built = 0
    local Reset = H.class("Reset")
    function Reset.new(ctx, env)
      built = built + 1
      return setmetatable({ ctx = ctx, n = 0 }, Reset)
    end
    function Reset:fetch(req)
      self.n = self.n + 1
      if req.url:match("fail$") then
        self.ctx:block_concurrency_while(function()
          dobj.sleep(0.001)
          error({ message = "load failed", why = "disk" })
        end)
        return dobj.response("unreachable")
      end
      return dobj.response(tostring(self.n))
    end
    local rt = H.runtime()
    local ns = rt:bind("RESET", Reset)
    local stub = ns:get_by_name("r")
    assert.are.equal("1", stub:fetch("https://r/"):text())
    local err = H.catch(stub.fetch, stub, "https://r/fail")
    assert.are.equal("load failed", err.message)
    assert.are.equal("disk", err.why)
    assert.is_true(err.remote)
    -- The old stub is broken; a new one reaches a fresh instance.
    err = H.catch(stub.fetch, stub, "https://r/")
    assert.are.equal("load failed", err.message)
    assert.are.equal("1", ns:get_by_name("r"):fetch("https://r/"):text())
    assert.are.equal(2, built)
  end)

  it("fails the first call when the constructor's block raises", function()
    local built = 0
    local Broken = H.class("Broken")
    function Broken.new(ctx, env)
      built = built + 1
      local n = built
      ctx:block_concurrency_while(function()
        if n == 1 then error("cannot load", 0) end
      end)
      return setmetatable({}, Broken)
    end
    function Broken:fetch() return dobj.response("loaded " .. built) end
    local rt = H.runtime()
    local ns = rt:bind("BROKEN", Broken)
    local stub = ns:get_by_name("b")
    local err = H.catch(stub.fetch, stub, "https://b/")
    assert.are.equal("cannot load", err.message)
    assert.are.equal("loaded 2", ns:get_by_name("b"):fetch("https://b/"):text())
  end)

  it("is refused outside the object's own constructor or handlers", function()
    local saved
    local Keeper = H.class("Keeper")
    function Keeper:fetch()
      saved = self.ctx
      return dobj.response("ok")
    end
    local rt = H.runtime()
    rt:bind("KEEPER", Keeper):get_by_name("k"):fetch("https://k/")
    assert.has_error(function() saved:block_concurrency_while(function() end) end)
  end)
end)

describe("ctx:abort", function()
  local built, after_abort
  local Abortable = H.class("Abortable")
  function Abortable.new(ctx, env)
    built = built + 1
    return setmetatable({ ctx = ctx, n = 0 }, Abortable)
  end
  function Abortable:fetch(req)
    self.n = self.n + 1
    local what = req.url:match("/(%w+)$")
    if what == "abort" then
      self.ctx:abort("reset requested")
      after_abort = true
    elseif what == "plain" then
      self.ctx:abort()
    elseif what == "sleep" then
      dobj.sleep(1)
    end
    return dobj.response(tostring(self.n))
  end

  local rt, ns
  before_each(function()
    built, after_abort = 0, false
    rt = H.runtime()
    ns = rt:bind("ABORT", Abortable)
  end)

  it("fails the call in progress with the reason, and nothing after it runs", function()
    local stub = ns:get_by_name("a")
    assert.are.equal("1", stub:fetch("https://a/count"):text())
    local err = H.catch(stub.fetch, stub, "https://a/abort")
    assert.are.equal("reset requested", err.message)
    assert.are.equal("reset requested", tostring(err))
    assert.is_true(err.remote)
    assert.are.equal(tostring(stub.id), err.durable_object_id)
    assert.is_false(after_abort)
  end)

  it("cannot be caught by pcall in the handler (as in Cloudflare)", function()
    local Catcher = H.class("Catcher")
    local log = {}
    function Catcher:fetch()
      local ok = pcall(self.ctx.abort, self.ctx, "uncatchable")
      log[#log + 1] = "after pcall " .. tostring(ok)
      return dobj.response("caught")
    end
    local stub = rt:bind("CATCHER", Catcher):get_by_name("c")
    local err = H.catch(stub.fetch, stub, "https://c/")
    assert.are.equal("uncatchable", err.message)
    assert.are.same({}, log)
  end)

  it("breaks the stub; a new stub reaches a fresh instance", function()
    local stub = ns:get_by_name("a")
    stub:fetch("https://a/count")
    stub:fetch("https://a/count")
    H.catch(stub.fetch, stub, "https://a/abort")
    for _ = 1, 2 do
      local err = H.catch(stub.fetch, stub, "https://a/count")
      assert.are.equal("reset requested", err.message)
    end
    assert.are.equal("1", ns:get(stub.id):fetch("https://a/count"):text())
    assert.are.equal(2, built)
  end)

  it("fails other calls waiting in the object", function()
    local stub = ns:get_by_name("a")
    local sleeper_err
    rt:spawn(function() sleeper_err = H.catch(stub.fetch, stub, "https://a/sleep") end)
    rt:spawn(function() dobj.sleep(0.1); H.catch(stub.fetch, stub, "https://a/abort") end)
    rt:run()
    assert.are.equal("reset requested", sleeper_err.message)
  end)

  it("has workerd's default reason", function()
    local stub = ns:get_by_name("a")
    local err = H.catch(stub.fetch, stub, "https://a/plain")
    assert.are.equal("Application called abort() to reset Durable Object.", err.message)
  end)

  it("detaches the old ctx", function()
    local Spy = H.class("Spy")
    local ctxs = {}
    function Spy.new(ctx, env)
      table.insert(ctxs, ctx)
      return setmetatable({ ctx = ctx }, Spy)
    end
    function Spy:fetch(req)
      if req.url:match("abort$") then self.ctx:abort("bye") end
      return dobj.response("ok")
    end
    local spy = rt:bind("SPY", Spy)
    H.catch(function() spy:get_by_name("s"):fetch("https://s/abort") end)
    assert.are.equal("dobj.Ctx(reset)", tostring(ctxs[1]))
    assert.has_error(function() ctxs[1]:wait_until(function() end) end)
    -- abort on a reset object's ctx fails as every other use does (and as
    -- in Python): the core's message
    assert.matches("reset", H.catch(function() ctxs[1]:abort("again") end))
    assert.are.equal("ok", spy:get_by_name("s"):fetch("https://s/"):text())
  end)
end)

describe("ctx:wait_until", function()
  it("keeps background work running after the response", function()
    local log = {}
    local Bg = H.class("Bg")
    function Bg:fetch()
      self.ctx:wait_until(function(tag)
        dobj.sleep(0.5)
        table.insert(log, "background " .. tag)
      end, "done")
      table.insert(log, "responding")
      return dobj.response("ok")
    end
    local rt = H.runtime()
    local stub = rt:bind("BG", Bg):get_by_name("b")
    assert.are.equal("ok", stub:fetch("https://b/"):text())
    assert.are.same({ "responding" }, log)
    rt:run()
    assert.are.same({ "responding", "background done" }, log)
  end)

  it("reports a background error to dobj.on_error, not to rt:run()", function()
    local Bg = H.class("BgFail")
    function Bg:fetch()
      self.ctx:wait_until(function() error("background failed", 0) end)
      self.n = (self.n or 0) + 1
      return dobj.response(tostring(self.n))
    end
    local seen = {}
    local previous = dobj.on_error(function(err, info) seen[#seen + 1] = { err = err, info = info } end)
    local ok, err = pcall(function()
      local rt = H.runtime()
      local stub = rt:bind("BG", Bg):get_by_name("b")
      assert.are.equal("1", stub:fetch("https://b/"):text())
      rt:run() -- does not raise: nobody awaited the background work
      assert.are.equal(1, #seen)
      assert.are.equal("background failed", seen[1].err.message)
      assert.are.equal(tostring(stub.id), seen[1].err.durable_object_id)
      assert.are.same({ kind = "wait_until", class = "BgFail", id = tostring(stub.id) }, seen[1].info)
      assert.are.equal("2", stub:fetch("https://b/"):text()) -- the object is fine
      rt:close()
    end)
    assert.are.equal("function", type(dobj.on_error(previous))) -- ours, replaced
    assert.is_nil(previous) -- the default was in place before
    assert(ok, err)
  end)

  it("writes background errors to stderr by default", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      local dobj = require "dobj"
      local C = {}
      C.__index = C
      function C.new(ctx) return setmetatable({ ctx = ctx }, C) end
      function C:fetch()
        self.ctx:wait_until(function() error("lost in the background", 0) end)
        return dobj.response("ok")
      end
      local rt = dobj.runtime{ virtual_time = true }
      rt:bind("BG", C):get_by_name("b"):fetch("https://b/")
      rt:run()
      rt:close()
    ]])
    f:close()
    local p = assert(io.popen("lua5.4 " .. script .. " 2>&1"))
    local out = p:read("a")
    p:close()
    os.remove(script)
    assert.matches("^dobj: ctx:wait_until%(%) of BG %x+ failed: lost in the background\n", out)
    assert.matches("stack traceback", out)
  end)

  it("needs a function", function()
    local Bg = H.class("BgBad")
    function Bg:fetch()
      local ok = pcall(self.ctx.wait_until, self.ctx, "not a function")
      return dobj.response(tostring(ok))
    end
    local rt = H.runtime()
    assert.are.equal("false", rt:bind("BG", Bg):get_by_name("b"):fetch("https://b/"):text())
  end)
end)
