-- Stubs and fetch: delivery, one instance per ID, order, interleaving, errors,
-- object-to-object calls, depth, requests and responses.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

describe("fetch", function()
  it("runs the issue's Counter example", function()
    local Counter = {}; Counter.__index = Counter
    function Counter.new(ctx, env)
      return setmetatable({ ctx = ctx, env = env, n = 0 }, Counter)
    end
    function Counter:fetch(request)
      self.n = self.n + 1
      return dobj.response(tostring(self.n), { status = 200, headers = { ["content-type"] = "text/plain" } })
    end
    local rt = dobj.runtime { env = { GREETING = "hi" } }
    local counter = rt:bind("COUNTER", Counter, { unique_key = "counter" })
    local stub = counter:get(counter:id_from_name("foo"))
    local res = stub:fetch("https://counter/inc")
    assert.are.equal(200, res.status)
    assert.are.equal("1", res:text())
    assert.are.equal("text/plain", res.headers["content-type"])
    assert.are.equal("2", stub:fetch("https://counter/inc"):text())
    -- Another stub for the same ID reaches the same instance.
    assert.are.equal("3", counter:get_by_name("foo"):fetch("https://counter/inc"):text())
    -- Another ID has its own instance.
    assert.are.equal("1", counter:get_by_name("bar"):fetch("https://counter/inc"):text())
  end)

  it("delivers url, method, headers and body", function()
    local rt = H.runtime()
    local ns = rt:bind("ECHO", H.Echo)
    local stub = ns:get_by_name("e")
    assert.are.equal("GET https://e/x  []", stub:fetch("https://e/x"):text())
    local res = stub:fetch("https://e/y?q=1", { method = "post", body = "payload",
      headers = { ["X-Thing"] = "A", Accept = 42 } })
    assert.are.equal("POST https://e/y?q=1 payload [accept=42,x-thing=A]", res:text())
  end)

  it("takes a dobj.request, with init overriding it, and copies it", function()
    local seen
    local Keep = H.class("Keep")
    function Keep:fetch(req)
      seen = req
      req.headers["x-added"] = "by the object"
      return dobj.response(req.method .. " " .. req.body)
    end
    local rt = H.runtime()
    local stub = rt:bind("KEEP", Keep):get_by_name("k")
    local req = dobj.request("https://k/", { method = "PUT", body = "b1", headers = { A = "1" } })
    assert.are.equal("https://k/", req.url)
    assert.are.equal("PUT", req.method)
    assert.are.equal("1", req.headers.a)
    assert.are.equal("b1", req:text())
    assert.are.equal("PUT b1", stub:fetch(req):text())
    assert.are_not.equal(req, seen)
    assert.is_nil(req.headers["x-added"])
    assert.are.equal("DELETE b1", stub:fetch(req, { method = "DELETE" }):text())
    assert.are.equal("PUT b2", stub:fetch(req, { body = "b2" }):text())
  end)

  it("keeps binary bodies whole, NUL bytes included, both ways", function()
    local Bin = H.class("Bin")
    function Bin:fetch(req) return dobj.response(req.body .. "\0end") end
    local rt = H.runtime()
    local stub = rt:bind("BIN", Bin):get_by_name("b")
    local body = "\0\255\0x"
    assert.equal(4, #dobj.request("https://b/", { method = "PUT", body = body }).body)
    local res = stub:fetch("https://b/", { method = "PUT", body = body })
    assert.equal(body .. "\0end", res.body)
    assert.equal(body, dobj.response(body).body)
    rt:close()
  end)

  it("builds responses with defaults and checks them", function()
    local r = dobj.response()
    assert.are.equal(200, r.status)
    assert.are.equal("", r.body)
    assert.are.equal("", r:text())
    assert.is_true(r.ok)
    assert.are.same({}, r.headers)
    assert.are.equal("OK", r.status_text)
    local r2 = dobj.response("nope", { status = 404, headers = { ["Content-Type"] = "x/y" } })
    assert.are.equal(404, r2.status)
    assert.is_false(r2.ok)
    assert.are.equal("x/y", r2.headers["content-type"])
    assert.are.equal("dobj.Response(404)", tostring(r2))
    assert.are.equal(dobj.Response, getmetatable(r2))
    assert.has_error(function() dobj.response("x", { status = 99 }) end)
    assert.has_error(function() dobj.response("x", { status = 600 }) end)
    -- The core's range and workerd's message, as in Python.
    for _, bad in ipairs({ 199, 600, math.mininteger }) do
      local ok, err = pcall(dobj.response, "x", { status = bad })
      assert.is_false(ok)
      assert.matches("in the range 200 to 599, inclusive", err, 1, true)
    end
    assert.has_error(function() dobj.response("x", { status = "ok" }) end)
    assert.has_error(function() dobj.response({}) end)
    assert.has_error(function() dobj.response("x", { headers = { a = true } }) end)
    assert.has_error(function() dobj.response("x", { headers = { a = { {} } } }) end)
    assert.has_error(function() dobj.request("/relative") end)
    assert.has_error(function() dobj.request(42) end)
  end)

  it("gives the default instance ctx, env and the class as metatable", function()
    local got
    local Bare = H.class("Bare")
    function Bare:fetch()
      got = self
      return dobj.response("ok")
    end
    local rt = H.runtime { env = { K = "v" } }
    local stub = rt:bind("BARE", Bare):get_by_name("b")
    stub:fetch("https://b/")
    assert.are.equal(Bare, getmetatable(got))
    assert.are.equal("v", got.env.K)
    assert.is_true(got.ctx.id == stub.id)
  end)

  it("finds fetch on the class when the class has no __index", function()
    local Raw = { fetch = function() return dobj.response("raw") end }
    local rt = H.runtime()
    assert.are.equal("raw", rt:bind("RAW", Raw):get_by_name("r"):fetch("https://r/"):text())
  end)

  it("shows ctx.id inside the object, dropping names over 1024 bytes", function()
    local Who = H.class("Who")
    function Who:fetch()
      local id = self.ctx.id
      return dobj.response(tostring(id) .. " " .. (id.name and #id.name or "nil"))
    end
    local rt = H.runtime()
    local ns = rt:bind("WHO", Who)
    local function ask(name)
      local stub = ns:get_by_name(name)
      local hex, len = stub:fetch("https://w/"):text():match("^(%x+) (%w+)$")
      assert.are.equal(tostring(stub.id), hex)
      assert.are.equal(#name, #stub.name) -- the stub keeps the full name
      return len
    end
    assert.are.equal("5", ask("short"))
    assert.are.equal("1024", ask(("n"):rep(1024)))
    assert.are.equal("nil", ask(("n"):rep(1025)))
    assert.are.equal("nil", ns:get(ns:new_unique_id()):fetch("https://w/"):text():match(" (%w+)$"))
  end)

  it("passes env with plain values and every namespace", function()
    local seen
    local A, B = H.class("A"), H.class("B")
    function A:fetch()
      seen = self.env
      return dobj.response("a")
    end
    function B:fetch() return dobj.response("b") end
    local rt = H.runtime { env = { GREETING = "hi", N = 3, T = { x = 1 } } }
    local a = rt:bind("A", A)
    local b = rt:bind("B", B)
    a:get_by_name("x"):fetch("https://a/")
    assert.are.equal("hi", seen.GREETING)
    assert.are.equal(3, seen.N)
    assert.are.equal(1, seen.T.x)
    assert.are.equal(a, seen.A)
    assert.are.equal(b, seen.B)
    assert.are.equal(seen, rt.env)
    assert.are.equal(b, rt.env.B)
    assert.has_error(function() rt:bind("A", A) end)
  end)
end)

describe("concurrency", function()
  it("constructs one instance for concurrent first calls", function()
    local constructed = 0
    local Slow = H.class("Slow")
    function Slow.new(ctx, env)
      constructed = constructed + 1
      local self = setmetatable({ ctx = ctx, n = 0 }, Slow)
      ctx:block_concurrency_while(function() dobj.sleep(0.01) end)
      return self
    end
    function Slow:fetch()
      local n = self.n
      self.n = n + 1
      return dobj.response(tostring(n))
    end
    local rt = H.runtime()
    local ns = rt:bind("SLOW", Slow)
    local got = {}
    for i = 1, 3 do
      rt:spawn(function() got[i] = ns:get_by_name("one"):fetch("https://s/"):text() end)
    end
    rt:run()
    assert.are.equal(1, constructed)
    assert.are.same({ "0", "1", "2" }, got)
  end)

  it("delivers 100 concurrent calls in call order", function()
    local order = {}
    local Log = H.class("Log")
    function Log:fetch(req)
      order[#order + 1] = tonumber(req.url:match("(%d+)$"))
      return dobj.response("ok")
    end
    local rt = H.runtime()
    local stub = rt:bind("LOG", Log):get_by_name("l")
    for i = 1, 100 do
      rt:spawn(function() stub:fetch("https://l/" .. i) end)
    end
    rt:run()
    assert.are.equal(100, #order)
    for i = 1, 100 do assert.are.equal(i, order[i]) end
  end)

  local function interleave(sleep)
    local log = {}
    local Step = H.class("Step")
    function Step:fetch(req)
      local tag = req.url:match("(%a)$")
      log[#log + 1] = "start " .. tag
      if sleep then dobj.sleep(0.001) end
      log[#log + 1] = "end " .. tag
      return dobj.response(tag)
    end
    local rt = H.runtime()
    local stub = rt:bind("STEP", Step):get_by_name("s")
    rt:spawn(function() stub:fetch("https://s/a") end)
    rt:spawn(function() stub:fetch("https://s/b") end)
    rt:run()
    return log
  end

  it("interleaves events when a handler sleeps", function()
    assert.are.same({ "start a", "start b", "end a", "end b" }, interleave(true))
  end)

  it("never interleaves a handler that does not suspend", function()
    assert.are.same({ "start a", "end a", "start b", "end b" }, interleave(false))
  end)

  it("lets a bare coroutine.yield() give way and resume", function()
    local log = {}
    local Y = H.class("Y")
    function Y:fetch(req)
      log[#log + 1] = req.url
      coroutine.yield()
      log[#log + 1] = req.url .. " again"
      return dobj.response("y")
    end
    local rt = H.runtime()
    local stub = rt:bind("Y", Y):get_by_name("y")
    rt:spawn(function() stub:fetch("https://y/1") end)
    rt:spawn(function() stub:fetch("https://y/2") end)
    rt:run()
    assert.are.same({ "https://y/1", "https://y/2", "https://y/1 again", "https://y/2 again" }, log)
  end)

  it("suspends only the calling task", function()
    local log = {}
    local Nap = H.class("Nap")
    function Nap:fetch(req)
      dobj.sleep(tonumber(req.url:match("(%d+)$")) / 1000)
      return dobj.response(req.url)
    end
    local rt = H.runtime()
    local ns = rt:bind("NAP", Nap)
    -- (table.insert after the call: `log[#log + 1] = f()` would pick the
    -- index before f suspends.)
    rt:spawn(function() table.insert(log, ns:get_by_name("a"):fetch("https://n/30"):text()) end)
    rt:spawn(function() table.insert(log, ns:get_by_name("b"):fetch("https://n/10"):text()) end)
    rt:spawn(function() table.insert(log, "no call") end)
    rt:run()
    assert.are.same({ "no call", "https://n/10", "https://n/30" }, log)
  end)

  it("passes arguments to spawned tasks and raises their errors from rt:run()", function()
    local rt = H.runtime()
    local got
    rt:spawn(function(a, b) got = a + b end, 2, 3)
    rt:run()
    assert.are.equal(5, got)
    rt:spawn(function() error("task failed", 0) end)
    assert.has_error(function() rt:run() end, "task failed")
    rt:run() -- the error was reported once
  end)

  it("drives the runtime from the main chunk with dobj.sleep", function()
    local rt = H.runtime()
    local done = false
    rt:spawn(function() dobj.sleep(5); done = true end)
    dobj.sleep(1)
    assert.is_false(done)
    dobj.sleep(5)
    assert.is_true(done)
  end)

  it("refuses rt:run() from inside the runtime", function()
    local rt = H.runtime()
    local err
    rt:spawn(function() err = H.catch(function() rt:run() end) end)
    rt:run()
    assert.matches("cannot be called from inside", tostring(err))
  end)
end)

describe("errors", function()
  local Boom = H.class("Boom")
  function Boom.new(ctx, env) return setmetatable({ ctx = ctx, n = 0 }, Boom) end
  function Boom:fetch(req)
    self.n = self.n + 1
    local kind = req.url:match("/(%w+)$")
    if kind == "string" then error("boom", 0) end
    if kind == "located" then error("boom") end
    if kind == "table" then error({ message = "custom", code = 42, detail = { a = 1 } }) end
    if kind == "number" then error(42) end
    if kind == "count" then return dobj.response(tostring(self.n)) end
    return dobj.response("fine")
  end

  local rt, ns
  before_each(function()
    rt = H.runtime()
    ns = rt:bind("BOOM", Boom)
  end)

  it("reach the caller as a remote error value", function()
    local stub = ns:get_by_name("b")
    local err = H.catch(stub.fetch, stub, "https://b/string")
    assert.is_true(dobj.is_error(err))
    assert.are.equal(dobj.Error, getmetatable(err))
    assert.are.equal("boom", err.message)
    assert.are.equal("boom", tostring(err))
    assert.is_true(err.remote)
    assert.are.equal(tostring(stub.id), err.durable_object_id)
    assert.is_string(err.stack)
  end)

  it("keep the Lua location in the message", function()
    local stub = ns:get_by_name("b")
    local err = H.catch(stub.fetch, stub, "https://b/located")
    assert.matches("fetch_spec.lua:%d+: boom$", err.message)
  end)

  it("carry the custom fields of a table error", function()
    local stub = ns:get_by_name("b")
    local err = H.catch(stub.fetch, stub, "https://b/table")
    assert.are.equal("custom", err.message)
    assert.are.equal(42, err.code)
    assert.are.same({ a = 1 }, err.detail)
    assert.is_true(err.remote)
  end)

  it("turn non-string values into a message and keep the value", function()
    local stub = ns:get_by_name("b")
    local err = H.catch(stub.fetch, stub, "https://b/number")
    assert.are.equal("42", err.message)
    assert.are.equal(42, err.value)
  end)

  it("leave the instance alive", function()
    local stub = ns:get_by_name("b")
    H.catch(stub.fetch, stub, "https://b/string")
    assert.are.equal("2", stub:fetch("https://b/count"):text())
  end)

  it("of a class without fetch use workerd's message", function()
    local NoFetch = H.class("NoFetch")
    local nf = rt:bind("NOFETCH", NoFetch)
    local stub = nf:get_by_name("x")
    local err = H.catch(stub.fetch, stub, "https://x/")
    assert.are.equal("Handler does not export a fetch() function.", err.message)
    assert.are.equal("Handler does not export a fetch() function.", tostring(err))
    assert.is_true(err.remote)
    assert.are.equal(tostring(stub.id), err.durable_object_id)
  end)

  it("name the class when fetch returns something else", function()
    local Bad = H.class("BadReturner")
    function Bad:fetch(req)
      if req.url:match("nothing") then return end
      if req.url:match("string") then return "text" end
      return { status = 200, body = "not a response" }
    end
    local stub = rt:bind("BAD", Bad):get_by_name("x")
    local err = H.catch(stub.fetch, stub, "https://x/table")
    assert.are.equal("BadReturner:fetch() must return a dobj.response, got table", err.message)
    assert.is_true(err.remote)
    err = H.catch(stub.fetch, stub, "https://x/string")
    assert.are.equal("BadReturner:fetch() must return a dobj.response, got string", err.message)
    err = H.catch(stub.fetch, stub, "https://x/nothing")
    assert.are.equal("BadReturner:fetch() must return a dobj.response, got no value", err.message)
    -- Without __name the binding name is used.
    local Anon = { fetch = function() return 1 end }
    local a = rt:bind("ANON", Anon):get_by_name("x")
    err = H.catch(a.fetch, a, "https://x/")
    assert.are.equal("ANON:fetch() must return a dobj.response, got number", err.message)
  end)

  it("refuse a relative URL and deliver nothing", function()
    local stub = ns:get_by_name("rel")
    for _, url in ipairs({ "/relative", "relative/path", "", "://x", "1http://x" }) do
      local err = H.catch(stub.fetch, stub, url)
      assert.matches("^Invalid URL", err.message)
      assert.is_nil(err.remote)
    end
    assert.are.equal("1", stub:fetch("https://rel/count"):text())
  end)

  it("raise on a wrong first argument", function()
    local stub = ns:get_by_name("w")
    assert.has_error(function() stub:fetch(42) end)
    assert.has_error(function() stub:fetch({ url = "https://x/" }) end)
    assert.has_error(function() stub:fetch("https://x/", "not a table") end)
    assert.has_error(function() stub.fetch(ns, "https://x/") end)
  end)

  it("of a constructor fail the call and let a new stub retry", function()
    local tries = 0
    local Fragile = H.class("Fragile")
    function Fragile.new(ctx, env)
      tries = tries + 1
      if tries == 1 then error("first construction fails", 0) end
      return setmetatable({}, Fragile)
    end
    function Fragile:fetch() return dobj.response("built") end
    local fr = rt:bind("FRAGILE", Fragile)
    local stub = fr:get_by_name("f")
    local err = H.catch(stub.fetch, stub, "https://f/")
    assert.are.equal("first construction fails", err.message)
    assert.is_true(err.remote)
    assert.are.equal("built", fr:get_by_name("f"):fetch("https://f/"):text())
    assert.are.equal(2, tries)
  end)

  it("refuse stub:fetch and dobj.sleep in a constructor", function()
    local msgs = {}
    local Eager = H.class("Eager")
    function Eager.new(ctx, env)
      msgs[1] = select(2, pcall(function() env.BOOM:get_by_name("x"):fetch("https://b/") end))
      msgs[2] = select(2, pcall(dobj.sleep, 0))
      return setmetatable({}, Eager)
    end
    function Eager:fetch() return dobj.response("ok") end
    assert.are.equal("ok", rt:bind("EAGER", Eager):get_by_name("e"):fetch("https://e/"):text())
    assert.matches("cannot wait here", tostring(msgs[1]))
    assert.matches("cannot suspend here", tostring(msgs[2]))
  end)

  it("refuse stub:fetch from a nested coroutine inside a handler", function()
    local Nest = H.class("Nest")
    function Nest:fetch()
      local co = coroutine.wrap(function() return self.env.BOOM:get_by_name("x"):fetch("https://b/") end)
      local ok, e = pcall(co)
      return dobj.response(ok and "fetched" or tostring(e))
    end
    local text = rt:bind("NEST", Nest):get_by_name("n"):fetch("https://n/"):text()
    assert.matches("cannot wait here", text)
  end)
end)

describe("object-to-object calls", function()
  it("let a handler call other objects and use the results", function()
    local Counter = H.class("Counter")
    function Counter.new(ctx, env) return setmetatable({ n = 0 }, Counter) end
    function Counter:fetch()
      self.n = self.n + 1
      return dobj.response(tostring(self.n))
    end
    local Front = H.class("Front")
    function Front:fetch(req)
      local a = self.env.COUNTER:get_by_name("a"):fetch("https://c/"):text()
      local b = self.env.COUNTER:get_by_name("a"):fetch("https://c/"):text()
      return dobj.response(a .. "," .. b .. " for " .. req.url)
    end
    local rt = H.runtime()
    rt:bind("COUNTER", Counter)
    local front = rt:bind("FRONT", Front)
    assert.are.equal("1,2 for https://f/", front:get_by_name("f"):fetch("https://f/"):text())
    assert.are.equal("3,4 for https://f/", front:get_by_name("g"):fetch("https://f/"):text())
  end)

  it("let an object call itself while it waits", function()
    local Self = H.class("Self")
    function Self:fetch(req)
      local n = tonumber(req.url:match("(%d+)$"))
      if n == 0 then return dobj.response("bottom") end
      local inner = self.env.SELF:get(self.ctx.id):fetch("https://s/" .. (n - 1)):text()
      return dobj.response(n .. ">" .. inner)
    end
    local rt = H.runtime()
    local stub = rt:bind("SELF", Self):get_by_name("me")
    assert.are.equal("3>2>1>bottom", stub:fetch("https://s/3"):text())
  end)

  local Chain = H.class("Chain")
  function Chain:fetch(req)
    local n = tonumber(req.url:match("(%d+)$"))
    if n <= 1 then return dobj.response("end") end
    local res = self.env.CHAIN:get_by_name("c" .. n):fetch("https://c/" .. (n - 1))
    return dobj.response(n .. ">" .. res:text())
  end

  it("allow 16 nested calls", function()
    local rt = H.runtime()
    local stub = rt:bind("CHAIN", Chain):get_by_name("top")
    local text = stub:fetch("https://c/16"):text()
    assert.are.equal(16, select(2, text:gsub(">", "")) + 1)
  end)

  it("fail cleanly beyond a depth of 16", function()
    local rt = H.runtime()
    local stub = rt:bind("CHAIN", Chain):get_by_name("top")
    local err = H.catch(stub.fetch, stub, "https://c/17")
    assert.are.equal("Subrequest depth limit exceeded", err.message)
    assert.is_true(err.remote)
    assert.are.equal(tostring(stub.id), err.durable_object_id)
    -- Deep recursion without a base case fails the same way, fast.
    local Loop = H.class("Loop")
    function Loop:fetch() return self.env.LOOP:get_by_name("x"):fetch("https://l/") end
    local loop = rt:bind("LOOP", Loop):get_by_name("x")
    err = H.catch(loop.fetch, loop, "https://l/")
    assert.are.equal("Subrequest depth limit exceeded", err.message)
    -- The runtime still works afterwards.
    assert.are.equal("end", stub:fetch("https://c/1"):text())
  end)
end)

describe("the core's message rules (dobj_msg_*)", function()
  local function err_of(f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok)
    return err
  end

  it("takes token header names and normalized values only", function()
    for _, bad in ipairs({ "", "bad name", "a:b", "caf\xc3\xa9", "x\0", "(x)" }) do
      assert.matches("Invalid header name.", err_of(dobj.response, "x", { headers = { [bad] = "v" } }), 1, true)
    end
    for _, bad in ipairs({ "a\r\nInjected: 1", "a\nb", "a\0b" }) do
      assert.matches("Invalid header value.", err_of(dobj.response, "x", { headers = { x = bad } }), 1, true)
    end
    local r = dobj.response(nil, { headers = { ["X-Custom_1!#$%&'*+.^`|~"] = " \t v w \r\n", ["X-N"] = 5 } })
    assert.are.same({ ["x-custom_1!#$%&'*+.^`|~"] = "v w", ["x-n"] = "5" }, r.headers)
    assert.are.equal("v w", r.headers:get("X-CUSTOM_1!#$%&'*+.^`|~"))
  end)

  it("keeps set-cookie a list and joins other repeated values", function()
    local r = dobj.response(nil, { headers = {
      ["Set-Cookie"] = { "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2" }, ["x-b"] = { "1", "2" } } })
    assert.are.same({ "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2" }, r.headers:get_set_cookie())
    assert.are.equal("a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT, b=2", r.headers:get("set-cookie"))
    assert.are.equal("1, 2", r.headers["x-b"])
    assert.are.same({}, dobj.response().headers:get_set_cookie())
    -- A request copies them (a list stays a list).
    local req = dobj.request("https://x/", { headers = r.headers })
    assert.are.same({ "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2" }, req.headers:get_set_cookie())
  end)

  it("normalizes methods as Fetch says and refuses a body on GET and HEAD", function()
    assert.are.equal("GET", dobj.request("https://x/", { method = "get" }).method)
    assert.are.equal("DELETE", dobj.request("https://x/", { method = "Delete" }).method)
    -- The other methods workerd knows, only as written; the rest refused
    -- with workerd's message (checked against workerd 2026-11-17).
    for _, m in ipairs({ "PATCH", "TRACE", "PROPFIND", "MSEARCH", "QUERY" }) do
      assert.are.equal(m, dobj.request("https://x/", { method = m }).method)
    end
    for _, m in ipairs({ "patch", "CONNECT", "TRACK", "LINK", "M-SEARCH", "GE T" }) do
      assert.are.equal("Invalid HTTP method string: " .. m,
        err_of(dobj.request, "https://x/", { method = m }))
    end
    assert.are.equal("Invalid header name.", err_of(dobj.request, "https://x/", { headers = { ["a b"] = "x" } }))
    assert.are.equal("Invalid header name.", err_of(dobj.response().headers.get, dobj.response().headers, "a b"))
    for _, m in ipairs({ "GET", "head" }) do
      assert.matches("Request with a GET or HEAD method cannot have a body.",
        err_of(dobj.request, "https://x/", { method = m, body = "x" }), 1, true)
    end
  end)

  it("refuses a body with a null-body status, types a text body, names the status", function()
    for _, status in ipairs({ 204, 205, 304 }) do
      assert.matches("Response with null body status (101, 204, 205, or 304) cannot have a body.",
        err_of(dobj.response, "x", { status = status }), 1, true)
      assert.are.equal("", dobj.response(nil, { status = status }).body)
    end
    assert.are.equal("text/plain;charset=UTF-8", dobj.response("x").headers["content-type"])
    assert.are.equal("text/html", dobj.response("x", { headers = { ["Content-Type"] = "text/html" } })
      .headers["content-type"])
    assert.are.equal("Not Found", dobj.response(nil, { status = 404 }).status_text)
    assert.are.equal("", dobj.response(nil, { status = 599 }).status_text)
  end)
end)
