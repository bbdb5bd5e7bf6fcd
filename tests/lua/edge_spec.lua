-- Edge cases: abort in a constructor, nested blocks, spawn from a handler,
-- options accepted and ignored, string forms.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

describe("edge cases", function()
  it("ctx:abort in a constructor fails the call; a new stub constructs again", function()
    local built = 0
    local Quitter = H.class("Quitter")
    function Quitter.new(ctx, env)
      built = built + 1
      if built == 1 then ctx:abort("not today") end
      return setmetatable({}, Quitter)
    end
    function Quitter:fetch() return dobj.response("built " .. built) end
    local rt = H.runtime()
    local ns = rt:bind("Q", Quitter)
    local stub = ns:get_by_name("q")
    local err = H.catch(stub.fetch, stub, "https://q/")
    assert.are.equal("not today", err.message)
    assert.are.equal("built 2", ns:get_by_name("q"):fetch("https://q/"):text())
  end)

  it("nests block_concurrency_while and caps the nesting like workerd", function()
    local Nest = H.class("Nest")
    function Nest:fetch(req)
      local ctx = self.ctx
      if req.url:match("deep$") then
        local function dive(n)
          return ctx:block_concurrency_while(function()
            if n == 0 then return 0 end
            return 1 + dive(n - 1)
          end)
        end
        local ok, e = pcall(dive, 70)
        return dobj.response(ok and "no limit" or tostring(e.message or e))
      end
      local v = ctx:block_concurrency_while(function()
        return ctx:block_concurrency_while(function() return "inner" end) .. "+outer"
      end)
      return dobj.response(v)
    end
    local rt = H.runtime()
    local stub = rt:bind("NEST", Nest):get_by_name("n")
    assert.are.equal("inner+outer", stub:fetch("https://n/"):text())
    -- The 65th level fails inside a block fn, and a failed block resets the
    -- object: the call fails with workerd's message.
    local err = H.catch(stub.fetch, stub, "https://n/deep")
    assert.are.equal("blockConcurrencyWhile() calls are nested too deeply.", err.message)
  end)

  it("lets a handler spawn tasks that run on the same runtime", function()
    local log = {}
    local Spawner = H.class("Spawner")
    local rt = H.runtime()
    function Spawner:fetch()
      rt:spawn(function(x) dobj.sleep(0.01); table.insert(log, x) end, "spawned")
      return dobj.response("ok")
    end
    rt:bind("SP", Spawner):get_by_name("s"):fetch("https://s/")
    assert.are.same({}, log)
    rt:run()
    assert.are.same({ "spawned" }, log)
  end)

  it("accepts get() options and a nil jurisdiction", function()
    local rt = H.runtime()
    local ns = rt:bind("E", H.Echo)
    local stub = ns:get(ns:id_from_name("x"), { location_hint = "enam" })
    assert.matches("^GET", stub:fetch("https://e/"):text())
    assert.are.equal(ns, ns:jurisdiction())
  end)

  it("has readable string forms", function()
    local rt = H.runtime()
    local ns = rt:bind("E", H.Echo)
    local id = ns:id_from_name("x")
    assert.are.equal("dobj.Runtime(open)", tostring(rt))
    assert.are.equal("dobj.Namespace(E)", tostring(ns))
    assert.are.equal("dobj.Stub(E " .. tostring(id) .. ")", tostring(ns:get(id)))
    assert.are.equal("dobj.Request(GET https://x/)", tostring(dobj.request("https://x/")))
    rt:close()
    assert.are.equal("dobj.Runtime(closed)", tostring(rt))
  end)

  it("checks runtime options", function()
    assert.has_error(function() dobj.runtime { id_seed = 1.5 } end)
    assert.has_error(function() dobj.runtime { env = 3 } end)
    assert.has_error(function() dobj.runtime(42) end)
    local rt = dobj.runtime()
    assert.has_error(function() rt:bind("X", "not a class") end)
    assert.has_error(function() rt:bind("X", {}, { unique_key = 5 }) end)
    assert.has_error(function() rt:spawn("not a function") end)
  end)

  it("handles many objects and IDs in one namespace", function()
    local Cnt = H.class("Cnt")
    function Cnt.new() return setmetatable({ n = 0 }, Cnt) end
    function Cnt:fetch() self.n = self.n + 1; return dobj.response(tostring(self.n)) end
    local rt = H.runtime()
    local ns = rt:bind("C", Cnt)
    for round = 1, 2 do
      for i = 1, 3000 do
        assert.are.equal(tostring(round), ns:get_by_name("o" .. i):fetch("https://c/"):text())
      end
    end
  end)

  it("checks types where upvalue 1 of the C function is not the module state", function()
    -- test_ud, push_mt and the module state took upvalue 1 of the running C
    -- function for the module state: called where it is something else (code
    -- the core calls back, a closure of its own) they read a wrong pointer
    -- and crashed.  A child process, its functions' upvalue replaced.
    local script = [[
      local dobj = require "dobj"
      for _, f in ipairs { dobj.is_error, dobj.response } do debug.setupvalue(f, 1, {}) end
      print(dobj.is_error(setmetatable({}, dobj.Error)), dobj.is_error({}))
      print(select(2, pcall(dobj.response, nil, { web_socket = 1 })))
      local client = dobj.websocket_pair()
      local r = dobj.response(nil, { status = 101, web_socket = client })
      print(r.status, getmetatable(r) == dobj.Response)
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local out = H.sh("lua5.4 " .. path .. " 2>&1")
    os.remove(path)
    assert.are.equal("true\tfalse\nweb_socket must be a dobj.WebSocket, got number\n101\ttrue", out)
  end)
end)
