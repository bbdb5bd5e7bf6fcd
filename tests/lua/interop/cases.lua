-- The values of the interop check, Lua side (worker.js has the same cases in
-- JS, by key).  Each case: key, Lua value.
local dobj = require "dobj"

local shared = { v = 1 }
local cycle = { name = "c" }
cycle.self = cycle

return {
  { "int", 1 },
  { "neg", -5 },
  { "smi_max", (1 << 30) - 1 },
  { "two30", 1 << 30 },
  { "two31", 1 << 31 },
  { "two40", 1 << 40 },
  { "safe_max", 1 << 53 },
  { "ms_timestamp", 1700000000123 },
  { "double_array", { 0.5, 1.0 } }, -- a JS double array: 1 is N, a float in Lua
  { "bigint", (1 << 53) + 1 },
  { "bigint_neg", math.mininteger },
  { "float", 1.5 },
  { "nan", 0 / 0 },
  { "negzero", -0.0 },
  { "inf", math.huge },
  { "ninf", -math.huge },
  { "true", true },
  { "false", false },
  { "null", dobj.null },
  { "ascii", "hello" },
  { "latin1", "héllo ÿ" },
  { "twobyte", "日本" },
  { "astral", "😀!" },
  { "empty_str", "" },
  { "bytes", dobj.bytes("\0\1\255") },
  { "empty_bytes", dobj.bytes("") },
  { "date", dobj.date(1700000000123) },
  { "array", { 1, "a", dobj.null } },
  { "object", { x = 1, y = "z" } },
  { "empty_obj", {} },
  { "empty_array", dobj.array() },
  { "map", dobj.map({ k = 1, [2] = "two", [true] = false }) },
  { "set", dobj.set({ 1, "a" }) },
  { "nested", { list = { { a = 1 }, { b = { true, false } } }, m = dobj.map({ inner = { 1, 2 } }) } },
  { "shared", { a = shared, b = shared } },
  { "cycle", cycle },
}
