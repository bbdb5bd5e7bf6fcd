-- Cluster mode on a real PostgreSQL (tests/cluster/pgtmp.sh, the script every
-- suite uses): bad input, every acknowledged write restored by another node,
-- a live owner keeping its object, PostgreSQL killed and restarted.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

-- The owner row of an object locked FOR UPDATE from psql until release():
-- the node's appends for it (which lock it FOR SHARE) wait meanwhile.  psql
-- says when it holds the lock through a FIFO.
local function row_lock(pg, id)
  local fifo = os.tmpname()
  os.remove(fifo)
  assert(os.execute("mkfifo '" .. fifo .. "'"))
  local p = assert(io.popen(H.TOOL_ENV .. "psql -XAtq -v ON_ERROR_STOP=1 '" .. pg.url .. "' >/dev/null", "w"))
  p:write("BEGIN;\nSELECT 1 FROM dobj_owner WHERE object_id = '\\x" .. tostring(id) ..
    "'::bytea FOR UPDATE;\n\\! echo locked > '" .. fifo .. "'\n")
  p:flush()
  local f = assert(io.open(fifo, "r"))
  assert(f:read("l") == "locked")
  f:close()
  os.remove(fifo)
  local lock = {}
  function lock.release()
    if p then
      p:write("COMMIT;\n")
      p:close()
      p = nil
    end
  end
  return lock
end

local Counter = H.class("Counter")
function Counter.new(ctx) return setmetatable({ ctx = ctx }, Counter) end
function Counter:add(n)
  local v = (self.ctx.storage:get("n") or 0) + (n or 1)
  self.ctx.storage:put("n", v)
  return v
