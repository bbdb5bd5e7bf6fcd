-- Stored values: every value the binding accepts comes back equal (through
-- SQLite, in V8's serialization format), with the bytes workerd writes.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local rt = H.runtime()
local Kv = H.job_class("Values")
local kv = rt:bind("VALUES", Kv):get_by_name("v")

-- Store v in one event, read it back in another.
local function roundtrip(v)
  H.job(kv, function(s) s:put("v", v) end)
  return H.job(kv, function(s) return s:get("v") end)
end

local function check(v, label)
  local back = roundtrip(v)
  local ok, why = H.same_value(v, back)
  assert(ok, (label or tostring(v)) .. ": " .. tostring(why))
  return back
end

describe("values: scalars", function()
  it("booleans", function() check(true); check(false) end)

  it("integers of every size keep their value and integer type", function()
    for _, i in ipairs({ 0, 1, -1, -5, 42, (1 << 30) - 1, -(1 << 30), 1 << 30, -(1 << 30) - 1,
      1 << 31, -(1 << 31), 1 << 32, 1 << 53, -(1 << 53), (1 << 53) + 1, -(1 << 53) - 1,
      1234567890123456789, math.maxinteger, math.mininteger }) do
      check(i, "integer " .. i)
    end
  end)

  it("floats, including -0.0, NaN, infinities and subnormals", function()
    for _, f in ipairs({ 1.5, -2.25, 0.1, 1e300, -1e-300, 5e-324, 2^60, -0.0, 0 / 0, math.huge, -math.huge }) do
      check(f, "float " .. tostring(f))
    end
  end)

  it("the integer rule: floats stay floats, except whole ones past 2^30 (V8's form of an integer)", function()
    local back = roundtrip(3.0)
    assert.are.equal("float", math.type(back))
    assert.are.equal(3.0, back)
    assert.are.equal("float", math.type(roundtrip(1.0)))
    assert.are.equal("float", math.type(roundtrip(-0.0)))
    assert.are.equal("integer", math.type(roundtrip(2.0^40)), "stored as V8 stores the integer 2^40")
    assert.are.equal("float", math.type(roundtrip(2.0^60)), "beyond 2^53 a double stays a float")
    assert.are.equal("integer", math.type(roundtrip(1 << 40)))
    assert.are.equal("integer", math.type(roundtrip(1 << 60)))
  end)

  it("UTF-8 strings: ASCII, Latin-1, BMP, astral, NUL, empty, long", function()
    for _, str in ipairs({ "", "hello", "héllo", "日本", "😀 smile", "a\0b", "ÿ", string.rep("xé", 20000) }) do
      check(str, ("%q"):format(str:sub(1, 20)))
    end
  end)

  it("refuses strings that are not UTF-8, pointing to dobj.bytes", function()
    local msg = H.job_error(kv, function(s) s:put("v", "\255\0\1") end)
    assert.matches("cannot store a string that is not valid UTF-8: wrap binary data in dobj.bytes(s)", msg, 1, true)
    assert.matches("not valid UTF%-8", H.job_error(kv, function(s) s:put("v", { "ok", "\192" }) end))
  end)

  it("dobj.bytes round-trips any bytes, byte for byte", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    for _, b in ipairs({ "", "\0\1\255", table.concat(all), string.rep("\0\255", 50000) }) do
      local back = check(dobj.bytes(b), "bytes")
      assert.are.equal(dobj.Bytes, getmetatable(back))
      assert.are.equal(b, back.data)
      assert.are.equal(#b, #back)
    end
  end)

  it("dobj.null is stored as null and reads back as dobj.null", function()
    assert.are.equal(dobj.null, roundtrip(dobj.null))
    check({ a = dobj.null, b = { 1, dobj.null, 3 } })
  end)

  it("dobj.date round-trips as a Date", function()
    for _, ms in ipairs({ 0, 1700000000123, -86400000, 0.5 }) do
      local back = check(dobj.date(ms), "date " .. ms)
      assert.are.equal(ms, back.ms)
    end
    assert.are.equal("dobj.date(1970-01-01T00:00:00.000Z)", tostring(dobj.date(0)))
  end)

  it("nil and other Lua types are refused", function()
    assert.are.equal("put() called with undefined value.", H.job_error(kv, function(s) s:put("v", nil) end))
    assert.matches("cannot store a value of type function", H.job_error(kv, function(s) s:put("v", print) end))
    assert.matches("cannot store a value of type thread",
      H.job_error(kv, function(s) s:put("v", { coroutine.create(print) }) end))
    assert.matches("cannot store a value of type userdata",
      H.job_error(kv, function(s) s:put("v", { io.stdout }) end))
  end)
end)

describe("values: tables", function()
  it("a sequence is an array; string keys an object; the empty table an object", function()
    check({ 1, "a", true, 2.5 })
    check({ x = 1, y = "z", nested = { deep = { deeper = "yes" } } })
    check({})
    check({ {}, { {} } })
  end)

  it("tables with other keys become Maps and come back with the same keys", function()
    local back = check({ [1] = "a", [3] = "c" }, "holes")
    assert.are.equal(dobj.Map, getmetatable(back), "read back marked as a Map")
    check({ [true] = 1, [false] = 0 }, "boolean keys")
    check({ 1, 2, x = "mixed" }, "mixed keys")
    check({ [1.5] = "f", [-1] = "neg", [0] = "zero" }, "number keys")
    check({ [dobj.bytes("\1")] = "bytes key" }, "bytes key")
  end)

  it("dobj.map forces a Map, dobj.set makes a Set", function()
    local m = check(dobj.map({ a = 1, b = 2 }))
    assert.are.equal(dobj.Map, getmetatable(m))
    local set = check(dobj.set({ 1, "two", true }))
    assert.are.equal(dobj.Set, getmetatable(set))
    assert.are.same({ [1] = true, two = true, [true] = true }, set)
    check(dobj.set())
  end)

  it("dobj.array makes an Array even empty; an empty Array reads back marked, so it stays one", function()
    local e = check(dobj.array(), "dobj.array()")
    assert.are.equal(dobj.Array, getmetatable(e))
    assert.is_nil(next(e))
    check(dobj.array({ 1, "a" }), "dobj.array{ 1, 'a' }")
    local nested = check({ list = dobj.array(), obj = {} })
    assert.are.equal(dobj.Array, getmetatable(nested.list))
    assert.is_nil(getmetatable(nested.obj)) -- the empty table stays an Object
    -- Read back and stored again, it stays an empty Array.
    assert.are.equal(dobj.Array, getmetatable(roundtrip(roundtrip(dobj.array()))))
    assert.are.equal(e, dobj.array(e)) -- marks in place and returns the table
  end)

  it("a dobj.array table with keys other than 1..n is refused", function()
    for _, t in ipairs({ { x = 1 }, { [2] = "b" }, { 1, nil, 3 }, { 1, 2, x = 3 } }) do
      assert.matches("cannot store a dobj.array table with keys other than 1..n",
        H.job_error(kv, function(s) s:put("bad", dobj.array(t)) end))
    end
  end)

  it("a table met twice is stored once and comes back shared", function()
    local shared = { "shared" }
    local back = check({ a = shared, b = shared, c = { shared } })
    assert.are.equal(back.a, back.b)
    assert.are.equal(back.a, back.c[1])
    local b = dobj.bytes("x")
    local back2 = roundtrip({ b, b })
    assert.are.equal(rawequal(back2[1], back2[2]), true)
  end)

  it("cycles are stored and come back as cycles", function()
    local t = { name = "root" }
    t.self = t
    t.kids = { { parent = t } }
    local back = roundtrip(t)
    assert.are.equal(back, back.self)
    assert.are.equal(back, back.kids[1].parent)
    local m = dobj.map()
    m[m] = m
    local bm = roundtrip(m)
    assert.are.equal(bm, bm[bm])
  end)

  it("deep nesting up to 256 tables works, deeper is refused", function()
    local function nest(n)
      local t = {}
      for _ = 2, n do t = { t } end
      return t
    end
    check(nest(256), "256 deep")
    assert.matches("deeper than 256", H.job_error(kv, function(s) s:put("v", nest(257)) end))
  end)

  it("a table key that is not UTF-8 is refused", function()
    assert.matches("table key that is not valid UTF%-8", H.job_error(kv, function(s) s:put("v", { ["\255"] = 1 }) end))
  end)

  it("numeric-looking string keys stay strings", function()
    local back = check({ ["0"] = "a", ["10"] = "b", ["01"] = "c" })
    assert.are.equal("a", back["0"])
    assert.is_nil(back[0])
  end)
end)

describe("values: the bytes stored are V8's", function()
  -- Reference vectors (shared/reference/durable-objects.md section 6).
  local vectors = {
    { 1, "FF0F4902" },
    { -5, "FF0F4909" },
    { 1 << 40, "FF0F4E0000000000007042" },
    { 1.5, "FF0F4E000000000000F83F" },
    { true, "FF0F54" },
    { false, "FF0F46" },
    { dobj.null, "FF0F30" },
    { "hello", "FF0F220568656C6C6F" },
    { "héllo", "FF0F220568E96C6C6F" },
    { "", "FF0F2200" },
    { {}, "FF0F6F7B00" },
    { dobj.array(), "FF0F4100240000" },
    { dobj.bytes("\1\2\3"), "FF0F42030102035642000300" },
    { dobj.date(0), "FF0F440000000000000000" },
    { dobj.map({ k = 1 }), "FF0F3B22016B49023A02" },
    { dobj.set({ 1 }), "FF0F2749022C01" },
    { math.maxinteger, "FF0F5A10FFFFFFFFFFFFFF7F" },
    { (1 << 53) + 1, "FF0F5A100100000000002000" },
    { -(1 << 53) - 1, "FF0F5A110100000000002000" },
    -- The integer rule: I in the Smi range, N within 2^53, Z beyond; floats always N.
    { (1 << 30) - 1, "FF0F49FEFFFFFF07" },
    { 1 << 30, "FF0F4E000000000000D041" },
    { 1 << 53, "FF0F4E0000000000004043" },
    { 1 << 60, "FF0F5A100000000000000010" },
    { 1.0, "FF0F4E000000000000F03F" },
  }

  it("writes the reference encodings", function()
    local dir = H.tmpdir()
    local rt2 = H.runtime({ storage = dir })
    local s2 = rt2:bind("BYTES", H.job_class("Bytes"), { unique_key = "bytes" }):get_by_name("b")
    for i, v in ipairs(vectors) do
      H.job(s2, function(s) s:put("k" .. i, v[1]) end)
    end
    rt2:close()
    local files = H.sh("ls " .. dir .. "/bytes/*.sqlite | grep -v metadata")
    for i, v in ipairs(vectors) do
      local hex = H.sh(("sqlite3 %s \"SELECT hex(value) FROM _cf_KV WHERE key = 'k%d'\""):format(files, i))
      assert.are.equal(v[2], hex, "vector " .. i .. " (" .. tostring(v[1]) .. ")")
    end
    H.rm_rf(dir)
  end)

  it("an object and an array have workerd's layout", function()
    local dir = H.tmpdir()
    local rt2 = H.runtime({ storage = dir })
    local s2 = rt2:bind("BYTES", H.job_class("Bytes"), { unique_key = "bytes" }):get_by_name("b")
    H.job(s2, function(s) s:put("arr", { 1, "a", dobj.null }); s:put("obj", { x = 1 }) end)
    rt2:close()
    local file = H.sh("ls " .. dir .. "/bytes/*.sqlite | grep -v metadata")
    local q = "sqlite3 " .. file .. " \"SELECT hex(value) FROM _cf_KV WHERE key = '%s'\""
    assert.are.equal("FF0F410349022201613024000" .. "3", H.sh(q:format("arr")))
    assert.are.equal("FF0F6F220178490" .. "27B01", H.sh(q:format("obj")))
    H.rm_rf(dir)
  end)
end)

describe("values: corrupt data", function()
  it("a corrupt blob gives a clear error, never a crash", function()
    local dir = H.tmpdir()
    local rt2 = H.runtime({ storage = dir })
    local ns = rt2:bind("BAD", H.job_class("Bad"), { unique_key = "bad" })
    local s2 = ns:get_by_name("b")
    H.job(s2, function(s) s:put("ok", 1) end)
    local file = H.sh("ls " .. dir .. "/bad/*.sqlite | grep -v metadata")
    for i, hex in ipairs({ "", "FF", "FF0F", "FF0F22FF", "FF0F6F", "FF0F41FFFFFFFF0F", "FF0F5E05", "FF0F4902FF",
      "FF0F3F00" }) do
      os.execute(("sqlite3 %s \"INSERT OR REPLACE INTO _cf_KV VALUES ('bad%d', X'%s')\""):format(file, i, hex))
      local msg = H.job_error(s2, function(s) return s:get("bad" .. i) end)
      assert.matches("cannot read the stored value", msg, "blob " .. hex)
    end
    assert.are.equal(1, H.job(s2, function(s) return s:get("ok") end))
    rt2:close()
    H.rm_rf(dir)
  end)

  it("lengths the blob cannot back are refused before anything is built", function()
    local dir = H.tmpdir()
    local rt2 = H.runtime({ storage = dir })
    local s2 = rt2:bind("BAD", H.job_class("Bad"), { unique_key = "bad" }):get_by_name("b")
    H.job(s2, function(s) s:put("ok", 1) end)
    local file = H.sh("ls " .. dir .. "/bad/*.sqlite | grep -v metadata")
    -- 300 sparse arrays of 2^20 holes in 2.7 KB; 2^32-1 slots in 15 bytes;
    -- an index 2^32-2 in an array of length 0 (14 bytes).
    local cases = {
      { "FF0F41AC02" .. ("618080404000808040"):rep(300) .. "2400AC02",
        "value too large to read: a sparse array of length 1048576 at byte 14" },
      { "FF0F61FFFFFFFF0F4000FFFFFFFF0F", "value too large to read: a sparse array of length 4294967295" },
      { "FF0F610055FEFFFFFF0F30400100", "index 4294967294 of a sparse array of length 0" },
    }
    for i, c in ipairs(cases) do
      os.execute(("sqlite3 %s \"INSERT OR REPLACE INTO _cf_KV VALUES ('big%d', X'%s')\""):format(file, i, c[1]))
      local msg = H.job_error(s2, function(s) return s:get("big" .. i) end)
      assert.matches(c[2], msg, 1, true)
    end
    assert.are.equal(1, H.job(s2, function(s) return s:get("ok") end))
    rt2:close()
    H.rm_rf(dir)
  end)
end)
