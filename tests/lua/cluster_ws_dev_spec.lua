-- `dobj-lua dev --cluster` serving WebSockets across nodes, end to end: two
-- servers of examples/chat on one throw-away PostgreSQL
-- (tests/cluster/pgtmp.sh), real clients (the `websockets` library of the
-- project's .venv, run as tests/lua/ws_cluster_client.py: Lua has no
-- WebSocket client here).  The servers use the dobj.so of LUA_CPATH (so
-- ASan runs cover them); tests/python/test_cluster_ws.py runs more cases
-- (pauses, fences, a Python node next to a Lua one).
local H = dofile("tests/lua/helpers.lua")

local HERE = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local ROOT = HERE .. "../../"
local PYTHON = ROOT .. ".venv/bin/python"
local CHAT = ROOT .. "examples/chat/lua/wrangler.toml"

local q = H.q

local function have_client()
  local ok = os.execute("env -u LD_PRELOAD " .. q(PYTHON) .. " -c 'import websockets' 2>/dev/null")
  return ok == true or ok == 0
end

local function client(...)
  local args = {}
  for i, a in ipairs { ... } do args[i] = q(a) end
  local p = assert(io.popen(("env -u LD_PRELOAD timeout -k 5 240 %s %s %s 2>&1")
    :format(q(PYTHON), q(HERE .. "ws_cluster_client.py"), table.concat(args, " "))))
  local out = p:read("a")
  p:close()
  return out
end

describe("dobj-lua dev --cluster WebSockets across nodes", function()
  local pg, dirs, servers
  setup(function() pg = H.postgres() end)
  teardown(function() if pg then pg.stop() end end)
  before_each(function() dirs, servers = {}, {} end)
  after_each(function()
    for _, s in ipairs(servers) do H.dev_stop(s) end
    for _, d in ipairs(dirs) do H.rm_rf(d) end
  end)

  -- A node: its server and its node id.
  local function node()
    local d = H.tmpdir()
    dirs[#dirs + 1] = d
    local s, out = H.dev_start(("--port 0 --config %s --persist-to %s --cluster %s --node-addr 127.0.0.1:0 "
      .. "--cluster-ttl 1.5 --cluster-grace 0.5"):format(q(CHAT), q(d), q(pg.url)), 120,
      "DOBJ_CLUSTER_URL= DOBJ_NODE_ADDR=")
    assert(s, out)
    servers[#servers + 1] = s
    s.node = assert(tonumber(table.concat(s.lines, "\n"):match("cluster: node (%d+) at")))
    return s
  end

  it("broadcasts a chat room's messages to clients of both nodes", function()
    if not have_client() then return pending("no websockets client in .venv (make venv)") end
    local a, b = node(), node()
    assert.are.equal("ok\n", client("chat", a.port, b.port, "lua-across"))
  end)

  it("closes the sockets of a node that lost its lease with 1012, relayed ones too", function()
    if not have_client() then return pending("no websockets client in .venv (make venv)") end
    local a, b = node(), node()
    assert.are.equal("ok\n", client("lost", a.port, b.port, "lua-lost", pg.url, a.node))
    local out = H.dev_stop(a)
    assert.truthy(out:find(("cluster: node %d lost its lease"):format(a.node), 1, true), out)
  end)
end)