end
function Counter:get() return self.ctx.storage:get("n") or 0 end
-- rt:close() from a handler, mid-call, after its own write (whose append is
-- out on the node's connection when the runtime closes).
local RT = {}
function Counter:close_runtime(key)
  self.ctx.storage:put("n", 99)
  RT[key]:close()
  return "closed"
end
function Counter:table()
  -- A schema change travels as pages, like any other write.
  self.ctx.storage.sql:exec("CREATE TABLE IF NOT EXISTS t (x TEXT)")
  self.ctx.storage.sql:exec("INSERT INTO t VALUES ('row')")
  return self.ctx.storage.sql:exec("SELECT count(*) AS n FROM t"):one().n
end

local Alarmed = H.class("Alarmed")
Alarmed.fired = {}
function Alarmed.new(ctx) return setmetatable({ ctx = ctx }, Alarmed) end
function Alarmed:set(when) self.ctx.storage:set_alarm(when) end
function Alarmed:read() return self.ctx.storage:get_alarm() end
function Alarmed:alarm() Alarmed.fired[#Alarmed.fired + 1] = self.ctx.id.name end

describe("cluster mode", function()
  local pg, dirs
  setup(function() pg = H.postgres() end)
  teardown(function() if pg then pg.stop() end end)
  before_each(function() dirs = {} end)
  after_each(function()
    collectgarbage()
    collectgarbage()
    for _, d in ipairs(dirs) do H.rm_rf(d) end
  end)

  local function node(opts)
    opts = opts or {}
    local d = H.tmpdir()
    dirs[#dirs + 1] = d
    local rt = assert(dobj.runtime{ storage = d, cluster = opts.cluster or pg.url,
      node_addr = "127.0.0.1:0", cluster_snapshot_bytes = opts.snapshot_bytes,
      cluster_snapshot_part_bytes = opts.part_bytes, cluster_ttl = opts.ttl,
      cluster_grace = opts.grace })
    if opts.key then RT[opts.key] = rt end
    return rt, rt:bind("COUNTER", Counter)
  end

  it("refuses bad input with nil and a message, in bounded time", function()
    local d = H.tmpdir()
    dirs[#dirs + 1] = d
    local rt, err = dobj.runtime{ storage = d, cluster = "postgresql://h/db?nosuch=1" }
    assert.is_nil(rt)
    assert.matches("invalid PostgreSQL URL", err)
    local t0 = os.time()
    rt, err = dobj.runtime{ storage = d, cluster = "postgresql://dobj@127.0.0.1:1/postgres" }
    assert.is_nil(rt)
    assert.matches("cannot connect to PostgreSQL", err)
    assert.is_true(os.time() - t0 <= 5)
    rt, err = dobj.runtime{ cluster = pg.url }
    assert.is_nil(rt)
    assert.matches("storage directory", err)
    rt, err = dobj.runtime{ storage = d, cluster = "" }
    assert.is_nil(rt)
    assert.matches("a PostgreSQL URL is needed", err)
    assert.matches("cluster must be a PostgreSQL URL", H.catch(dobj.runtime, { storage = d, cluster = 1 }))
    -- Not UTF-8 (a WTF-8 lone surrogate, a stray byte): the core's rule, the
    -- same message as Python's for a str with a lone surrogate.
    rt, err = dobj.runtime{ storage = d, cluster = "postgresql://h/d\xed\xa0\x80" }
    assert.is_nil(rt)
    assert.are.equal("cluster: the PostgreSQL URL must be UTF-8 text (byte 17 is not)", err)
    rt, err = dobj.runtime{ storage = d, cluster = pg.url, node_addr = "127.0.0.1:\xff" }
    assert.is_nil(rt)
    assert.are.equal("cluster: the node address must be UTF-8 text (byte 11 is not)", err)
    -- Where a node listens, not where other nodes reach it.
    rt, err = dobj.runtime{ storage = d, cluster = pg.url, node_addr = "0.0.0.0:0" }
    assert.is_nil(rt)
    assert.matches("node_addr 0.0.0.0:0 is any address of this machine, which other nodes cannot reach", err, 1, true)
    -- Times: a negative grace was taken for "none" (the file and the
    -- environment refused it); past a day was accepted, then undefined
    -- behaviour in the network thread's wait or a PostgreSQL error.
    for _, c in ipairs {
      { "cluster_grace", -1, "cluster_grace: the grace period must be 0 or more seconds" },
      { "cluster_ttl", 1e12, "cluster_ttl: the lease time to live must be a number of seconds from 0.1 to 86400" },
      { "cluster_timeout", 1e7, "cluster_timeout: the PostgreSQL timeout must be a number of seconds from 0.01 to 86400" },
      { "cluster_ttl", -math.huge, "cluster_ttl: must be a finite number of seconds" },
      { "cluster_grace", 0 / 0, "cluster_grace: must be a finite number of seconds" },
    } do
      rt, err = dobj.runtime{ storage = d, cluster = "postgresql://nobody@127.0.0.1:1/x", [c[1]] = c[2] }
      assert.is_nil(rt)
      assert.are.equal(c[3], err)
    end
  end)

  it("never takes a runtime's own data for a node's cache, nor the other way round", function()
    -- A project that ran without the cluster, started as a node: a node
    -- replaced its objects' files with PostgreSQL's state (none: deleted).
    local d = H.tmpdir()
    dirs[#dirs + 1] = d
    local rt = assert(dobj.runtime{ storage = d })
    local s = rt:bind("COUNTER", Counter):get_by_name("own")
    assert.are.same({ 1, 2 }, { s:add(), s:add() })
    rt:close()
    rt = assert(dobj.runtime{ storage = d, cluster = pg.url, node_addr = "127.0.0.1:0" })
    assert.matches("the storage folder .*/COUNTER holds the objects of a runtime without the cluster",
      H.catch(rt.bind, rt, "COUNTER", Counter))
    rt:close()
    rt = assert(dobj.runtime{ storage = d })
    assert.are.equal(3, rt:bind("COUNTER", Counter):get_by_name("own"):add())
    rt:close()
    -- A node's cache, then a runtime without the cluster on it.
    local rt2, ns2 = node()
    assert.are.equal(1, ns2:get_by_name("cached"):add())
    rt2:close()
    rt = assert(dobj.runtime{ storage = dirs[#dirs] })
    assert.matches("is a cluster node's cache of PostgreSQL's data", H.catch(rt.bind, rt, "COUNTER", Counter))
    rt:close()
  end)

  it("another node restores every acknowledged write", function()
    local rt, ns = node()
    assert.is_true(math.type(rt:node_id()) == "integer")
    local s = ns:get_by_name("restore")
    assert.are.same({ 1, 2, 3 }, { s:add(), s:add(), s:add() })
    assert.are.equal(1, s:table())
    rt:close()
    local rt2, ns2 = node() -- another folder: nothing local
    s = ns2:get_by_name("restore")
    assert.are.equal(13, s:add(10))
    assert.are.equal(2, s:table())
    rt2:close()
  end)

  it("compacts the log into a snapshot that another node restores", function()
    -- a snapshot every few writes, in parts of 1 KiB
    local rt, ns = node{ snapshot_bytes = 1, part_bytes = 1024 }
    local s = ns:get_by_name("compacted")
    for i = 1, 10 do assert.are.equal(i, s:add()) end
    assert.are.equal(1, s:table())
    rt:close() -- the compaction under way finishes (bounded)
    local id = "'\\x" .. tostring(ns:id_from_name("compacted")) .. "'::bytea"
    local function sql(q) return tonumber(pg.sql(q)) end
    local snap = sql("SELECT seq FROM dobj_snapshot WHERE object_id = " .. id)
    assert.is_true(snap >= 1) -- (how far depends on how fast the compactor keeps up)
    assert.are.equal(0, sql("SELECT count(*) FROM dobj_wal WHERE seq < " .. snap ..
      " AND object_id = " .. id))
    assert.is_true(sql("SELECT count(*) FROM dobj_snapshot_part WHERE seq = " .. snap ..
      " AND object_id = " .. id) > 4)
    assert.are.equal(1024, sql("SELECT max(octet_length(data)) FROM dobj_snapshot_part WHERE object_id = " .. id))
    assert.matches("cluster_snapshot_bytes must be an integer",
      H.catch(dobj.runtime, { storage = H.tmpdir(), cluster = pg.url, cluster_snapshot_bytes = 1.5 }))
    local none, msg = dobj.runtime{ storage = H.tmpdir(), cluster = pg.url, cluster_snapshot_part_bytes = 100 }
    assert.is_nil(none)
    assert.are.equal("cluster_snapshot_part_bytes: must be from 1 KiB to 256 MiB (bytes)", msg)
    local rt2, ns2 = node() -- another folder: the snapshot and the log after it
    s = ns2:get_by_name("compacted")
    assert.are.equal(11, s:add())
    assert.are.equal(2, s:table())
    rt2:close()
  end)

  it("a log row whose bytes were changed in PostgreSQL is a clear error, not served", function()
    local rt, ns = node()
    local s = ns:get_by_name("flipped")
    for i = 1, 4 do assert.are.equal(i, s:add()) end
    rt:close()
    local id = "'\\x" .. tostring(ns:id_from_name("flipped")) .. "'::bytea"
    -- one bit of row 3's pages, as a disk or a hand might change it
    assert.are.equal("3", pg.sql("UPDATE dobj_wal SET frames = set_byte(frames, 20, " ..
      "get_byte(frames, 20) # 16) WHERE seq = 3 AND object_id = " .. id .. " RETURNING seq"))
    local rt2, ns2 = node() -- another folder: it must read the log
    for _ = 1, 2 do -- and it stays so: nothing is skipped on a second try
      local err = H.catch(function() return ns2:get_by_name("flipped"):add() end)
      assert.are.equal("dobj.Error", getmetatable(err).__name)
      assert.matches("the object's data in PostgreSQL is damaged %(a log row whose checksum does " ..
        "not match at seq 3%); the object is not served", err.message)
    end
    assert.are.equal(1, ns2:get_by_name("intact"):add()) -- other objects are served
    rt2:close()
  end)

  it("a slow commit of one object does not delay another object's reads", function()
    local rt, ns = node()
    local slow, fast = ns:get_by_name("slow-commit"), ns:get_by_name("fast-read")
    assert.are.equal(1, slow:add())
    assert.are.equal(1, fast:add())
    local lock = row_lock(pg, ns:id_from_name("slow-commit"))
    local order = {}
    -- slow's step runs and commits locally; its append waits for the lock on
    -- the node's committer thread, and its result waits for the append.
    rt:spawn(function()
      local v = slow:add()
      order[#order + 1] = "slow " .. v
    end)
    rt:spawn(function()
      local v = fast:get()
      order[#order + 1] = "fast " .. v
      lock.release()
    end)
    local ok, err = pcall(rt.run, rt)
    lock.release()
    assert(ok, err)
    assert.are.same({ "fast 1", "slow 2" }, order)
    rt:close()
  end)

  it("a live owner keeps its object: another node's call goes to it, and a call it did not run when it left runs elsewhere", function()
    local a, nsa = node()
    local b, nsb = node()
    assert.are.equal(1, nsa:get_by_name("owned"):add())
    -- b sends the call to a (this process does not drive a: it never runs
    -- it); a closes: it leaves, releasing the object, and answers the call
    -- it did not run "not the owner", so b runs it itself.
    local outcome
    b:spawn(function() outcome = { pcall(function() return nsb:get_by_name("owned"):add() end) } end)
    dobj.sleep(0.2)
    a:close()
    b:run()
    assert.is_true(outcome[1], outcome[2])
    assert.are.equal(2, outcome[2])
    assert.are.equal(3, nsb:get_by_name("owned"):add()) -- b holds it now
    b:close()
  end)

  it("moves a renamed class's objects to its new name, unless an earlier node holds one", function()
    -- Cluster mode keeps objects in PostgreSQL under their class's name, which
    -- a rename changes: the class started without them. The renamed project's
    -- first start moves them, once no node of the earlier version holds one.
    local entry = [==[
      local dobj = require "dobj"
      local C = {}
      C.__index = C
      function C.new(ctx) return setmetatable({ ctx = ctx }, C) end
      function C:fetch()
        local n = (self.ctx.storage:get("n") or 0) + 1
        self.ctx.storage:put("n", n)
        return dobj.response(tostring(n))
      end
      return { %s = C, fetch = function(req, env) return env.COUNTER:get_by_name("a"):fetch(req) end }
    ]==]
    local config = 'name = "lren"\nmain = "src/entry.lua"\n[[durable_objects.bindings]]\n' ..
      'name = "COUNTER"\nclass_name = "%s"\n[[migrations]]\ntag = "v1"\n' ..
      'new_sqlite_classes = ["Counter"]\n'
    local function project(cls, extra)
      local dir = H.tmpdir()
      local function write(path, text)
        local f = assert(io.open(dir .. "/" .. path, "w"))
        f:write(text)
        f:close()
      end
      os.execute("mkdir -p '" .. dir .. "/src'")
      write("wrangler.toml", config:format(cls) .. extra)
      write("src/entry.lua", entry:format(cls))
      return dir
    end
    local old = project("Counter", "")
    local new = project("Tally",
      '[[migrations]]\ntag = "v2"\nrenamed_classes = [{ from = "Counter", to = "Tally" }]\n')
    local rt = assert(dobj.load { config = old, cluster = pg.url })
    assert.are.equal("1", rt.default.fetch("https://x/"):text())
    local none, msg = dobj.load { config = new, cluster = pg.url }
    assert.is_nil(none)
    assert.truthy(msg:find("class Tally (binding COUNTER) was renamed by a migration, and node ", 1, true), msg)
    assert.truthy(msg:find("holds objects of its earlier name (namespace lren-Counter): a node of " ..
      "the project before the rename would go on serving them", 1, true), msg)
    rt:close()
    rt = assert(dobj.load { config = new, cluster = pg.url })
    assert.are.equal("2", rt.default.fetch("https://x/"):text())
    rt:close()
    H.rm_rf(old)
    H.rm_rf(new)
  end)

  it("loses no acknowledged write when PostgreSQL is killed and restarted", function()
    local rt, ns = node()
    local s = ns:get_by_name("pgkill")
    assert.are.equal(1, s:add())
    pg.run("kill")
    local err = H.catch(function() return s:add() end)
    assert.matches("storage commit failed", err.message)
    pg.run("restart")
    assert.are.equal(2, ns:get_by_name("pgkill"):add())
    rt:close()
    local rt2, ns2 = node()
    assert.are.equal(3, ns2:get_by_name("pgkill"):add())
    rt2:close()
  end)

  -- The caller hears a clear error, the acknowledged write is kept, nothing
  -- is used after it is freed (ASan: make sanitize).  (Python:
  -- test_cluster_hostile.py, with a routed call waiting too.)
  it("rt:close() from a handler after its own write: the caller gets an error, the write before stays", function()
    local a, nsa = node{ key = "a", ttl = 1.5, grace = 0.5 }
    assert.are.equal(1, nsa:get_by_name("own"):add())
    local err = H.catch(function() return nsa:get_by_name("own"):close_runtime("a") end)
    assert.matches("the runtime is closed", type(err) == "table" and err.message or tostring(err))
    assert.are.equal("dobj.Runtime(closed)", tostring(a))
    local b, nsb = node{ ttl = 1.5, grace = 0.5 }
    local n = nsb:get_by_name("own"):add(0)
    assert.is_true(n == 1 or n == 99, tostring(n)) -- its write was never acknowledged
    b:close()
  end)

  it("fires an alarm on whichever node activates the object", function()
    local rt = node()
    local a = rt:bind("ALARMED", Alarmed)
    local when = rt:now() + 300
    a:get_by_name("wake"):set(when)
    rt:close() -- the alarm stays in PostgreSQL, with the object's data
    local rt2 = node()
    local a2 = rt2:bind("ALARMED", Alarmed)
    assert.are.equal(when, a2:get_by_name("wake"):read()) -- restored here, alarm included
    rt2:run() -- the restored alarm's timer keeps the loop going until it fired
    assert.are.same({ "wake" }, Alarmed.fired)
    assert.is_nil(a2:get_by_name("wake"):read())
    rt2:close()
  end)
end)
