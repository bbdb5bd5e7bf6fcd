-- How a loop drives a runtime (rt:fd, rt:process, rt:run) and the rules of the
-- host contract as Lua sees them: delays, a block calling its own object, the
-- 30 s limit of a block.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

describe("dobj.sleep", function()
  it("refuses a delay that is not a finite number, in a handler and in the main chunk", function()
    local Sleeper = H.class("Sleeper")
    function Sleeper:fetch(req)
      dobj.sleep(req.url:match("inf$") and math.huge or 0 / 0)
      return dobj.response("woke")
    end
    local rt = H.runtime()
    local ns = rt:bind("SLEEPER", Sleeper)
    -- Was: an infinite sleep spun at 100% CPU in rt:run (NaN was refused).
    for _, url in ipairs({ "https://s/inf", "https://s/nan" }) do
      local err = H.catch(function() ns:get_by_name("s"):fetch(url) end)
      assert.are.equal("a delay must be a finite number", err.message)
    end
    assert.are.equal("a delay must be a finite number", H.catch(dobj.sleep, math.huge).message)
    assert.are.equal("a delay must be a finite number", H.catch(dobj.sleep, -math.huge).message)
    rt:close()
  end)
end)

describe("ctx:block_concurrency_while", function()
  it("calling its own object fails with the core's deadlock error instead of hanging", function()
    local Selfish = H.class("Selfish")
    function Selfish.new(ctx, env) return setmetatable({ ctx = ctx, env = env }, Selfish) end
    function Selfish:fetch(req)
      if req.url:match("count$") then return dobj.response("counted") end
      local me = self.env.SELFISH:get(self.ctx.id)
      local text = self.ctx:block_concurrency_while(function()
        return me:fetch("https://s/count"):text()
      end)
      return dobj.response(text)
    end
    local rt = H.runtime()
    local ns = rt:bind("SELFISH", Selfish)
    local err = H.catch(function() ns:get_by_name("s"):fetch("https://s/self") end)
    assert.are.equal("deadlock: this call waits for the object's block_concurrency_while, "
      .. "which waits for this call", err.message)
    assert.are.equal("counted", ns:get_by_name("s"):fetch("https://s/count"):text())
    rt:close()
  end)

  it("running longer than 30 s resets the object with workerd's message", function()
    local Slow = H.class("Slow")
    function Slow.new(ctx) return setmetatable({ ctx = ctx }, Slow) end
    function Slow:fetch(req)
      if req.url:match("slow$") then
        self.ctx:block_concurrency_while(function() dobj.sleep(60) end)
      end
      return dobj.response("fine")
    end
    local rt = H.runtime()
    local ns = rt:bind("SLOW", Slow)
    local start = rt:now()
    local err = H.catch(function() ns:get_by_name("s"):fetch("https://s/slow") end)
    assert.are.equal("A call to blockConcurrencyWhile() in a Durable Object waited for too long. "
      .. "The call was canceled and the Durable Object was reset.", err.message)
    assert.is_true(rt:now() - start >= 30000 and rt:now() - start < 60000)
    assert.are.equal("fine", ns:get_by_name("s"):fetch("https://s/ok"):text())
    rt:close()
  end)
end)

describe("rt:fd and rt:process", function()
  it("let a loop of your own drive the runtime (a luasocket select here)", function()
    local ok, socket = pcall(require, "socket")
    if not ok then
      pending("luasocket is not installed")
      return
    end
    local fired = {}
    local Clock = H.class("Clock")
    function Clock.new(ctx) return setmetatable({ ctx = ctx }, Clock) end
    function Clock:fetch(req)
      self.ctx.storage:set_alarm(tonumber(req.url:match("(%d+)$")))
      return dobj.response("set")
    end
    function Clock:alarm(info) fired[#fired + 1] = info.scheduled_time end
    local rt = dobj.runtime({})
    local ns = rt:bind("CLOCK", Clock)
    local fd = rt:fd()
    assert.is_true(math.type(fd) == "integer" and fd >= 0)
    assert.are.equal(fd, rt:fd())
    ns:get_by_name("c"):fetch(("https://c/%d"):format(math.floor(rt:now()) + 30))
    local watched = { getfd = function() return fd end, dirty = function() return false end }
    local waits = 0
    while #fired == 0 do
      local readable = socket.select({ watched }, nil, 5)
      assert.are.equal(1, #readable, "the fd never became readable")
      waits = waits + 1
      rt:process()
    end
    assert.is_true(waits >= 1)
    rt:close()
  end)

  it("process runs what is ready and returns without waiting", function()
    local rt = H.runtime()
    local ns = rt:bind("ECHO", H.Echo)
    local out
    rt:spawn(function() out = ns:get_by_name("e"):fetch("https://e/"):text() end)
    assert.is_nil(out)
    rt:process()
    assert.are.equal("GET https://e/  []", out)
    rt:close()
    assert.is_truthy(H.catch(function() rt:process() end))
  end)
end)
