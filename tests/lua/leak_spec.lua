-- Nothing leaks when runtimes, namespaces, stubs, calls, tasks, storage, SQL
-- cursors and WebSockets are made, used and dropped over and over, with and
-- without cycles through user tables: after a warm-up, the runtimes alive,
-- Lua's memory and the process's resident memory (what the core allocates)
-- stay flat.  The Python twin is tests/python/test_leaks.py.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local UNDER_ASAN = (os.getenv("LD_PRELOAD") or ""):find("libasan") ~= nil

local function full_gc()
  for _ = 1, 4 do collectgarbage("collect") end
end

local function rss_kib()
  local f = io.open("/proc/self/statm")
  if not f then return nil end
  local pages = tonumber(f:read("a"):match("^%d+%s+(%d+)"))
  f:close()
  return pages * 4
end

-- Runs rounds(n) three times for a warm-up, then three more times; Lua's
-- memory, the process's and the number of runtimes must not grow with them.
local function assert_flat(rounds, n)
  for _ = 1, 3 do rounds(n); full_gc() end
  local kib, rss, runtimes = collectgarbage("count"), rss_kib(), dobj._stats().runtimes
  for _ = 1, 3 do rounds(n); full_gc() end
  assert.are.equal(runtimes, dobj._stats().runtimes)
  local grown = collectgarbage("count") - kib
  assert.is_true(grown < 16, ("Lua memory grew by %.1f KiB over %d rounds"):format(grown, 3 * n))
  if rss and not UNDER_ASAN then -- freed memory stays in ASan's quarantine
    grown = rss_kib() - rss
    assert.is_true(grown < 512, ("the process grew by %d KiB over %d rounds"):format(grown, 3 * n))
  end
end

local Thing = H.class("Thing")
function Thing.new(ctx, env)
  local self = setmetatable({ ctx = ctx, env = env }, Thing)
  self.me, self.stub = self, env.THING:get(ctx.id) -- cycles: self, and through the runtime
  return self
end
function Thing:fetch(req)
  if req.url:match("/ws$") then
    local client, server = dobj.websocket_pair()
    self.ctx:accept_web_socket(server, { "t" })
    server:serialize_attachment({ n = { 1, 2, 3 } })
    self.server = server
    return dobj.response(nil, { status = 101, web_socket = client })
  end
  return dobj.response("ok " .. req.url)
end
function Thing:web_socket_message(ws, msg)
  self.last = ws
  for _, other in ipairs(self.ctx:get_web_sockets("t")) do other:send(msg) end
end
function Thing:web_socket_close(ws) self.closed = ws end
function Thing:echo(v) return v end
function Thing:fail() error("no") end
function Thing:storage(i)
  local s = self.ctx.storage
  s:put("k" .. (i % 20), { v = { i, ("x"):rep(40) } })
  s:get("k" .. (i % 20))
  s:get({ "k1", "k2", "nope" })
  s:list({ prefix = "k", limit = 5 })
  s:delete("k" .. ((i + 7) % 20))
  s:transaction(function(t) t:put("t", i); return t:get("t") end)
  s:transaction_sync(function(t) t:put("u", { i }) end)
  assert(not pcall(s.put, s, "k", function() end))
  assert(not pcall(s.transaction_sync, s, function(t) t:put("z", 1); error("x") end))
  assert(not pcall(s.list, s, { limit = 0 }))
  assert(not pcall(s.put, s, ("k"):rep(3000), 1))
  s:sync()
end
function Thing:sql(i)
  local q = self.ctx.storage.sql
  q:exec("CREATE TABLE IF NOT EXISTS t(a INTEGER, b TEXT)")
  q:exec("INSERT INTO t VALUES (?, ?)", i, ("x"):rep(40))
  q:exec("SELECT * FROM t"):next() -- dropped half-read
  q:exec("SELECT * FROM t LIMIT 5"):raw():to_array()
  local box = { q:exec("SELECT * FROM t") } -- a cursor in a cycle
  box.me = box
  assert(not pcall(function() q:exec("SELEC 1") end))
  assert(not pcall(function() q:exec("SELECT ?", {}) end))
  assert(not pcall(function() q:exec("SELECT 1 WHERE 0"):one() end))
  assert(not pcall(function() q:exec("SELECT * FROM _cf_KV") end))
  if i % 50 == 0 then q:exec("DELETE FROM t") end
end
function Thing:tasks()
  self.ctx:wait_until(function() self.done = true end)
  return self.ctx:block_concurrency_while(function() return 1 end)
end

describe("nothing leaks", function()
  local rt, ns
  before_each(function()
    rt = H.runtime()
    ns = rt:bind("THING", Thing)
  end)
  after_each(function() rt:close() end)

  it("runtimes closed or dropped in a cycle", function()
    assert_flat(function(n)
      for i = 1, n do
        local r = H.runtime({ env = { box = {} } })
        r.env.box.rt = r -- runtime -> env -> box -> runtime
        local thing = r:bind("THING", Thing):get_by_name("t")
        thing:fetch("https://t/")
        thing:storage(i)
        if i % 2 == 1 then r:close() end
      end
    end, 30)
  end)

  it("namespaces, IDs, stubs and calls", function()
    assert_flat(function(n)
      for i = 1, n do
        local stub = ns:get_by_name("s" .. (i % 5))
        ns:get(ns:id_from_string(tostring(ns:new_unique_id())))
        assert.are.same({ i, { a = "b" } }, stub:echo({ i, { a = "b" } }))
        stub:fetch("https://s/" .. i)
        assert(not pcall(stub.fail, stub))
        local box = { stub, ns:id_from_name("x") }
        box.me = box
      end
    end, 200)
  end)

  it("storage", function()
    assert_flat(function(n)
      local stub = ns:get_by_name("storage")
      for i = 1, n do stub:storage(i) end
    end, 200)
  end)

  it("SQL cursors", function()
    assert_flat(function(n)
      local stub = ns:get_by_name("sql")
      for i = 1, n do stub:sql(i) end
    end, 200)
  end)

  it("tasks", function()
    assert_flat(function(n)
      local stub = ns:get_by_name("tasks")
      for _ = 1, n do assert.are.equal(1, stub:tasks()) end
    end, 200)
  end)

  it("WebSockets", function()
    assert_flat(function(n)
      for i = 1, n do
        local box = { dobj.websocket_pair() } -- never accepted
        box.me = box
        local stub = ns:get_by_name("room" .. (i % 3))
        local client = stub:fetch("https://r/ws").web_socket
        client:_attach()
        client:_receive("hello " .. i)
        rt:run()
        assert.are.same({ "hello " .. i }, client:_take())
        client:_peer_close(1000, "bye", true)
        rt:run()
      end
    end, 60)
  end)
end)
