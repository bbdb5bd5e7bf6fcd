-- ctx.storage key-value API: get/put/delete/list/delete_all, limits and
-- messages, transactions, sync.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local function fixture(opts)
  local rt = H.runtime(opts)
  local C = H.job_class("Kv")
  local ns = rt:bind("KV", C)
  return rt, ns:get_by_name("kv"), ns, C
end

describe("storage get/put/delete", function()
  it("gets nil for a missing key and the value after put", function()
    local _, kv = fixture()
    assert.is_nil(H.job(kv, function(s) return s:get("nope") end))
    H.job(kv, function(s) s:put("a", "one") end)
    assert.are.equal("one", H.job(kv, function(s) return s:get("a") end))
    H.job(kv, function(s) s:put("a", "two") end)
    assert.are.equal("two", H.job(kv, function(s) return s:get("a") end))
  end)

  it("gets a table of the present keys for a list of keys", function()
    local _, kv = fixture()
    H.job(kv, function(s) s:put({ a = 1, b = 2, c = 3 }) end)
    local got = H.job(kv, function(s) return s:get({ "a", "c", "zz" }) end)
    assert.are.same({ a = 1, c = 3 }, got)
    assert.are.same({}, H.job(kv, function(s) return s:get({}) end))
  end)

  it("deletes one key (boolean) or many (count)", function()
    local _, kv = fixture()
    H.job(kv, function(s) s:put({ a = 1, b = 2, c = 3 }) end)
    assert.is_true(H.job(kv, function(s) return s:delete("a") end))
    assert.is_false(H.job(kv, function(s) return s:delete("a") end))
    assert.are.equal(2, H.job(kv, function(s) return s:delete({ "a", "b", "c", "d" }) end))
    assert.is_nil(H.job(kv, function(s) return s:get("c") end))
  end)

  it("keeps keys with any bytes, including NUL and the empty key", function()
    local _, kv = fixture()
    H.job(kv, function(s) s:put("a\0b", 1); s:put("", 2); s:put("é", 3) end)
    assert.are.same({ 1, 2, 3 }, { H.job(kv, function(s) return s:get("a\0b"), s:get(""), s:get("é") end) })
    assert.is_nil(H.job(kv, function(s) return s:get("a") end))
  end)

  it("keeps a JavaScript string's lone surrogate (WTF-8) in keys, list bounds and SQL text, as Python does", function()
    -- tests/python/test_lone_surrogates.py: a str "a\ud800" reaches the core as these bytes
    local _, kv = fixture()
    local k = "a" .. utf8.char(0xD800)
    assert.are.same({ 1, 2, k, true, true }, { H.job(kv, function(s)
      s:put(k, 1)
      s:put(k .. "2", 2)
      local l = s:list{ prefix = k, start_after = k }
      local c = s.sql:exec('SELECT ? AS "' .. k .. '"', k)
      return s:get(k), #l + 1, l[1]:sub(1, #k), c.column_names[1] == k, c:one()[k] == k
    end) })
  end)

  it("delete_all removes every key, SQL table and the alarm", function()
    local _, kv = fixture()
    H.job(kv, function(s)
      s:put({ a = 1, b = 2 })
      s.sql:exec("CREATE TABLE t (x)")
      s:set_alarm(os.time() * 1000 + 3600e3)
    end)
    H.job(kv, function(s) s:delete_all() end)
    local n, alarm, tables = H.job(kv, function(s)
      return #s:list(), s:get_alarm(),
        s.sql:exec("SELECT count(*) AS n FROM sqlite_schema WHERE name = 't'"):one().n
    end)
    assert.are.equal(0, n)
    assert.is_nil(alarm)
    assert.are.equal(0, tables)
  end)

  it("can be used from the constructor", function()
    local rt = H.runtime()
    local C = H.job_class("Ctor")
    local new = C.new
    function C.new(ctx, env)
      local self = new(ctx, env)
      self.boots = (ctx.storage:get("boots") or 0) + 1
      ctx.storage:put("boots", self.boots)
      return self
    end
    local ns = rt:bind("CTOR", C)
    assert.are.equal(1, H.job(ns:get_by_name("x"), function(_, _, self) return self.boots end))
  end)
end)

