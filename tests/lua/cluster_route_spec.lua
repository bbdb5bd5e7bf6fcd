-- Calls between the nodes of a cluster (docs/cluster.md, "Routing") on a real
-- PostgreSQL: this process and a Lua node process (route_node.lua) call each
-- other's objects by fetch and RPC, errors arrive as the object raised them,
-- a call in flight when its owner is SIGKILLed fails with err.retryable, and
-- nodes of different TTLs call each other after the shorter idle bound.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"

-- A node process; its pid (first line) lets the test kill it.  An options
-- table may come before the names: { ttl = seconds } (its cluster TTL; 1.5).
local function start_node(url, dir, ...)
  local opts = type((...)) == "table" and (...) or {}
  local names = table.concat({ select(type((...)) == "table" and 2 or 1, ...) }, " ")
  local p = assert(io.popen("exec sh -c 'echo $$; TTL=" .. (opts.ttl or 1.5) .. " exec lua5.4 " ..
    here .. "route_node.lua " .. url .. " " .. dir .. " 127.0.0.1:0 " .. names .. "'"))
  local pid = assert(tonumber(p:read("l")))
  local id, addr = p:read("l"):match("^ready (%d+) (%S+)$")
  return { pipe = p, pid = pid, id = tonumber(id), addr = addr }
end

local function kill(node)
  if not node.killed then os.execute("kill -KILL " .. node.pid) end
  node.killed = true
end

local Box = H.class("Box")
function Box.new(ctx, env) return setmetatable({ ctx = ctx, env = env }, Box) end
function Box:add(n)
  local v = (self.ctx.storage:get("n") or 0) + (n or 1)
  self.ctx.storage:put("n", v)
  return v
end
function Box:node() return "here" end
function Box:slow(s) dobj.sleep(s) return "slept" end

