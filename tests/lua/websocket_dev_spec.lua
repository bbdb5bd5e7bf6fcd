-- `dobj-lua dev` serving WebSockets (libmicrohttpd's upgrade + wslay's
-- framing, bindings/lua/src/server_ws.c) to a real client: the `websockets`
-- library of the project's .venv, run as tests/lua/ws_client.py (Lua has no
-- WebSocket client here).  The server is a subprocess with the dobj.so of
-- LUA_CPATH (so ASan runs cover it), bounded by timeout(1), stopped by
-- SIGTERM.  The server picks its port (--port 0) and prints it.
local H = dofile("tests/lua/helpers.lua")

local HERE = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local ROOT = HERE .. "../../"
local SCRIPT = ROOT .. "bindings/lua/bin/dobj-lua"
local PYTHON = ROOT .. ".venv/bin/python"
local PRELOAD = os.getenv("LD_PRELOAD")

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function have_client()
  local ok = os.execute("env -u LD_PRELOAD " .. q(PYTHON) .. " -c 'import websockets' 2>/dev/null")
  return ok == true or ok == 0
end

local function start(args)
  local cmd = ("echo $$; exec env -u LD_PRELOAD timeout --foreground -k 5 300 env %s lua5.4 %s dev --port 0 %s 2>&1")
    :format(PRELOAD and ("LD_PRELOAD=" .. q(PRELOAD)) or "", q(SCRIPT), args)
  local p = assert(io.popen("sh -c " .. q(cmd)))
  local s = { p = p, pid = assert(tonumber(p:read("l"))), lines = {} }
  for line in p:lines() do
    s.lines[#s.lines + 1] = line
    s.port = tonumber(line:match("Ready on http://[%d.]+:(%d+)"))
    if s.port then return s end
  end
  p:close()
  error("dobj-lua dev did not start:\n" .. table.concat(s.lines, "\n"))
end

local function stop(s)
  os.execute("kill -TERM " .. s.pid .. " 2>/dev/null")
  local rest = s.p:read("a")
  local _, _, code = s.p:close()
  return table.concat(s.lines, "\n") .. "\n" .. rest, code
end

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
end)
