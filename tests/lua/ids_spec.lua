-- IDs: byte-compatible with workerd (golden vectors), parsing, names, equality.
local HERE = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local H = dofile(HERE .. "helpers.lua")
local dobj = H.dobj

-- workerd's vectors { unique key, name, id } from tests/vectors/ids.tsv, the
-- file every suite reads.
local function load_vectors()
  local path = HERE .. "../vectors/ids.tsv"
  local vectors = {}
  for line in assert(io.lines(path)) do
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local key, name, hex = line:match("^([^\t]*)\t([^\t]*)\t(%x+)$")
      assert(key and #hex == 64, path .. ": bad line " .. line)
      vectors[#vectors + 1] = { key, name, hex }
    end
  end
  assert(#vectors > 0, path .. ": no vectors")
  return vectors
end
local VECTORS = load_vectors()

-- The vector of one key and name (the tests below build on a few of them).
local function golden(key, name)
  for _, v in ipairs(VECTORS) do
    if v[1] == key and v[2] == name then return v[3] end
  end
  error("tests/vectors/ids.tsv has no vector for " .. key .. " / " .. name)
end

local BAD = "Invalid Durable Object ID: must be 64 hex digits"
local FOREIGN = "Durable Object ID is not valid for this namespace."
local JURISDICTION = "Jurisdiction restrictions are not implemented in workerd."

local Plain = H.class("Plain")
function Plain:fetch() return dobj.response("ok") end

local function ns_for(key, binding)
  local rt = H.runtime()
  return rt:bind(binding or "NS", Plain, key and { unique_key = key } or nil), rt
end

describe("golden vectors", function()
  for _, v in ipairs(VECTORS) do
    it(("%s / %q"):format(v[1], v[2]), function()
      local ns = ns_for(v[1])
      local id = ns:id_from_name(v[2])
      assert.are.equal(v[3], tostring(id))
      assert.are.equal(v[3], id:to_string())
      assert.are.equal(v[2], id.name)
    end)
  end

  it("the unique key defaults to the binding name", function()
    local rt = H.runtime()
    local ns = rt:bind("mykey", Plain)
    assert.are.equal(golden("mykey", "http://foo/"), tostring(ns:id_from_name("http://foo/")))
  end)

  it("a name that is not UTF-8 text returns nil, message", function()
    -- It made an ID whose name Python could not show (ctx.id.name raised
    -- UnicodeDecodeError when a Lua node handed such a stub to a Python one).
    local ns = ns_for("k")
    for _, f in ipairs { ns.id_from_name, ns.get_by_name } do
      local id, msg = f(ns, "ok\xff")
      assert.is_nil(id)
      assert.are.equal("a Durable Object name must be UTF-8 text (byte 3 is not)", msg)
    end
    -- Text is any UTF-8, NUL included.
    assert.are.equal("\xc3\xa9\0", ns:id_from_name("\xc3\xa9\0").name)
  end)

  it("a lone surrogate (WTF-8) hashes as workerd hashes it; a split pair is its character", function()
    -- Vectors measured against workerd 1.20261117: idFromName("\ud800") and
    -- idFromName("a\ud800b") hash the WTF-8 bytes, not U+FFFD's.
    local ns = ns_for("test-unique-key")
    assert.are.equal("1a55a99ad39e6a43b7f3e4d4fdd717bce93b54f97e2a86249392f061c68057b0",
      tostring(ns:id_from_name("\xed\xa0\x80")))
    assert.are.equal("3e93db6380a1d6d35636f393dd083c63737b9fc09ebfe4519d0c6e280b625bba",
      tostring(ns:id_from_name("a" .. utf8.char(0xD800) .. "b")))
    -- utf8.char(0xD83D, 0xDE00) is U+1F600 written as two halves: one JS string.
    assert.are.equal(tostring(ns:id_from_name(utf8.char(0x1F600))),
      tostring(ns:id_from_name(utf8.char(0xD83D, 0xDE00))))
  end)

  it("get_by_name reaches the same ID", function()
    local ns = ns_for("test-unique-key")
    local stub = ns:get_by_name("foo")
    assert.are.equal(golden("test-unique-key", "foo"), tostring(stub.id))
    assert.are.equal("foo", stub.name)
  end)
end)

describe("id_from_string", function()
  local ns = ns_for("test-unique-key")
  local hex = golden("test-unique-key", "foo")

  it("parses its own IDs and accepts upper case, printing lower case", function()
    local id = ns:id_from_string(hex:upper())
    assert.are.equal(hex, tostring(id))
    assert.is_true(id == ns:id_from_name("foo"))
  end)

  it("drops the name of a parsed ID", function()
    local id = assert(ns:id_from_string(tostring(ns:id_from_name("foo"))))
    assert.is_nil(id.name)
  end)

  local bad = {
    ["empty"] = "",
    ["odd length (63)"] = hex:sub(1, 63),
    ["too long (65)"] = hex .. "0",
    ["128 digits"] = hex .. hex,
    ["a non-hex digit"] = "g" .. hex:sub(2),
    ["a space"] = " " .. hex:sub(2),
    ["a NUL byte inside"] = hex:sub(1, 10) .. "\0" .. hex:sub(12),
    ["a NUL byte after 64 digits"] = hex .. "\0",
    ["a huge string"] = ("a"):rep(1 << 20),
    ["0x prefix"] = "0x" .. hex:sub(3),
  }
  for what, s in pairs(bad) do
    it("returns nil, message for " .. what, function()
      local id, msg = ns:id_from_string(s)
      assert.is_nil(id)
      assert.are.equal(BAD, msg)
    end)
  end

  it("refuses an ID of another namespace", function()
    local other = ns_for("my-unique-key")
    local id, msg = ns:id_from_string(tostring(other:id_from_name("foo")))
    assert.is_nil(id)
    assert.are.equal(FOREIGN, msg)
  end)

  it("refuses random 64-digit hex strings", function()
    local id, msg = ns:id_from_string(("0"):rep(64))
    assert.is_nil(id)
    assert.are.equal(FOREIGN, msg)
    id, msg = ns:id_from_string(hex:sub(1, 63) .. (hex:sub(64) == "e" and "f" or "e"))
    assert.is_nil(id)
    assert.are.equal(FOREIGN, msg)
  end)

  it("raises on wrong types", function()
    for _, v in ipairs({ 42, true, {}, function() end }) do
      assert.has_error(function() ns:id_from_string(v) end)
    end
    assert.has_error(function() ns:id_from_string() end)
    assert.has_error(function() ns.id_from_string({}, hex) end)
  end)
end)

describe("id_from_name", function()
  local ns = ns_for("test-unique-key")

  it("is deterministic and name-sensitive", function()
    assert.is_true(ns:id_from_name("a") == ns:id_from_name("a"))
    assert.is_false(ns:id_from_name("a") == ns:id_from_name("b"))
    assert.is_false(ns:id_from_name("a") == ns:id_from_name("A"))
  end)

  it("treats embedded NUL bytes as part of the name", function()
    local a, b, c = ns:id_from_name("a\0b"), ns:id_from_name("a"), ns:id_from_name("a\0c")
    assert.is_false(a == b)
    assert.is_false(a == c)
    assert.are.equal("a\0b", a.name)
    assert.are.equal(tostring(a), tostring(ns:id_from_name("a\0b")))
  end)

  it("takes UTF-8 and very long names", function()
    local long = ("x"):rep(4 << 20)
    local id = ns:id_from_name(long)
    assert.are.equal(64, #tostring(id))
    assert.are.equal(tostring(id), tostring(ns:id_from_name(long)))
    assert.are.equal(#long, #id.name)
    assert.are.equal(64, #tostring(ns:id_from_name("日本語 ✓")))
  end)

  it("depends on the unique key", function()
    local other = ns_for("another-key")
    assert.is_false(ns:id_from_name("foo") == other:id_from_name("foo"))
  end)

  it("raises on wrong types", function()
    for _, v in ipairs({ 42, true, {}, function() end }) do
      assert.has_error(function() ns:id_from_name(v) end)
    end
    assert.has_error(function() ns:id_from_name() end)
    assert.has_error(function() ns:id_from_name(nil) end)
  end)
end)

describe("new_unique_id", function()
  it("makes distinct IDs of this namespace, without a name", function()
    local ns = ns_for("u")
    local seen = {}
    for _ = 1, 2000 do
      local id = ns:new_unique_id()
      local s = tostring(id)
      assert.is_nil(seen[s])
      seen[s] = true
      assert.is_nil(id.name)
      assert.matches("^[0-9a-f]+$", s)
      assert.is_true(ns:id_from_string(s) == id)
    end
  end)

  it("refuses a jurisdiction with workerd's message, accepts none", function()
    local ns = ns_for("u")
    assert.has_error(function() ns:new_unique_id("eu") end, JURISDICTION)
    assert.has_error(function() ns:new_unique_id({ jurisdiction = "fedramp" }) end, JURISDICTION)
    assert.has_error(function() ns:jurisdiction("eu") end, JURISDICTION)
    assert.is_not_nil(ns:new_unique_id(nil))
    assert.is_not_nil(ns:new_unique_id({}))
    assert.are.equal(ns, ns:jurisdiction(nil))
  end)

  it("is deterministic with id_seed, beyond workerd's 50-ID limit", function()
    local function seq(seed, n)
      local rt = dobj.runtime { id_seed = seed }
      local ns = rt:bind("S", Plain, { unique_key = "seeded" })
      local out = {}
      for i = 1, n do out[i] = tostring(ns:new_unique_id()) end
      return out
    end
    local a, b, c = seq(7, 200), seq(7, 200), seq(8, 200)
    assert.are.same(a, b)
    assert.are_not.same(a, c)
    local set = {}
    for _, s in ipairs(a) do set[s] = true end
    local n = 0
    for _ in pairs(set) do n = n + 1 end
    assert.are.equal(200, n)
  end)

  it("is random without a seed", function()
    local a, b = ns_for("r"), ns_for("r")
    assert.is_false(a:new_unique_id() == b:new_unique_id())
  end)
end)

describe("Id values", function()
  local ns = ns_for("v")

  it("compare by bytes, not by name", function()
    local named = ns:id_from_name("n")
    local parsed = ns:id_from_string(tostring(named))
    assert.is_true(named == parsed)
    assert.is_true(named:equals(parsed))
    assert.is_true(parsed:equals(named))
    assert.is_false(named:equals(ns:id_from_name("m")))
    assert.is_false(named:equals(tostring(named)))
    assert.is_false(named:equals(nil))
    assert.is_false(named == tostring(named))
  end)

  it("have a name only when made from a name", function()
    assert.are.equal("n", ns:id_from_name("n").name)
    assert.is_nil(ns:new_unique_id().name)
    assert.is_nil(ns:id_from_string(tostring(ns:id_from_name("n"))).name)
  end)

  it("give stubs their id and name", function()
    local id = ns:id_from_name("stubby")
    local stub = ns:get(id)
    assert.is_true(stub.id == id)
    assert.are.equal("stubby", stub.name)
    assert.is_nil(ns:get(ns:new_unique_id()).name)
    assert.is_nil(ns:get(ns:id_from_string(tostring(id))).name)
  end)

  it("of another namespace are refused by get()", function()
    local other = ns_for("w")
    assert.has_error(function() ns:get(other:id_from_name("x")) end, FOREIGN)
    -- The same bytes under the same key are fine even across runtimes.
    local twin = ns_for("v")
    assert.is_not_nil(ns:get(twin:id_from_name("x")))
  end)

  it("are type-checked", function()
    assert.has_error(function() ns:get("6a248adcdc16") end)
    assert.has_error(function() ns:get(nil) end)
    assert.has_error(function() ns:get({}) end)
    assert.has_error(function() ns.get(ns:id_from_name("x"), ns:id_from_name("x")) end)
  end)
end)