describe("calls between cluster nodes", function()
  local pg, dirs, node
  setup(function() pg = H.postgres() end)
  teardown(function() if pg then pg.stop() end end)
  before_each(function() dirs = {} end)
  after_each(function()
    if node then kill(node) node.pipe:close() node = nil end
    collectgarbage()
    for _, d in ipairs(dirs) do H.rm_rf(d) end
  end)
  local function dir() local d = H.tmpdir() dirs[#dirs + 1] = d return d end
  -- This process's runtime, of cluster TTL `ttl` seconds (1.5 without).
  local function me(ttl)
    local rt = assert(dobj.runtime{ storage = dir(), cluster = pg.url, node_addr = "127.0.0.1:0",
      cluster_ttl = ttl or 1.5, cluster_grace = 0.5 })
    return rt, rt:bind("ROUTE", Box)
  end
  -- A node serving `name` (the global `node`), and a WebSocket from this
  -- runtime to that object, attached, past the object's greeting.
  local function socket_there(name)
    node = start_node(pg.url, dir(), name)
    local rt, ns = me()
    local there = ns:get_by_name(name)
    local res = there:fetch("http://do/ws")
    assert.are.equal(101, res.status)
    local client = res.web_socket
    client:_attach()
    -- An RPC on the same connection comes back after what the object sent
    -- before it: each check waits for one.
    assert.are.equal(node.id, there:node())
    assert.are.same({ "hello from " .. node.id }, client:_take())
    return rt, there, client
  end

  it("reaches objects on the other node, and the other node reaches ours", function()
    node = start_node(pg.url, dir(), "on-node")
    local rt, ns = me()
    assert.is_string(rt:node_addr())
    assert.are.equal(1, ns:get_by_name("on-spec"):add(1)) -- claimed here
    local there = ns:get_by_name("on-node")
    assert.are.equal(node.id, there:node())
    assert.are.equal(2, there:add(2))
    assert.are.same({ 1, "x", { k = true } }, there:echo(1, "x", { k = true }))
    local res = there:fetch("http://do/p?q=1", { method = "POST", body = "hello" })
    assert.are.equal(201, res.status)
    assert.are.equal(tostring(node.id), res.headers["x-node"])
    assert.are.equal("POST http://do/p?q=1 hello", res:text())
    -- The node's object calls ours while this chunk waits for the answer.
    assert.are.equal(2, there:call("on-spec", "add", 1))
    assert.are.equal("here", there:call("on-spec", "node"))
    rt:close()
  end)

  it("passes stubs and IDs to the other node and back", function()
    node = start_node(pg.url, dir(), "ref-there", "ref-node")
    local rt, ns = me()
    assert.are.equal(1, ns:get_by_name("ref-spec"):add(1)) -- claimed here
    local there = ns:get_by_name("ref-there")
    -- A stub in the arguments: the node calls through it, back to this process.
    assert.are.equal(2, there:use(ns:get_by_name("ref-spec"), "add", 1))
    assert.are.equal(node.id, there:use(ns:get_by_name("ref-node"), "node"))
    -- A stub as a result: a stub of this runtime, routed as any.
    local s = there:give("ref-spec")
    assert.are.equal("ref-spec", s.name)
    assert.are.equal(3, s:add(1))
    assert.are.equal(node.id, there:give("ref-node"):node())
    -- IDs go and come back as IDs of this namespace, names kept.
    local named, unique = ns:id_from_name("n1"), ns:new_unique_id()
    local back = there:echo(named, { u = unique })
    assert.is_true(back[1] == named)
    assert.are.equal("n1", back[1].name)
    assert.is_true(back[2].u == unique)
    assert.is_nil(back[2].u.name)
    assert.are.equal("here", ns:get(back[1]):node()) -- claimed here: the caller
    -- A namespace the node does not serve: a clear error, the call did not run.
    local other = rt:bind("OTHER", Box)
    local err = H.catch(function() return there:echo(other:get_by_name("x")) end)
    assert.matches("cannot be received on node " .. node.id, err.message, 1, true)
    assert.matches("a stub of namespace 'OTHER', which node " .. node.id .. " does not serve",
      err.message, 1, true)
    assert.is_nil(err.retryable)
    assert.are.equal(node.id, there:node())
    rt:close()
  end)

  it("serves a WebSocket whose object lives on the other node", function()
    local rt, there, client = socket_there("ws-there")
    client:_receive("who")
    there:node()
    assert.are.same({ ("%d lua-tag %d 1"):format(node.id, node.id) }, client:_take())
    client:_receive("close")
    there:node()
    assert.are.same({ { close = 4000, reason = "bye" } }, client:_take())
    client:_peer_close(4000, "bye")
    assert.are.same({ 4000, "bye" }, there:closed())
    rt:close()
  end)

  it("refuses a relayed message too big for a frame between the nodes as a local one", function()
    -- Past DOBJ_WS_MAX_MESSAGE and past what one frame between the nodes
    -- carries (100 MiB + 1 MiB): the entry node dropped it without a word and
    -- counted it as unacknowledged for good (the client never read again).
    local rt, there, client = socket_there("ws-big")
    client:_receive(string.rep("x", (101 << 20) + 1))
    there:node()
    assert.are.same({ { close = 1009, reason = "Message is too large" } }, client:_take())
    assert.are.same({ 1009, "Message is too large" }, there:closed())
    rt:close()
  end)

  it("tells the object of a socket whose caller's node left before the 101 went back", function()
    -- The object accepts, then answers a second later; the caller's node
    -- closes meanwhile.  The 101 went to a connection already gone and the
    -- socket was taken as delivered: it stayed in the object's list, never
    -- closed (its room, and its claim, held for good).
    node = start_node(pg.url, dir(), "ws-orphan")
    local rt, ns = me()
    local there = ns:get_by_name("ws-orphan")
    assert.are.equal(node.id, there:node())
    rt:spawn(function() pcall(there.fetch, there, "http://do/ws-slow") end)
    dobj.sleep(0.3) -- the object's fetch has accepted and sleeps
    rt:close()
    dobj.sleep(1.2) -- its answer went back (to nobody) meanwhile
    rt, ns = me()
    there = ns:get_by_name("ws-orphan")
    assert.are.same({ 1006, "" }, there:closed())
    assert.are.equal(0, there:sockets())
    rt:close()
  end)

  it("delivers the object's errors as a local call would", function()
    node = start_node(pg.url, dir(), "err")
    local rt, ns = me()
    local err = H.catch(function() return ns:get_by_name("err"):boom("bad value") end)
    assert.are.equal("bad value", err.message)
    assert.are.equal("RangeError", err.name)
    assert.is_true(err.remote)
    assert.is_nil(err.retryable)
    err = H.catch(function() return ns:get_by_name("err"):nosuch() end)
    assert.matches("does not implement the method", err.message)
    assert.is_true(err.remote)
    rt:close()
  end)

  it("fails a call whose handler closes its node's runtime, with err.retryable", function()
    node = start_node(pg.url, dir(), "closer")
    local rt, ns = me()
    assert.are.equal(1, ns:get_by_name("closer"):add()) -- the node owns it: the call goes there
    local err = H.catch(function() return ns:get_by_name("closer"):close_runtime() end)
    assert.is_true(err.retryable)
    assert.matches("may or may not have run", err.message)
    -- The node's runtime closed under its handler: the process goes on to its end.
    assert.are.equal("closed", node.pipe:read("l"))
    local ok, how, code = node.pipe:close()
    node.killed, node.pipe = true, { close = function() end }
    assert.are.same({ true, "exit", 0 }, { ok, how, code })
    local n = ns:get_by_name("closer"):add(0) -- released: this node claims it
    assert.is_true(n == 1 or n == 99, tostring(n)) -- its write was never acknowledged
    rt:close()
  end)

  -- Nodes with different TTLs: the called node (TTL 0.25 s) closes an idle
  -- connection after 20 of its TTLs, 5 s; this caller after 10 of its own
  -- (15 s, or 1200 s).  The caller learns the called node's bound (in its
  -- pong) and closes first, by half of it, quietly: a call after 5.5 s idle
  -- goes through.  (It failed: the caller took the called node's close for
  -- a failed node and refused calls to it for a TTL, "stopped answering".)
  for _, ttl in ipairs({ 1.5, 120 }) do
    it(("calls a node of a shorter TTL again after its idle bound (caller's TTL %g s)"):format(ttl),
      function()
      local name = "idle-room-" .. ttl -- one PostgreSQL for the file: the first node's claim stays
      node = start_node(pg.url, dir(), { ttl = 0.25 }, name)
      local rt, ns = me(ttl)
      local there = ns:get_by_name(name)
      assert.are.equal(node.id, there:node())
      assert.are.equal(1, there:add(1))
      dobj.sleep(5.5) -- past the called node's idle bound, nothing sent
      local ok, r = pcall(there.add, there, 1)
      if not ok then error("the call after the idle time failed: " .. tostring(r.message or r)) end
      assert.are.equal(2, r)
      rt:close()
    end)
  end

  it("fails a call in flight when its owner is killed, with err.retryable", function()
    node = start_node(pg.url, dir(), "doomed")
    local rt, ns = me()
    local outcome
    rt:spawn(function() outcome = { pcall(function() return ns:get_by_name("doomed"):slow(30) end) } end)
    dobj.sleep(0.5) -- the call is in the node's handler now
    kill(node)
    rt:run()
    assert.is_false(outcome[1])
    assert.is_true(outcome[2].retryable)
    assert.is_falsy(outcome[2].remote)
    assert.matches("may or may not have run", outcome[2].message)
    rt:close()
  end)
end)
