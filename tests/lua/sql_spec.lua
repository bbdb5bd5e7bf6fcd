-- ctx.storage.sql: exec, cursors, bindings, refusals, database_size.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local function fixture()
  local rt = H.runtime()
  local db = rt:bind("SQL", H.job_class("Sql")):get_by_name("db")
  H.job(db, function(s)
    s.sql:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)")
    s.sql:exec("INSERT INTO t (name, score, data) VALUES (?, ?, ?), (?, ?, ?)",
      "ann", 1.5, dobj.bytes("\0\255"), "bob", nil, nil)
  end)
  return rt, db
end

describe("sql:exec", function()
  it("iterates rows as tables keyed by column name; NULL is absent", function()
    local _, db = fixture()
    local rows = H.job(db, function(s)
      local out = {}
      for row in s.sql:exec("SELECT id, name, score, data FROM t ORDER BY id") do out[#out + 1] = row end
      return out
    end)
    assert.are.equal(2, #rows)
    assert.are.equal(1, rows[1].id)
    assert.are.equal("integer", math.type(rows[1].id))
    assert.are.equal("ann", rows[1].name)
    assert.are.equal(1.5, rows[1].score)
    assert.are.equal(dobj.bytes("\0\255"), rows[1].data)
    assert.are.same({ id = 2, name = "bob" }, rows[2])
  end)

  it("has column_names, rows_read and rows_written", function()
    local _, db = fixture()
    local names, read, written, wrote = H.job(db, function(s)
      local c = s.sql:exec("SELECT name AS n, score FROM t")
      local w = s.sql:exec("UPDATE t SET score = 2 WHERE name = ?", "bob")
      return c.column_names, c.rows_read, c.rows_written, w.rows_written
    end)
    assert.are.same({ "n", "score" }, names)
    assert.are.equal(2, read) -- a scan of 2 rows, as workerd counts it (was 3)
    assert.are.equal(0, written)
    assert.are.equal(1, wrote)
  end)

  it("one() returns the only row, or raises workerd's messages", function()
    local _, db = fixture()
    assert.are.same({ n = 2 }, H.job(db, function(s) return s.sql:exec("SELECT count(*) AS n FROM t"):one() end))
    assert.are.equal("Expected exactly one result from SQL query, but got no results.",
      H.job_error(db, function(s) s.sql:exec("SELECT * FROM t WHERE id = 99"):one() end))
    assert.are.equal("Expected exactly one result from SQL query, but got multiple results.",
      H.job_error(db, function(s) s.sql:exec("SELECT * FROM t"):one() end))
  end)

  it("raw() gives rows as arrays, sharing the cursor's position; to_array() the rest", function()
    local _, db = fixture()
    local first, rest, raw_rest = H.job(db, function(s)
      local c = s.sql:exec("SELECT id, name FROM t ORDER BY id")
      local first = c:raw():next()
      local rest = c:to_array()
      local c2 = s.sql:exec("SELECT id, name FROM t ORDER BY id")
      return first, rest, c2:raw():to_array()
    end)
    assert.are.same({ 1, "ann" }, first)
    assert.are.same({ { id = 2, name = "bob" } }, rest)
    assert.are.same({ { 1, "ann" }, { 2, "bob" } }, raw_rest)
  end)

  it("binds nil, dobj.null, booleans, integers, floats, strings and bytes", function()
    local _, db = fixture()
    local row = H.job(db, function(s)
      return s.sql:exec("SELECT ? AS a, ? AS b, ? AS c, ? AS d, ? AS e, ? AS f, ? AS g, typeof(?) AS h",
        nil, dobj.null, true, math.maxinteger, 0.25, "héllo", dobj.bytes("\1\2"), dobj.bytes("")):one()
    end)
    assert.are.same({ c = 1, d = math.maxinteger, e = 0.25, f = "héllo", g = dobj.bytes("\1\2"), h = "blob" }, row)
    assert.matches("cannot bind a value of type table", H.job_error(db, function(s) s.sql:exec("SELECT ?", {}) end))
  end)

  it("returns the last statement's rows when given several", function()
    local _, db = fixture()
    local n = H.job(db, function(s)
      return s.sql:exec("INSERT INTO t (name) VALUES ('c'); SELECT count(*) AS n FROM t"):one().n
    end)
    assert.are.equal(3, n)
  end)

  it("refuses BEGIN/COMMIT/SAVEPOINT with a pointer to the transaction API", function()
    local _, db = fixture()
    for _, q in ipairs({ "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT x" }) do
      assert.matches("transaction_sync", H.job_error(db, function(s) s.sql:exec(q) end), nil, true)
    end
  end)

  it("refuses the reserved _cf_ tables", function()
    local _, db = fixture()
    assert.matches("_cf_KV", H.job_error(db, function(s) s.sql:exec("SELECT * FROM _cf_KV") end), nil, true)
    assert.matches("reserved", H.job_error(db, function(s) s.sql:exec("CREATE TABLE _cf_x (a)") end))
    assert.matches("TEMP objects are not allowed", H.job_error(db, function(s)
      s.sql:exec("CREATE TEMP TRIGGER t AFTER INSERT ON main._cf_KV BEGIN SELECT 1; END") end))
    assert.matches("TEMP objects are not allowed",
      H.job_error(db, function(s) s.sql:exec("CREATE TEMP TABLE _cf_x (a)") end))
    assert.matches("_cf_KV is not allowed", H.job_error(db, function(s) s.sql:exec('SELECT * FROM main."_CF_kv"') end))
  end)

  it("reports SQL errors and wrong binding counts", function()
    local _, db = fixture()
    assert.matches("syntax error", H.job_error(db, function(s) s.sql:exec("SELEC 1") end))
    assert.matches("needs 2 bindings", H.job_error(db, function(s) s.sql:exec("SELECT ?, ?", 1) end))
    assert.matches("bindings were given", H.job_error(db, function(s) s.sql:exec("SELECT 1", 1) end))
    -- SQLite takes a NUL for the end of the text: refused (a trailing one spun for good)
    assert.matches("cannot contain a NUL character (byte 10)",
      H.job_error(db, function(s) s.sql:exec("SELECT 1;\0") end), nil, true)
  end)

  it("writes in a rolled-back transaction_sync are discarded", function()
    local _, db = fixture()
    H.job(db, function(s)
      s:transaction_sync(function(txn) s.sql:exec("DELETE FROM t"); txn:rollback() end)
    end)
    assert.are.equal(2, H.job(db, function(s) return s.sql:exec("SELECT count(*) AS n FROM t"):one().n end))
  end)

  it("database_size is the size of the database in bytes", function()
    local _, db = fixture()
    local size = H.job(db, function(s) return s.sql.database_size end)
    assert.is_true(math.type(size) == "integer" and size > 0 and size % 512 == 0)
  end)

  it("cursors free their rows when collected or closed", function()
    local _, db = fixture()
    H.job(db, function(s)
      local c <close> = s.sql:exec("SELECT * FROM t")
      assert.are.equal(1, c:next().id)
    end)
    collectgarbage()
    local c = H.job(db, function(s) return s.sql:exec("SELECT * FROM t") end)
    c:close()
    assert.has_error(function() c:next() end, "the cursor is closed")
    assert.are.equal("dobj.Cursor(closed)", tostring(c))
  end)
end)
