-- Native classes (C, through libffi) bound with rt:bind_native: every
-- signature kind, conversion errors, fetch, storage, loading errors, and the
-- rate limiter of examples/native.  The libraries are built next to dobj.so
-- (tests/lua/native/CMakeLists.txt, examples/native/CMakeLists.txt).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local BUILD = assert(package.searchpath("dobj", package.cpath), "dobj.so not on LUA_CPATH")
  :match("^(.*)/[^/]*$")
local KINDS = BUILD .. "/libdobjtest_kinds.so"
local RATE = BUILD .. "/librate.so"

local function kinds(rt, name)
  rt = rt or H.runtime()
  local ns = rt:bind_native("KINDS", KINDS, "Kinds")
  return ns:get_by_name(name or "k"), ns, rt
end

-- Arity and conversion errors are found in the caller, before anything is
-- delivered (dobj_native_check): not remote.
local function caller_error(f, ...)
  local err = H.catch(f, ...)
  assert.is_true(dobj.is_error(err))
  assert.is_nil(err.remote)
  return err.message, err
end

local function remote_error(f, ...)
  local err = H.catch(f, ...)
  assert.is_true(dobj.is_error(err))
  assert.is_true(err.remote)
  return err.message, err
end

describe("native classes", function()
  it("round-trip every integer width at its limits", function()
    local k = kinds()
    local limits = {
      i8 = { -128, 127 }, i16 = { -32768, 32767 }, i32 = { -2147483648, 2147483647 },
      i64 = { math.mininteger, math.maxinteger }, u8 = { 0, 255 }, u16 = { 0, 65535 },
      u32 = { 0, 4294967295 }, u64 = { 0, math.maxinteger },
    }
    for kind, lim in pairs(limits) do
      for _, v in ipairs { lim[1], lim[2], 0, 1 } do
        local got = k["echo_" .. kind](k, v)
        assert.are.equal(v, got, kind .. " " .. v)
        assert.are.equal("integer", math.type(got), kind)
      end
      local lo, hi = lim[1] - 1, lim[2] + 1
      if kind ~= "i64" and kind ~= "u64" then
        for _, bad in ipairs { lo, hi } do
          local msg = caller_error(k["echo_" .. kind], k, bad)
          assert.matches("^argument 1 of echo_" .. kind .. "%(%) must be an integer in %[", msg)
        end
      end
    end
    -- Integers beyond 2^53 travel exactly (as BigInts).
    assert.are.equal((2^53 | 0) + 1, k:echo_i64((2^53 | 0) + 1))
    assert.are.equal(-(2^53 | 0) - 3, k:echo_i64(-(2^53 | 0) - 3))
    assert.matches("must be an integer in %[0, 2%^64%-1%], got number", (caller_error(k.echo_u64, k, -1)))
    -- A u64 above 2^63-1 has no Lua integer: it fails in the caller.
    local err = H.catch(k.echo_u64, k, 2.0^63)
    assert.are.equal("cannot receive the RPC value: a BigInt does not fit in a Lua integer (64 bits)", err.message)
    -- C arithmetic happens in the declared type.
    assert.are.equal(0, k:inc_u8(255))
    assert.are.equal(7, k:add_i64(3, 4))
  end)

  it("converts booleans, doubles, strings and bytes", function()
    local k = kinds()
    assert.is_true(k:echo_bool(true))
    assert.is_false(k:echo_bool(false))
    assert.are.equal(0.25, k:echo_f64(0.25))
    -- An f64 result is a float, whole or not (the integer rule: a float 3.0
    -- stays a float); integer results are integers.
    assert.are.equal("float", math.type(k:echo_f64(3)))
    assert.are.equal(3.0, k:echo_f64(3))
    assert.are.equal("integer", math.type(k:echo_i64(1 << 40)))
    assert.are.equal(1 / 0, k:echo_double(1 / 0))
    local nan = k:echo_f64(0 / 0)
    assert.is_true(nan ~= nan)
    assert.are.equal("héllo ✓", k:echo_str("héllo ✓"))
    assert.are.equal("", k:echo_str(""))
    assert.are.equal(dobj.bytes("\0\1\255"), k:echo_bytes(dobj.bytes("\0\1\255")))
    assert.are.equal(dobj.bytes(""), k:echo_bytes(dobj.bytes("")))
    assert.are.equal("true -5 65535 -7 4000000000 0.25 s", k:mix(true, -5, 65535, -7, 4000000000, 0.25, "s"))
    assert.are.equal(136, k:sixteen(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16))
  end)

  it("refuses arguments that do not convert, with the argument's position", function()
    local k = kinds()
    local cases = {
      { "echo_bool", { 1 }, "argument 1 of echo_bool() must be a boolean, got number" },
      { "echo_i32", { 1.5 }, "argument 1 of echo_i32() must be an integer in [-2^31, 2^31-1], got number" },
      { "echo_i32", { "1" }, "argument 1 of echo_i32() must be an integer in [-2^31, 2^31-1], got string" },
      { "echo_f64", { "x" }, "argument 1 of echo_f64() must be a number, got string" },
      { "echo_str", { 5 }, "argument 1 of echo_str() must be a string, got number" },
      { "echo_str", { dobj.bytes("x") }, "argument 1 of echo_str() must be a string, got bytes" },
      { "echo_str", { "a\0b" }, "argument 1 of echo_str() contains a NUL byte, which a C string cannot hold" },
      { "echo_bytes", { "x" }, "argument 1 of echo_bytes() must be bytes, got string" },
      { "echo_u8", { nil }, "argument 1 of echo_u8() must be an integer in [0, 255], got undefined" },
      { "mix", { true, 1, 1, 1, 1, 1, 2 }, "argument 7 of mix() must be a string, got number" },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[3], (caller_error(k[c[1]], k, table.unpack(c[2], 1, #c[2] > 0 and #c[2] or 1))))
    end
    -- Values Lua cannot send fail in the caller, before anything is delivered.
    local err = H.catch(k.echo_str, k, print)
    assert.are.equal("cannot send a value of type function over RPC (argument 1)", err.message)
    assert.is_nil(err.remote)
  end)

  it("checks arity", function()
    local k = kinds()
    assert.are.equal("Kinds.echo_i8() expects 1 argument, got 0", (caller_error(k.echo_i8, k)))
    assert.are.equal("Kinds.add_i64() expects 2 arguments, got 3", (caller_error(k.add_i64, k, 1, 2, 3)))
    assert.are.equal("Kinds.touched() expects 0 arguments, got 1", (caller_error(k.touched, k, 1)))
  end)

  it("passes and returns dobj values", function()
    local k = kinds()
    assert.are.same({ type = "array", len = 2 }, k:describe({ 1, 2 }))
    assert.are.same({ type = "object", len = 1 }, k:describe({ a = 1 }))
    assert.are.same({ type = "Map", len = 1 }, k:describe(dobj.map { [true] = 1 }))
    assert.are.same({ type = "Set", len = 2 }, k:describe(dobj.set { 1, 2 }))
    assert.are.same({ type = "null", len = 0 }, k:describe(dobj.null))
    assert.are.same({ type = "undefined", len = 0 }, k:describe(nil))
    assert.are.same({ type = "Date", len = 0 }, k:describe(dobj.date(1)))
    assert.are.same({ type = "stub", len = 0 }, k:describe(k))
    local v = k:build()
    assert.are.equal(1, v.list[1]); assert.are.equal("two", v.list[2])
    assert.is_true(v.list[3]); assert.are.equal(dobj.null, v.list[4])
    assert.are.equal(dobj.bytes("\0\1\2"), v.bytes)
    assert.are.equal(0.5, v.half)
  end)

  it("keeps instance state; void returns nil, a NULL string null", function()
    local k, ns = kinds()
    assert.are.equal(dobj.null, k:recall())
    assert.is_nil(k:touch())
    k:touch()
    assert.are.equal(2, ns:get_by_name("k"):touched())
    assert.are.equal(0, ns:get_by_name("other"):touched())
    k:remember("kept")
    assert.are.equal("kept", k:recall())
  end)

  it("gives methods the object's ID and name", function()
    local k, ns = kinds(nil, "named")
    assert.are.equal(tostring(ns:id_from_name("named")), k:who())
    assert.are.equal("named", k:whose())
    local u = ns:get(ns:new_unique_id())
    assert.are.equal(dobj.null, u:whose())
  end)

  it("raise errors with message, remote and durable_object_id", function()
    local k = kinds()
    local msg, err = remote_error(k.fail, k, "no luck")
    assert.are.equal("Kinds.fail: no luck", msg)
    assert.are.equal(tostring(k.id), err.durable_object_id)
    assert.are.equal('The RPC receiver does not implement the method "missing".', (remote_error(k.missing, k)))
    assert.are.equal('The RPC receiver does not implement the method "_x".', (remote_error(k._x, k)))
    k:touch() -- still alive
    assert.are.equal(1, k:touched())
  end)

  it("answers fetch with a dobj.response; a class without fetch refuses it", function()
    local k, _, rt = kinds()
    local res = k:fetch("https://k/path?q", { method = "post", body = "payload", headers = { ["X-Kinds"] = "7" } })
    assert.are.equal(201, res.status)
    assert.is_true(res.ok)
    assert.are.equal("POST https://k/path?q payload x-kinds=7", res:text())
    assert.are.equal("yes", res.headers["x-native"])
    assert.are.equal("GET https://k/  x-kinds=-", k:fetch(dobj.request("https://k/")):text())
    local empty = rt:bind_native("EMPTY", KINDS, "Empty"):get_by_name("e")
    assert.are.equal("Handler does not export a fetch() function.", (remote_error(empty.fetch, empty, "https://e/")))
    assert.are.equal(64, #empty:ping())
    assert.matches("Invalid URL", H.catch(k.fetch, k, "/relative").message)
  end)

  it("store values durably in the object's storage", function()
    local dir = H.tmpdir()
    do
      local rt = H.runtime { storage = dir }
      local k = kinds(rt)
      assert.is_nil(k:load("x"))
      k:store("x", { a = { 1, 2 }, b = "two" })
      assert.are.same({ a = { 1, 2 }, b = "two" }, k:load("x"))
      rt:close()
    end
    local rt = H.runtime { storage = dir }
    assert.are.same({ a = { 1, 2 }, b = "two" }, kinds(rt):load("x"))
    rt:close()
    H.rm_rf(dir)
  end)

  it("run the destructor when instances go", function()
    local rt = H.runtime { idle_timeout = 1 }
    local ns = rt:bind_native("KINDS", KINDS, "Kinds")
    local base = ns:get_by_name("probe"):live_instances()
    ns:get_by_name("a"):touch()
    ns:get_by_name("b"):touch()
    assert.are.equal(base + 2, ns:get_by_name("probe"):live_instances())
    rt:advance(5) -- all three evicted
    assert.are.equal(base, ns:get_by_name("probe"):live_instances())
    rt:close()
  end)

  it("are called from Lua objects and take native stubs as arguments", function()
    local Front = H.class("Front")
    function Front:sum(a, b) return self.env.KINDS:get_by_name("k"):add_i64(a, b) end
    function Front:via(stub, s) return stub:echo_str(s) end
    local rt = H.runtime()
    local k = kinds(rt)
    local front = rt:bind("FRONT", Front):get_by_name("f")
    assert.are.equal(12, front:sum(5, 7))
    assert.are.equal("through", front:via(k, "through"))
    local results = {}
    for i = 1, 5 do rt:spawn(function() results[i] = k:add_i64(i, i) end) end
    rt:run()
    assert.are.same({ 2, 4, 6, 8, 10 }, results)
  end)

  it("report loading errors clearly", function()
    local rt = H.runtime()
    local function load_error(path, class)
      local ok, err = pcall(rt.bind_native, rt, "X", path, class)
      assert.is_false(ok)
      return tostring(err)
    end
    assert.matches("^cannot load native library " .. BUILD:gsub("%p", "%%%0") .. "/nope.so: ",
      load_error(BUILD .. "/nope.so", "Kinds"))
    assert.matches("does not export dobj_native_init%(%): not a dobj native library",
      load_error(BUILD .. "/libdobjtest_kinds_noinit.so", "Kinds"))
    assert.matches("registering its classes failed: bad signature \"i128%(i64%)\" for Kinds.wide %(unknown type 'i128'",
      load_error(BUILD .. "/libdobjtest_kinds_badtype.so", "Kinds"))
    assert.matches("registering its classes failed: Kinds.nothing: the function is NULL",
      load_error(BUILD .. "/libdobjtest_kinds_nullfn.so", "Kinds"))
    assert.matches("has no native class named Nope", load_error(KINDS, "Nope"))
    -- An init failing without a reason must not repeat the nope.so error above.
    local failinit = load_error(BUILD .. "/libdobjtest_kinds_failinit.so", "Kinds")
    assert.matches("registering its classes failed: dobj_native_init%(%) failed without saying why", failinit)
    assert.is_nil(failinit:find("nope.so", 1, true))
    assert.is_nil(rawget(rt.env, "X"))
    rt:bind_native("X", KINDS, "Kinds")
    assert.matches("already bound as X", load_error(KINDS, "Kinds"))
    assert.has_error(function() rt:bind_native("Y", KINDS) end)
  end)
end)

describe("the native rate limiter", function()
  it("takes tokens and refills them with (virtual) time", function()
    local rt = H.runtime()
    local limiter = rt:bind_native("LIMITER", RATE, "RateLimiter", { unique_key = "limits" })
    local user = limiter:get_by_name("user-1")
    assert.is_nil(user:configure(3, 1)) -- capacity 3, 1 token per second
    assert.is_true(user:take(1))
    assert.is_true(user:take(2))
    assert.is_false(user:take(1))
    assert.are.equal(0, user:remaining())
    rt:advance(1.5)
    assert.are.equal(1.5, user:remaining())
    assert.is_true(user:take(1))
    assert.is_false(user:take(1))
    rt:advance(100)
    assert.are.equal(3, user:remaining()) -- never above capacity
    -- Another key has its own bucket with the defaults (10 tokens).
    assert.are.equal(10, limiter:get_by_name("user-2"):remaining())
    assert.matches("needs capacity > 0", (remote_error(user.configure, user, 0, 1)))
    assert.matches("take%(tokens%) needs tokens > 0", (remote_error(user.take, user, -1)))
    assert.matches("expects 1 argument, got 0", (caller_error(user.take, user)))
  end)

  it("answers fetch: POST takes a token (200, then 429), GET reports", function()
    local rt = H.runtime()
    local user = rt:bind_native("LIMITER", RATE, "RateLimiter"):get_by_name("u")
    user:configure(1, 0)
    local res = user:fetch("https://limiter/", { method = "POST" })
    assert.are.equal(200, res.status)
    assert.are.equal("application/json", res.headers["content-type"])
    assert.are.equal('{"allowed":true,"remaining":0.000}', res:text())
    assert.are.equal(429, user:fetch("https://limiter/", { method = "POST" }).status)
    assert.are.equal(200, user:fetch("https://limiter/").status)
  end)

  it("is durable across runtimes with storage", function()
    local dir = H.tmpdir()
    do
      local rt = H.runtime { storage = dir }
      local user = rt:bind_native("LIMITER", RATE, "RateLimiter"):get_by_name("u")
      user:configure(5, 0)
      assert.is_true(user:take(4))
      rt:close()
    end
    local rt = H.runtime { storage = dir }
    local user = rt:bind_native("LIMITER", RATE, "RateLimiter"):get_by_name("u")
    assert.are.equal(1, user:remaining())
    assert.is_true(user:take(1))
    assert.is_false(user:take(1))
    rt:close()
    assert.are.equal(1, #H.sh("ls " .. dir .. "/LIMITER/*.sqlite | grep -v metadata"):gsub("[^\n]+", "x"))
    H.rm_rf(dir)
  end)
end)
