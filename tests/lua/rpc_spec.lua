-- RPC on stubs to Lua classes: stub:method(...) calls Class.method on the one
-- instance; arguments and results are copied through core values.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

-- A class with the usual methods of these tests; `calls` counts deliveries.
local function counter_class()
  local C = H.class("Counter")
  C.VERSION = 3 -- a class field that is not a function: not callable
  C.calls = 0
  function C.new(ctx, env)
    return setmetatable({ ctx = ctx, env = env, n = 0, held = { 1, 2 },
      helper = function() return "instance field" end }, C)
  end
  function C:add(x) C.calls = C.calls + 1; self.n = self.n + x; return self.n end
  function C:get() return self.n end
  function C:echo(...) C.calls = C.calls + 1; return ... end
  function C:pack(...) return table.pack(...) end
  function C:nothing() end
  function C:_private() return "private" end
  function C:fetch() return dobj.response("fetched " .. self.n) end
  function C:alarm() end
  function C:mutate(t) t.changed = true; t[1] = "changed"; return t end
  function C:held_table() return self.held end
  function C:push_held(v) self.held[#self.held + 1] = v; return #self.held end
  function C:fail(msg) error(msg, 0) end
  function C:fail_table() error({ message = "custom", code = 42 }) end
  function C:slow(x) dobj.sleep(0.01); return x end
  function C:give_function() return function() end end
  return C
end

local function setup()
  local C = counter_class()
  local rt = H.runtime()
  local ns = rt:bind("COUNTER", C)
  return rt, ns, ns:get_by_name("c"), C
end

describe("RPC", function()
  it("calls a public method on the one instance", function()
    local _, ns, stub = setup()
    assert.are.equal(5, stub:add(5))
    assert.are.equal(7, stub:add(2))
    assert.are.equal(7, ns:get_by_name("c"):get())     -- another stub, same instance
    assert.are.equal(0, ns:get_by_name("other"):get()) -- another ID, another instance
    assert.are.equal("fetched 7", stub:fetch("https://c/"):text())
  end)

  it("round-trips every supported type", function()
    local _, _, stub = setup()
    local shared = { "s" }
    local cases = {
      true, false, 0, 1, -1, 2^31 | 0, 2^53 | 0, -(2^53 | 0), (2^53 | 0) + 1, math.maxinteger, math.mininteger,
      1.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 1e300,
      "", "plain", "héllo wörld ✓ 😀", ("x"):rep(100000),
      dobj.null, dobj.bytes(""), dobj.bytes("\0\1\2\255"), dobj.date(0), dobj.date(1.7e12),
      { 1, 2, 3 }, { "a", { "nested", { true } } }, {}, { a = 1, b = { c = "d" } },
      { ["0"] = "zero", ["1"] = "one" }, { [1] = "a", [3] = "c" }, { [true] = 1, [2.5] = "x" },
      dobj.map { a = 1 }, dobj.set { "x", 7, true }, { shared, shared, { k = shared } },
      dobj.array(), dobj.array { 1, 2 }, { dobj.array(), {} },
      { list = { 1, dobj.null, dobj.bytes("b") }, date = dobj.date(5), set = dobj.set { 1 } },
    }
    for i, v in ipairs(cases) do
      local got = stub:echo(v)
      local ok, why = H.same_value(v, got)
      assert(ok, ("case %d (%s): %s"):format(i, tostring(v), tostring(why)))
    end
    -- Sharing inside one call survives; so does sharing across arguments.
    local got = stub:echo({ shared, shared })
    assert.are.equal(got[1], got[2])
    -- Numbers follow the integer rule, as in storage: 1.0 stays a float,
    -- integers stay integers (beyond 2^53 through a BigInt).
    assert.are.equal("float", math.type(stub:echo(1.0)))
    assert.are.equal("float", math.type(stub:echo(2.0)))
    assert.are.equal("integer", math.type(stub:echo(1 << 40)))
    assert.are.equal(1 << 40, stub:echo(1 << 40))
    assert.are.equal("integer", math.type(stub:echo(1 << 60)))
    assert.are.equal(1 << 60, stub:echo(1 << 60))
    local nz = stub:echo(-0.0)
    assert.are.equal("float", math.type(nz))
    assert.are.equal(-math.huge, 1 / nz)
    assert.are.equal("integer", math.type(stub:echo(2.0^40)), "as storage reads V8's 2^40")
    local p = stub:pack(shared, shared)
    assert.are.equal(p[1], p[2])
    assert.are_not.equal(shared, p[1])
  end)

  it("passes nil arguments and any number of them; returns the first result", function()
    local _, _, stub = setup()
    local p = stub:pack(nil, 2, nil)
    assert.are.equal(3, p.n)
    assert.is_nil(p[1]); assert.are.equal(2, p[2]); assert.is_nil(p[3])
    assert.are.equal(0, stub:pack().n)
    assert.is_nil(stub:nothing())
    assert.are.equal(1, select("#", stub:echo(1, 2, 3)))
    assert.are.equal(1, stub:echo(1, 2, 3))
    local many = {}
    for i = 1, 200 do many[i] = i end
    assert.are.equal(200, stub:pack(table.unpack(many)).n)
  end)

  it("refuses missing methods, private names and lifecycle handlers", function()
    local _, _, stub = setup()
    for _, name in ipairs { "missing", "_private", "__index", "__name", "fetch_",
      "VERSION", "helper", "n", "calls" } do
      local err = H.catch(stub[name], stub)
      assert.are.equal(('The RPC receiver does not implement the method "%s".'):format(name), err.message)
      assert.is_true(err.remote)
      assert.are.equal(tostring(stub.id), err.durable_object_id)
    end
    -- workerd's reserved names (and constructors) say so, as workerd does.
    for _, name in ipairs { "new", "alarm", "constructor", "webSocketMessage" } do
      local err = H.catch(stub[name], stub)
      assert.are.equal(("'%s' is a reserved method and cannot be called over RPC."):format(name), err.message)
      assert.is_true(err.remote)
    end
    -- fetch stays the stub's own fetch (a request, not an RPC call).
    assert.are.equal("fetched 0", stub:fetch("https://c/"):text())
    -- The object is fine afterwards.
    assert.are.equal(1, stub:add(1))
  end)

  it("calls no other method for a name with a NUL byte", function()
    -- The core took the name up to its NUL: stub["add\0x"] ran add.
    local _, _, stub, C = setup()
    local err = H.catch(stub["add\0x"], stub, 5)
    -- Shown escaped (the message was cut at the NUL: "add").
    assert.are.equal('The RPC receiver does not implement the method "add\\x00x".', err.message)
    assert.are.equal(0, C.calls)
    assert.are.equal(0, stub:get())
  end)

  it("keeps the end of the missing-method message for a long name", function()
    local _, _, stub = setup()
    local name = ("m"):rep(2000)
    local err = H.catch(stub[name], stub)
    assert.are.equal('The RPC receiver does not implement the method "' .. ("m"):rep(256) .. '...".', err.message)
  end)

  it("finds methods inherited through the class's metatable", function()
    local Base = H.class("Base")
    function Base:hello() return "hello from base" end
    local Derived = setmetatable(H.class("Derived"), { __index = Base })
    function Derived:own() return "own" end
    local rt = H.runtime()
    local stub = rt:bind("D", Derived):get_by_name("d")
    assert.are.equal("hello from base", stub:hello())
    assert.are.equal("own", stub:own())
  end)

  it("keeps stub.id, stub.name and stub:fetch; stub.x is a method caller", function()
    local _, ns, stub = setup()
    assert.are.equal(ns:id_from_name("c"), stub.id)
    assert.are.equal("c", stub.name)
    assert.are.equal("function", type(stub.anything))
    assert.are.equal(stub.anything, stub.anything) -- cached per name
    assert.is_nil(stub[1])
    local err = H.catch(stub.add, 5) -- a dot instead of a colon
    assert.matches("call it with a colon", tostring(err))
  end)

  it("copies arguments: the object never shares the caller's tables", function()
    local _, _, stub = setup()
    local t = { "original" }
    local back = stub:mutate(t)
    assert.are.equal("original", t[1])
    assert.is_nil(t.changed)
    assert.are.equal("changed", back[1])
    assert.are_not.equal(t, back)
  end)

  it("copies results: the caller never shares the object's tables", function()
    local _, _, stub = setup()
    local held = stub:held_table()
    held[1] = "caller's change"
    held[#held + 1] = "more"
    assert.are.same({ 1, 2 }, stub:held_table())
    assert.are.equal(3, stub:push_held(3))
    assert.are.equal("caller's change", held[1]) -- the caller's copy did not follow
    assert.are.equal(3, #held)
  end)

  it("refuses unsupported values in the caller, before anything is delivered", function()
    local _, _, stub, C = setup()
    local cyclic = {}; cyclic.self = cyclic
    local deep = {}
    local cur = deep
    for _ = 1, 300 do cur.next = {}; cur = cur.next end
    local cases = {
      { function() end, "cannot send a value of type function over RPC (argument 1)" },
      { coroutine.create(function() end), "cannot send a value of type thread over RPC (argument 1)" },
      { io.stdout, "cannot send a value of type userdata (FILE*) over RPC (argument 1)" },
      { cyclic, "cannot send a cyclic table (a table that contains itself) over RPC (argument 1)" },
      { { a = { b = { print } } }, "cannot send a value of type function over RPC (argument 1)" },
      { "\255\254", "cannot send a string that is not valid UTF-8 over RPC (argument 1)" },
      { { ["\255"] = 1 }, "cannot send a table key that is not valid UTF-8 over RPC (argument 1)" },
      { deep, "cannot send tables nested deeper than 256 over RPC (argument 1)" },
      { dobj.runtime(), "cannot send a value of type userdata (dobj.Runtime) over RPC (argument 1)" },
      { dobj.array { x = 1 }, "cannot send a dobj.array table with keys other than 1..n over RPC (argument 1)" },
    }
    local before = C.calls
    for _, case in ipairs(cases) do
      local err = H.catch(stub.echo, stub, case[1])
      assert.is_true(dobj.is_error(err))
      assert.are.equal(case[2], (err.message:gsub(": wrap binary.*", ""):gsub(": use a dobj.map.*", "")))
      assert.is_nil(err.remote)
    end
    -- The position names the argument.
    local err = H.catch(stub.echo, stub, 1, 2, print)
    assert.are.equal("cannot send a value of type function over RPC (argument 3)", err.message)
    assert.are.equal(before, C.calls)
    -- An unsupported result fails in the object and reaches the caller.
    err = H.catch(stub.give_function, stub)
    assert.are.equal("cannot send a value of type function over RPC (the result)", err.message)
    assert.is_true(err.remote)
  end)

  it("passes stubs and IDs, which work on the other side", function()
    local Peer = H.class("Peer")
    function Peer:call_other(other, x) return other:add(x) end
    function Peer:keep(other) self.other = other; return true end
    function Peer:use_kept(x) return self.other:add(x) end
    function Peer:give(name) return self.env.COUNTER:get_by_name(name) end
    function Peer:check_id(id) return { tostring(id), id.name, self.env.COUNTER:get(id):get() } end
    function Peer:echo_id(id) return id end
    function Peer:new_id() return self.env.COUNTER:new_unique_id() end
    local C = counter_class()
    local rt = H.runtime { id_seed = 1 }
    local counters = rt:bind("COUNTER", C)
    local peer = rt:bind("PEER", Peer):get_by_name("p")
    local c = counters:get_by_name("c")
    assert.are.equal(10, peer:call_other(c, 10))
    assert.is_true(peer:keep(c))
    assert.are.equal(15, peer:use_kept(5))
    assert.are.equal(15, c:get())
    -- A stub returned by the object.
    local given = peer:give("c")
    assert.are.equal("dobj.Stub(COUNTER " .. tostring(c.id) .. ")", tostring(given))
    assert.are.equal("c", given.name)
    assert.are.equal(16, given:add(1))
    -- IDs keep their bytes and name.
    local id = counters:id_from_name("c")
    local info = peer:check_id(id)
    assert.are.same({ tostring(id), "c", 16 }, info)
    local back = peer:echo_id(id)
    assert.are.equal(id, back)
    assert.are.equal("c", back.name)
    assert.are_not.equal(rawequal(id, back), true)
    local uid = peer:new_id()
    assert.are.equal(64, #tostring(uid))
    assert.is_nil(uid.name)
    assert.are.equal(0, counters:get(uid):get())
    -- A stub or ID of another runtime cannot be sent.
    local other_rt = H.runtime()
    local foreign = other_rt:bind("COUNTER", counter_class())
    local err = H.catch(peer.call_other, peer, foreign:get_by_name("c"), 1)
    assert.are.equal("cannot send a stub of another runtime over RPC (argument 1)", err.message)
    err = H.catch(peer.check_id, peer, foreign:id_from_name("c"))
    assert.are.equal("cannot send an ID of another runtime over RPC (argument 1)", err.message)
  end)

  it("delivers errors with message, remote, durable_object_id and custom fields", function()
    local _, _, stub = setup()
    local err = H.catch(stub.fail, stub, "nope")
    assert.is_true(dobj.is_error(err))
    assert.are.equal("nope", err.message)
    assert.is_true(err.remote)
    assert.are.equal(tostring(stub.id), err.durable_object_id)
    assert.matches("rpc_spec.lua:%d+", err.stack)
    err = H.catch(stub.fail_table, stub)
    assert.are.equal("custom", err.message)
    assert.are.equal(42, err.code)
    -- The instance lives on.
    assert.are.equal(1, stub:add(1))
  end)

  it("runs methods as coroutines that may sleep and call other objects", function()
    local _, _, stub = setup()
    assert.are.equal("x", stub:slow("x"))
    local log = {}
    local rt = H.runtime()
    local S = H.class("S")
    function S:slow(tag) log[#log + 1] = "start " .. tag; dobj.sleep(0.01); log[#log + 1] = "end " .. tag end
    local s = rt:bind("S", S):get_by_name("s")
    rt:spawn(function() s:slow("a") end)
    rt:spawn(function() s:slow("b") end)
    rt:run()
    assert.are.same({ "start a", "start b", "end a", "end b" }, log)
  end)

  it("works from the main chunk and from tasks", function()
    local rt, _, stub = setup()
    local results = {}
    for i = 1, 3 do
      rt:spawn(function() results[i] = stub:add(i) end)
    end
    rt:run()
    assert.are.same({ 1, 3, 6 }, results)
    assert.are.equal(6, stub:get())
  end)

  it("keeps call order across fetch and RPC from one caller", function()
    local order = {}
    local Log = H.class("Log")
    function Log:fetch(req)
      order[#order + 1] = "fetch " .. req.url:match("(%d+)$")
      return dobj.response("ok")
    end
    function Log:note(i) order[#order + 1] = "rpc " .. i end
    local rt = H.runtime()
    local stub = rt:bind("LOG", Log):get_by_name("l")
    local expected = {}
    for i = 1, 100 do
      if i % 2 == 0 then
        expected[i] = "rpc " .. i
        rt:spawn(function() stub:note(i) end)
      else
        expected[i] = "fetch " .. i
        rt:spawn(function() stub:fetch("https://l/" .. i) end)
      end
    end
    rt:run()
    assert.are.same(expected, order)
  end)

  it("nests calls between objects and caps their depth at 16", function()
    local Chain = H.class("Chain")
    function Chain:down(n)
      if n == 0 then return "bottom" end
      return self.env.CHAIN:get_by_name("n" .. n):down(n - 1)
    end
    local rt = H.runtime()
    local top = rt:bind("CHAIN", Chain):get_by_name("top")
    assert.are.equal("bottom", top:down(15))
    local err = H.catch(top.down, top, 16)
    assert.are.equal("Subrequest depth limit exceeded", err.message)
    assert.is_true(err.remote)
    -- Mixed: fetch handlers calling methods and back count alike.
    local Mixed = H.class("Mixed")
    function Mixed:fetch(req)
      local n = tonumber(req.url:match("(%d+)$"))
      return dobj.response(self.env.MIXED:get_by_name("m"):down(n))
    end
    function Mixed:down(n)
      if n == 0 then return "done" end
      return self.env.MIXED:get_by_name("m" .. n):fetch("https://m/" .. (n - 1)):text()
    end
    local mixed = rt:bind("MIXED", Mixed):get_by_name("m")
    assert.are.equal("done", mixed:down(6))
    err = H.catch(mixed.down, mixed, 20)
    assert.are.equal("Subrequest depth limit exceeded", err.message)
  end)

  it("commits a method's writes before its result is delivered", function()
    local dir = H.tmpdir()
    local W = H.class("W")
    function W:write(k, v) self.ctx.storage:put(k, v); return "written" end
    function W:read(k) return self.ctx.storage:get(k) end
    local rt = H.runtime { storage = dir }
    local w = rt:bind("W", W):get_by_name("w")
    local file = dir .. "/W/" .. tostring(w.id) .. ".sqlite"
    assert.is_nil(w:read("a"))
    assert.are.equal("", H.committed_keys(file))
    assert.are.equal("written", w:write("a", { 1, 2 }))
    assert.are.equal("a", H.committed_keys(file)) -- another connection sees it
    rt:close()
    H.rm_rf(dir)
  end)

  it("fails the call with the abort reason when the method aborts", function()
    local A = H.class("A")
    function A:boom() self.ctx:abort("reset by method") end
    function A:ok() return "ok" end
    local rt = H.runtime()
    local ns = rt:bind("A", A)
    local stub = ns:get_by_name("a")
    local err = H.catch(stub.boom, stub)
    assert.are.equal("reset by method", err.message)
    err = H.catch(stub.ok, stub) -- the stub is broken
    assert.are.equal("reset by method", err.message)
    assert.are.equal("ok", ns:get_by_name("a"):ok())
  end)

  it("refuses to wait in a constructor", function()
    local Ctor = H.class("Ctor")
    function Ctor.new(ctx, env)
      env.COUNTER:get_by_name("x"):add(1)
      return setmetatable({}, Ctor)
    end
    function Ctor:hi() return "hi" end
    local rt = H.runtime()
    rt:bind("COUNTER", counter_class())
    local stub = rt:bind("CTOR", Ctor):get_by_name("c")
    local err = H.catch(stub.hi, stub)
    assert.matches("stub:add%(%) cannot wait here", err.message)
  end)

  it("frees runtimes whose objects hold stubs received over RPC", function()
    for _ = 1, 4 do collectgarbage("collect") end
    local before = dobj._stats().runtimes
    do
      local Peer = H.class("Peer")
      function Peer:keep(other) self.other = other; return other end
      local rt = H.runtime()
      local ns = rt:bind("PEER", Peer)
      local a, b = ns:get_by_name("a"), ns:get_by_name("b")
      a:keep(b); b:keep(a)
    end
    for _ = 1, 4 do collectgarbage("collect") end
    assert.are.equal(before, dobj._stats().runtimes)
  end)
end)
