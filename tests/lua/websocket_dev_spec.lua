-- `dobj-lua dev` serving WebSockets (libmicrohttpd's upgrade + wslay's
-- framing, bindings/lua/src/server_ws.c) to a real client: the `websockets`
-- library of the project's .venv, run as tests/lua/ws_client.py (Lua has no
-- WebSocket client here).  The server is a subprocess with the dobj.so of
-- LUA_CPATH (so ASan runs cover it), bounded by timeout(1), stopped by
-- SIGTERM.  The server picks its port (--port 0) and prints it.
local H = dofile("tests/lua/helpers.lua")

local HERE = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local ROOT = HERE .. "../../"
local PYTHON = ROOT .. ".venv/bin/python"

local q = H.q

local function have_client()
  local ok = os.execute("env -u LD_PRELOAD " .. q(PYTHON) .. " -c 'import websockets' 2>/dev/null")
  return ok == true or ok == 0
end

local function start(args)
  local s, out = H.dev_start("--port 0 " .. args, 300)
  return s or error("dobj-lua dev did not start:\n" .. out)
end

local stop = H.dev_stop -- (s): everything it printed, its exit code

local function client(scenario, port)
  local p = assert(io.popen(("env -u LD_PRELOAD timeout -k 5 240 %s %s %s %d 2>&1")
    :format(q(PYTHON), q(HERE .. "ws_client.py"), scenario, port)))
  local out = p:read("a")
  p:close()
  return out
end

describe("dobj-lua dev WebSockets", function()
  local dir, servers

  before_each(function()
    dir = H.tmpdir()
    servers = {}
  end)

  after_each(function()
    for _, s in ipairs(servers) do stop(s) end
    H.rm_rf(dir)
  end)

  local function serve(project, extra)
    local s = start(("--config %s --persist-to %s %s"):format(q(project), q(dir), extra or ""))
    servers[#servers + 1] = s
    return s
  end

  it("hibernates, closes with codes, limits messages, and takes 1,000 connections", function()
    if not have_client() then return pending("no websockets client in .venv (make venv)") end
    local s = serve(HERE .. "ws/wrangler.toml", "--idle-timeout 0.5")
    assert.are.equal("ok\n", client("probe", s.port))
  end)

  it("sends what a handler sent before its close, in order, however much", function()
    if not have_client() then return pending("no websockets client in .venv (make venv)") end
    local s = serve(HERE .. "ws/wrangler.toml")
    assert.are.equal("ok\n", client("flood", s.port))
  end)

  it("drops a client that does not read once 32 MiB wait for it (1008), not growing", function()
    if not have_client() then return pending("no websockets client in .venv (make venv)") end
    local s = serve(HERE .. "ws/wrangler.toml")
    assert.are.equal("ok\n", client("slow", s.port))
  end)

  it("reads a client no faster than its object handles it, and bounds pongs", function()
    if not have_client() then return pending("no websockets client in .venv (make venv)") end
    local s = serve(HERE .. "ws/wrangler.toml")
    assert.are.equal("ok\n", client("echo", s.port))
    assert.are.equal("ok\n", client("pings", s.port))
  end)

  it("lets a client that never answers its object's close go after 5 s (1006)", function()
    if not have_client() then return pending("no websockets client in .venv (make venv)") end
    local s = serve(HERE .. "ws/wrangler.toml")
    assert.are.equal("ok\n", client("unanswered", s.port))
  end)

  it("refuses a message in more than 65,536 fragments (1009)", function()
    if not have_client() then return pending("no websockets client in .venv (make venv)") end
    local s = serve(HERE .. "ws/wrangler.toml")
    assert.are.equal("ok\n", client("fragments", s.port))
  end)
end)