describe("storage list", function()
  local keys = { "b", "a", "ab", "é", "z", "a\0x", "x" }
  local function filled()
    local rt, kv = fixture()
    H.job(kv, function(s) for i, k in ipairs(keys) do s:put(k, i) end end)
    return rt, kv
  end
  local function list_keys(kv, opts)
    return H.job(kv, function(s)
      local res, out = s:list(opts), {}
      for i = 1, #res do out[i] = res[i] end
      return out
    end)
  end

  it("returns an ordered map: res[i] is the i-th key, res[key] its value", function()
    local _, kv = filled()
    local res = H.job(kv, function(s) return s:list() end)
    assert.are.equal(dobj.List, getmetatable(res))
    assert.are.equal(#keys, #res)
    assert.are.same({ "a", "a\0x", "ab", "b", "x", "z", "é" }, { table.unpack(res) })
    assert.are.equal(2, res.a)
    assert.are.equal(4, res["é"])
    local seen = {}
    for k, v in pairs(res) do seen[#seen + 1] = k .. "=" .. v end
    assert.are.same({ "a=2", "a\0x=6", "ab=3", "b=1", "x=7", "z=5", "é=4" }, seen)
  end)

  it("sorts by UTF-8 bytes and honours start, start_after, end, prefix, reverse, limit", function()
    local _, kv = filled()
    assert.are.same({ "ab", "b", "x" }, list_keys(kv, { start = "ab", ["end"] = "z" }))
    assert.are.same({ "b", "x" }, list_keys(kv, { start_after = "ab", ["end"] = "z" }))
    assert.are.same({ "a", "a\0x", "ab" }, list_keys(kv, { prefix = "a" }))
    assert.are.same({ "é", "z", "x" }, list_keys(kv, { reverse = true, limit = 3 }))
    assert.are.same({ "x", "b" }, list_keys(kv, { start = "ab", ["end"] = "z", reverse = true, limit = 2 }))
    assert.are.same({ "a" }, list_keys(kv, { limit = 1 }))
    assert.are.same({}, list_keys(kv, { prefix = "q" }))
  end)

  it("refuses limit <= 0 and start with start_after, with workerd's messages", function()
    local _, kv = filled()
    assert.are.equal("List limit must be positive.", H.job_error(kv, function(s) s:list{ limit = 0 } end))
    assert.are.equal("List limit must be positive.", H.job_error(kv, function(s) s:list{ limit = -1 } end))
    assert.are.equal("list() cannot be called with both start and startAfter values.",
      H.job_error(kv, function(s) s:list{ start = "a", start_after = "b" } end))
  end)
end)

describe("storage limits and messages", function()
  it("refuses nil values with workerd's message", function()
    local _, kv = fixture()
    assert.are.equal("put() called with undefined value.", H.job_error(kv, function(s) s:put("k", nil) end))
    assert.are.equal("put() called with undefined value.", H.job_error(kv, function(s) s:put("k") end))
  end)

  it("limits keys to 2048 bytes", function()
    local _, kv = fixture()
    local big = string.rep("k", 2049)
    assert.are.equal("Keys cannot be larger than 2048 bytes. A key of size 2049 was provided.",
      H.job_error(kv, function(s) s:put(big, 1) end))
    assert.are.equal("Keys cannot be larger than 2048 bytes. A key of size 2049 was provided.",
      H.job_error(kv, function(s) s:get(big) end))
    assert.are.equal("Keys cannot be larger than 2048 bytes. A key of size 2049 was provided.",
      H.job_error(kv, function(s) s:put({ [big] = 1 }) end))
    H.job(kv, function(s) s:put(big:sub(2), 1) end)
  end)

  it("limits values to 131072 bytes (serialized)", function()
    local _, kv = fixture()
    local msg = H.job_error(kv, function(s) s:put("k", string.rep("v", 131072)) end)
    assert.are.equal("Values cannot be larger than 131072 bytes. A value of size 131078 was provided.", msg)
    -- 2 header bytes, the string tag and a 3-byte length: 131066 characters fit
    H.job(kv, function(s) s:put("k", string.rep("v", 131066)) end)
    assert.are.equal(131066, #H.job(kv, function(s) return s:get("k") end))
    assert.matches("Values cannot be larger than 131072 bytes",
      H.job_error(kv, function(s) s:put({ k = dobj.bytes(string.rep("\0", 200000)) }) end))
  end)

  it("limits multi-key calls to 128 keys", function()
    local _, kv = fixture()
    local ks, entries = {}, {}
    for i = 1, 129 do ks[i] = "k" .. i; entries[ks[i]] = i end
    assert.are.equal("get() can be called with at most 128 keys; 129 were given.",
      H.job_error(kv, function(s) s:get(ks) end))
    assert.are.equal("put() can be called with at most 128 keys; 129 were given.",
      H.job_error(kv, function(s) s:put(entries) end))
    assert.are.equal("delete() can be called with at most 128 keys; 129 were given.",
      H.job_error(kv, function(s) s:delete(ks) end))
    assert.are.equal(0, #H.job(kv, function(s) return s:list() end), "nothing was written")
    ks[129] = nil; entries.k129 = nil
    H.job(kv, function(s) s:put(entries) end)
    assert.are.equal(128, H.job(kv, function(s) return s:delete(ks) end))
  end)

  it("writes nothing when one value of a multi-put cannot be stored", function()
    local _, kv = fixture()
    assert.matches("cannot store a value of type function",
      H.job_error(kv, function(s) s:put({ a = 1, b = print, c = 3 }) end))
    assert.are.equal(0, #H.job(kv, function(s) return s:list() end))
  end)

  it("refuses keys that are not strings", function()
    local _, kv = fixture()
    assert.matches("storage keys must be strings %(got number%)", H.job_error(kv, function(s) s:get(1) end))
    assert.matches("storage keys must be strings", H.job_error(kv, function(s) s:put({ [1] = 1 }) end))
  end)

  it("refuses delete_all inside a transaction", function()
    local _, kv = fixture()
    assert.are.equal("Cannot call deleteAll() within a transaction",
      H.job_error(kv, function(s) s:transaction_sync(function() s:delete_all() end) end))
  end)

  it("fails on a storage kept after its instance was reset", function()
    local _, kv, ns = fixture()
    local kept = H.job(kv, function(s, ctx) return s end)
    pcall(H.job, kv, function(s, ctx) ctx:abort() end)
    assert.are.equal("this object was reset or evicted; its ctx and storage belong to a previous instance",
      H.catch(kept.get, kept, "a"))
  end)
end)

describe("storage transactions", function()
  it("transaction_sync commits and returns fn's results; reads see its writes", function()
    local _, kv = fixture()
    local a, b, seen = H.job(kv, function(s)
      local inner
      local x, y = s:transaction_sync(function(txn)
        txn:put("a", 1)
        inner = txn:get("a")
        s:put("b", 2)
        return "x", "y"
      end)
      return x, y, inner
    end)
    assert.are.same({ "x", "y", 1 }, { a, b, seen })
    assert.are.same({ a = 1, b = 2 }, H.job(kv, function(s) return s:get({ "a", "b" }) end))
  end)

  it("transaction_sync discards the writes when fn raises, and re-raises", function()
    local _, kv = fixture()
    H.job(kv, function(s) s:put("a", "before") end)
    local msg = H.job_error(kv, function(s)
      s:transaction_sync(function(txn) txn:put("a", "inside"); txn:put("b", 1); error("boom", 0) end)
    end)
    assert.are.equal("boom", msg)
    assert.are.same({ a = "before" }, H.job(kv, function(s) return s:get({ "a", "b" }) end))
  end)

  it("txn:rollback() discards the writes; fn's results still return; later use fails", function()
    local _, kv = fixture()
    local r, err = H.job(kv, function(s)
      local kept
      local r = s:transaction_sync(function(txn)
        txn:put("a", 1)
        txn:rollback()
        kept = txn
        return "done"
      end)
      local ok, e = pcall(kept.get, kept, "a")
      return r, e
    end)
    assert.are.equal("done", r)
    assert.matches("rolled back", err)
    assert.is_nil(H.job(kv, function(s) return s:get("a") end))
  end)

  it("nests: an inner rollback keeps the outer writes", function()
    local _, kv = fixture()
    H.job(kv, function(s)
      s:transaction_sync(function(outer)
        outer:put("o", 1)
        pcall(outer.transaction_sync, outer, function(inner) inner:put("i", 1); error("inner") end)
        outer:transaction_sync(function(inner) inner:put("j", 1); inner:rollback() end)
      end)
    end)
    assert.are.same({ o = 1 }, H.job(kv, function(s) return s:get({ "o", "i", "j" }) end))
  end)

  it("transaction_sync refuses to yield inside fn and rolls back", function()
    local _, kv = fixture()
    local msg = H.job_error(kv, function(s)
      s:transaction_sync(function(txn) txn:put("a", 1); dobj.sleep(0.01) end)
    end)
    assert.matches("cannot suspend here", msg)
    assert.is_nil(H.job(kv, function(s) return s:get("a") end))
  end)

  it("transaction may yield and holds other events of the object until it ends", function()
    local rt, kv = fixture()
    local log = {}
    rt:spawn(function()
      H.job(kv, function(s)
        local r = s:transaction(function(txn)
          table.insert(log, "txn start")
          txn:put("a", 1)
          dobj.sleep(0.5)
          table.insert(log, "txn end")
          return "result"
        end)
        table.insert(log, "txn returned " .. r)
      end)
    end)
    rt:spawn(function()
      dobj.sleep(0.1)
      H.job(kv, function(s) table.insert(log, "other sees a=" .. tostring(s:get("a"))) end)
    end)
    rt:run()
    assert.are.same({ "txn start", "txn end", "txn returned result", "other sees a=1" }, log)
  end)

  it("transaction discards the writes when fn raises, without resetting the object", function()
    local _, kv = fixture()
    local msg = H.job_error(kv, function(s, ctx, self)
      self.mark = "kept"
      s:transaction(function(txn) txn:put("a", 1); dobj.sleep(0.1); error({ message = "bad", code = 7 }) end)
    end)
    assert.are.equal("bad", msg)
    local a, mark = H.job(kv, function(s, ctx, self) return s:get("a"), self.mark end)
    assert.is_nil(a)
    assert.are.equal("kept", mark, "the instance survived")
  end)

  it("transaction's rollback discards and later writes of the object still commit", function()
    local dir = H.tmpdir()
    local rt, kv = fixture({ storage = dir })
    H.job(kv, function(s)
      s:transaction(function(txn) txn:put("a", 1); dobj.sleep(0.1); txn:rollback() end)
      s:put("b", 2)
    end)
    H.job(kv, function(s) dobj.sleep(0.1); s:put("c", 3) end)
    rt:close()
    local rt2, kv2 = fixture({ storage = dir })
    assert.are.same({ b = 2, c = 3 }, H.job(kv2, function(s) return s:get({ "a", "b", "c" }) end))
    rt2:close()
    H.rm_rf(dir)
  end)

  it("transaction from the main chunk or a constructor runs synchronously", function()
    local _, kv = fixture()
    local s = H.job(kv, function(s) return s end)
    assert.are.equal(42, s:transaction(function(txn) txn:put("m", 1); return 42 end))
    assert.are.equal(1, s:get("m"))
  end)

  it("sync() commits what the handler wrote so far", function()
    local dir = H.tmpdir()
    local rt, kv = fixture({ storage = dir })
    local file = dir .. "/KV/" .. tostring(kv.id) .. ".sqlite"
    local seen = H.job(kv, function(s)
      s:put("a", 1)
      s:sync()
      return H.committed_keys(file) -- another connection's view
    end)
    assert.are.equal("a", seen)
    rt:close()
    H.rm_rf(dir)
  end)
end)
