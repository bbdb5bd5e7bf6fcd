-- Durable storage on disk (workerd's layout), the output gate, aborts,
-- eviction, and SQLite handles released by eviction, close and collection.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local function on(dir, opts)
  opts = opts or {}
  opts.storage = dir
  local rt = H.runtime(opts)
  local C = H.job_class("Disk")
  local ns = rt:bind("DISK", C, { unique_key = "disk-key" })
  return rt, ns:get_by_name("d"), C, ns
end

describe("storage on disk", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() collectgarbage(); H.rm_rf(dir) end)

  it("uses DIR/<unique_key>/<hex id>.sqlite with _cf_KV, in WAL mode", function()
    local rt, d = on(dir)
    H.job(d, function(s) s:put("k", "v") end)
    local file = dir .. "/disk-key/" .. tostring(d.id) .. ".sqlite"
    assert.is_truthy(io.open(file))
    rt:close()
    assert.are.equal("wal", H.sh("sqlite3 " .. file .. " 'PRAGMA journal_mode'"))
    assert.matches("CREATE TABLE _cf_KV %(key TEXT PRIMARY KEY, value BLOB%) WITHOUT ROWID",
      H.sh("sqlite3 " .. file .. " .schema"))
    assert.are.equal("k|FF0F220176", H.sh("sqlite3 " .. file .. " 'SELECT key, hex(value) FROM _cf_KV'"))
  end)

  it("a new runtime on the same directory sees every object's data", function()
    local rt, _, _, ns = on(dir)
    for i = 1, 5 do
      H.job(ns:get_by_name("o" .. i), function(s)
        s:put("i", i)
        s.sql:exec("CREATE TABLE t (x); INSERT INTO t VALUES (?)", i * 10)
      end)
    end
    rt:close()
    local rt2, _, _, ns2 = on(dir)
    for i = 1, 5 do
      local v, x = H.job(ns2:get_by_name("o" .. i), function(s)
        return s:get("i"), s.sql:exec("SELECT x FROM t"):one().x
      end)
      assert.are.same({ i, i * 10 }, { v, x })
    end
    rt2:close()
  end)

  it("holds writes back until the handler suspends or returns (output gate)", function()
    local rt, d = on(dir)
    local file = dir .. "/disk-key/" .. tostring(d.id) .. ".sqlite"
    H.job(d, function(s) s:put("0", 0) end) -- creates the file
    local seen = {}
    H.job(d, function(s)
      s:put("a", 1)
      seen.during = H.committed_keys(file) -- another connection's view
      dobj.sleep(0.01) -- suspends: the step's writes commit
      seen.after_suspend = H.committed_keys(file)
      s:put("b", 2)
    end)
    seen.after_response = H.committed_keys(file)
    assert.are.equal("0", seen.during)
    assert.are.equal("0,a", seen.after_suspend)
    assert.are.equal("0,a,b", seen.after_response)
    rt:close()
  end)

  it("is one namespace's at a time: a second runtime on the folder is refused", function()
    local rt = on(dir)
    local ok, err = pcall(on, dir)
    assert.is_false(ok)
    assert.matches("the storage folder .*/disk%-key is already used by the namespace bound as DISK",
      tostring(err))
    rt:close()
    local rt2 = on(dir) -- the folder is free once the first runtime is closed
    rt2:close()
  end)

  it("abort discards the writes of the current event", function()
    local rt, d, _, ns = on(dir)
    H.job(d, function(s) s:put("kept", 1) end)
    pcall(H.job, d, function(s, ctx) s:put("lost", 1); ctx:abort("stop") end)
    local fresh = ns:get_by_name("d")
    assert.are.same({ kept = 1 }, H.job(fresh, function(s) return s:get({ "kept", "lost" }) end))
    rt:close()
  end)

  it("durability = \"power\" works; bad options are refused", function()
    local rt, d = on(dir, { durability = "power" })
    H.job(d, function(s) s:put("k", 1) end)
    rt:close()
    local rt2, d2 = on(dir, { durability = "process" })
    assert.are.equal(1, H.job(d2, function(s) return s:get("k") end))
    rt2:close()
    assert.has_error(function() dobj.runtime{ durability = "disk" } end, 'durability must be "process" or "power"')
    assert.has_error(function() dobj.runtime{ storage = 42 } end, "storage must be a directory name (a string)")
    -- One meaning in every language (the core's): seconds > 0, never = false or math.huge.
    for _, bad in ipairs { 0, -1, 0/0, -math.huge } do
      assert.has_error(function() dobj.runtime{ idle_timeout = bad } end,
        "idle_timeout must be a positive number of seconds (or infinite: never evict)")
    end
    assert.has_error(function() dobj.runtime{ idle_timeout = "10" } end,
      "idle_timeout must be a number of seconds or false, got string")
    dobj.runtime{ idle_timeout = math.huge }:close()
  end)

  it("closing or collecting a runtime releases its SQLite handles", function()
    local rt, _, _, ns = on(dir)
    for i = 1, 3 do H.job(ns:get_by_name("h" .. i), function(s) s:put("k", i) end) end
    assert.is_true(H.open_files(dir) >= 3)
    assert.are.equal(3, ns:_stats().open_storages)
    rt:close()
    assert.are.equal(0, H.open_files(dir))
    local rt2, d2 = on(dir)
    H.job(d2, function(s) s:put("k", 1) end)
    assert.is_true(H.open_files(dir) >= 1)
    rt2, d2 = nil, nil
    collectgarbage(); collectgarbage()
    assert.are.equal(0, H.open_files(dir, true), "metadata.sqlite too")
  end)
end)

describe("eviction", function()
  it("evicts idle objects: the constructor runs again and the data is kept", function()
    local dir = H.tmpdir()
    local rt, d, C, ns = on(dir, { idle_timeout = 5 })
    local old_ctx = H.job(d, function(s, ctx) s:put("n", 1); return ctx end)
    assert.are.equal(1, C.constructed)
    dobj.sleep(4)
    assert.are.equal(1, ns:_stats().live, "not idle long enough")
    dobj.sleep(2)
    assert.are.same({ live = 0, open_storages = 0 }, ns:_stats())
    assert.are.equal(0, H.open_files(dir))
    assert.matches("reset or evicted", H.catch(function() return old_ctx.storage:get("n") end))
    assert.are.equal(1, H.job(d, function(s) return s:get("n") end), "the same stub reaches a new instance")
    assert.are.equal(2, C.constructed)
    rt:close()
    H.rm_rf(dir)
  end)

  it("keeps in-memory storage across eviction (workers-sdk #2700)", function()
    local rt = H.runtime({ idle_timeout = 1 })
    local C = H.job_class("Mem")
    local ns = rt:bind("MEM", C)
    H.job(ns:get_by_name("m"), function(s) s:put("k", "v"); s.sql:exec("CREATE TABLE t (x)") end)
    rt:advance(2)
    assert.are.equal(0, ns:_stats().live)
    local v, n = H.job(ns:get_by_name("m"), function(s)
      return s:get("k"), s.sql:exec("SELECT count(*) AS n FROM t"):one().n
    end)
    assert.are.same({ "v", 0 }, { v, n })
    assert.are.equal(2, C.constructed)
  end)

  it("does not evict an object with an event in flight, and defaults to 10 s", function()
    local rt = H.runtime()
    local C = H.job_class("Busy")
    local ns = rt:bind("BUSY", C)
    local s = ns:get_by_name("b")
    rt:spawn(function() H.job(s, function() dobj.sleep(30) end) end)
    rt:advance(20)
    assert.are.equal(1, ns:_stats().live, "busy for 20 s")
    rt:run()
    rt:advance(9)
    assert.are.equal(1, ns:_stats().live, "idle for 9 s")
    rt:advance(2)
    assert.are.equal(0, ns:_stats().live, "idle for 11 s")
  end)

  it("idle_timeout = false never evicts", function()
    local rt = H.runtime({ idle_timeout = false })
    local ns = rt:bind("KEEP", H.job_class("Keep"))
    H.job(ns:get_by_name("k"), function() end)
    rt:advance(3600)
    assert.are.equal(1, ns:_stats().live)
  end)
end)
