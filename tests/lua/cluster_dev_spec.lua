-- Cluster settings of a Lua project and `dobj-lua cluster init`, on a real
-- PostgreSQL (tests/cluster/pgtmp.sh): the init command's exit status per
-- failure, two `dobj-lua dev --cluster` servers on one database over real
-- HTTP, a bad --cluster as one line and exit status 2, and dobj.load taking
-- the `[dobj.cluster]` table (a caller's value winning over it).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local HERE = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local SCRIPT = HERE .. "../../bindings/lua/bin/dobj-lua"
local EXAMPLE = HERE .. "../../examples/workers/lua-counter"
local PRELOAD = os.getenv("LD_PRELOAD") -- the ASan runtime, for the server only
local BAD_URL = "postgresql://dobj@127.0.0.1/x?bogus=1"

local q, read_all = H.q, H.read_all

-- dobj-lua ARGS (stdout and stderr apart), without DOBJ_CLUSTER_* from
-- the caller's environment: output, error output, exit status.
local function dobj_lua(args, env)
  local err = os.tmpname()
  local out, code = read_all(("env -u LD_PRELOAD -u DOBJ_CLUSTER_URL -u DOBJ_NODE_ADDR env %s %s lua5.4 %s %s 2>%s")
    :format(PRELOAD and ("LD_PRELOAD=" .. q(PRELOAD)) or "", env or "", q(SCRIPT), args, q(err)))
  local f = assert(io.open(err))
  local errout = f:read("a")
  f:close()
  os.remove(err)
  return out, errout, code
end

local function curl(url)
  local out = read_all("env -u LD_PRELOAD curl -s -m 20 -w ' %{http_code}' " .. q(url) .. " 2>&1")
  local body, status = out:match("^(.-) (%d+)$")
  return tonumber(status), body
end

-- `dobj-lua dev --port 0 --config DIR ARGS` (with the variables ENV, as
-- "NAME=value ..."), once it printed "Ready on".
local function start(dir, args, env)
  local s, out = H.dev_start(("--port 0 --config %s %s"):format(q(dir), args), nil, env)
  return s or error("dobj-lua dev did not start:\n" .. out)
end

-- SIGTERM; its exit code.
local function stop(s) return select(2, H.dev_stop(s)) end

-- A loopback port free now (the system's pick, let go): fixed ports collided
-- with other runs of the suite on the same machine ("Address already in use").
local function free_port()
  local srv = assert(dobj.http_listen("127.0.0.1", 0))
  local port = srv:port()
  srv:close()
  return port
end

local function closed_port()
  -- A port in this helper's own range that nothing of the suite listens on.
  return 18399
end

describe("cluster settings and commands (Lua)", function()
  local pg, dirs, servers
  setup(function() pg = H.postgres() end)
  teardown(function() if pg then pg.stop() end end)
  before_each(function() dirs, servers = {}, {} end)
  after_each(function()
    for _, s in ipairs(servers) do stop(s) end
    collectgarbage()
    for _, d in ipairs(dirs) do H.rm_rf(d) end
  end)

  local function project(toml)
    local d = H.tmpdir()
    dirs[#dirs + 1] = d
    H.sh("cp -r " .. q(EXAMPLE) .. "/. " .. q(d))
    if toml then
      local f = assert(io.open(d .. "/wrangler.toml", "a"))
      f:write(toml)
      f:close()
    end
    return d
  end

  it("dobj-lua cluster init: schema version, exit 2 for a bad URL, 1 unreachable, 3 newer", function()
    local out, err, code = dobj_lua("cluster init " .. q(pg.url))
    assert.are.same({ "dobj cluster schema version 5\n", "", 0 }, { out, err, code })
    out, err, code = dobj_lua("cluster init " .. q(BAD_URL))
    assert.are.equal(2, code)
    assert.are.equal('dobj-lua cluster init: invalid PostgreSQL URL: invalid URI query parameter: "bogus"\n', err)
    out, err, code = dobj_lua(("cluster init postgresql://dobj@127.0.0.1:%d/x --timeout 1"):format(closed_port()))
    assert.are.equal(1, code)
    assert.truthy(err:find("^dobj%-lua cluster init: cannot connect to PostgreSQL: [^\n]*\n$"), err)
    out, err, code = dobj_lua("cluster init")
    assert.are.equal(2, code)
    assert.truthy(err:find("needs a PostgreSQL URL", 1, true))
    pg.sql("UPDATE dobj_schema_version SET version = 7")
    out, err, code = dobj_lua("cluster init " .. q(pg.url))
    pg.sql("UPDATE dobj_schema_version SET version = 5")
    assert.are.equal(3, code)
    assert.truthy(err:find("version 7, newer than this dobj's (5)", 1, true), err)
    -- The module function under it.
    assert.are.equal(5, dobj.cluster_init(pg.url))
    local v, msg, kind = dobj.cluster_init(BAD_URL)
    assert.are.same({ nil, "url" }, { v, kind })
    assert.truthy(msg:find("invalid PostgreSQL URL", 1, true))
    -- A timeout of 0 s is refused, as cluster_timeout = 0 and
    -- DOBJ_CLUSTER_TIMEOUT=0 are (it meant the C API's "the default": 2 s).
    assert.are.same({ nil, "timeout: must be a number of seconds above 0", "url" },
      { dobj.cluster_init(pg.url, 0) })
    assert.are.equal(5, dobj.cluster_init(pg.url, 1.5))
    out, err, code = dobj_lua("cluster init " .. q(pg.url) .. " --timeout 0")
    assert.are.same({ "", "dobj-lua: --timeout: must be a number of seconds above 0\n", 2 }, { out, err, code })
    -- --help after `cluster`, as `dobj cluster --help`.
    out, err, code = dobj_lua("cluster --help")
    assert.are.same({ "", 0 }, { err, code })
    assert.truthy(out:find("dobj-lua cluster init URL", 1, true), out)
  end)

  it("two dobj-lua dev --cluster servers share one database", function()
    local pa, pb = free_port(), free_port()
    local a = start(project(), "--cluster " .. q(pg.url) .. " --node-addr 127.0.0.1:" .. pa)
    servers[#servers + 1] = a
    local b = start(project(), "--cluster " .. q(pg.url) .. " --node-addr 127.0.0.1:" .. pb)
    servers[#servers + 1] = b
    local node_a = tonumber(table.concat(a.lines, "\n"):match("%[dobj:inf%] cluster: node (%d+) at 127%.0%.0%.1:" .. pa))
    local node_b = tonumber(table.concat(b.lines, "\n"):match("%[dobj:inf%] cluster: node (%d+) at 127%.0%.0%.1:" .. pb))
    assert.truthy(node_a and node_b and node_a ~= node_b)
    for i = 1, 3 do
      assert.are.same({ 200, tostring(i) }, { curl(("http://127.0.0.1:%d/shared"):format(a.port)) })
    end
    -- Active on a: b's request reaches it there (routing).
    assert.are.same({ 200, "4" }, { curl(("http://127.0.0.1:%d/shared"):format(b.port)) })
    assert.are.equal(0, stop(a)) -- releases its objects
    assert.are.same({ 200, "5" }, { curl(("http://127.0.0.1:%d/shared"):format(b.port)) })
    assert.are.equal("1", pg.sql("SELECT count(*) FROM dobj_owner WHERE node_id = " .. node_b))
  end)

  it("dobj-lua dev --cluster prints the address it listens on", function()
    local s = start(project(), "--cluster " .. q(pg.url) .. " --node-addr 127.0.0.1:0")
    servers[#servers + 1] = s
    local port = tonumber(table.concat(s.lines, "\n"):match("%[dobj:inf%] cluster: node %d+ at 127%.0%.0%.1:(%d+)"))
    assert.truthy(port and port ~= 0, table.concat(s.lines, "\n"))
  end)

  it("dobj-lua dev --cluster without --node-addr serves, on a port the system picks", function()
    -- It was a pure client: it served no object, every request went to another node.
    local s = start(project(), "--cluster " .. q(pg.url))
    servers[#servers + 1] = s
    local node, port = table.concat(s.lines, "\n"):match("%[dobj:inf%] cluster: node (%d+) at 127%.0%.0%.1:(%d+)")
    assert.truthy(port and port ~= "0", table.concat(s.lines, "\n"))
    assert.are.same({ 200, "1" }, { curl(("http://127.0.0.1:%d/own"):format(s.port)) })
    assert.are.equal("1", pg.sql("SELECT count(*) FROM dobj_owner WHERE node_id = " .. node))
  end)

  it("--cluster-ttl and --cluster-grace win over the environment; bad ones are exit status 2", function()
    local s = start(project(), "--cluster " .. q(pg.url) .. " --cluster-ttl 0.5 --cluster-grace 0",
      "DOBJ_CLUSTER_TTL=9")
    servers[#servers + 1] = s
    local node = table.concat(s.lines, "\n"):match("%[dobj:inf%] cluster: node (%d+)")
    local left = tonumber(pg.sql("SELECT extract(epoch FROM lease_until - now()) FROM dobj_node WHERE node_id = " .. node))
    assert.truthy(left and left <= 0.5, tostring(left))
    local d = project()
    for _, c in ipairs {
      { "--cluster-ttl 1e9", "dobj-lua: --cluster-ttl: the lease time to live must be a number of seconds from 0.1 to 86400\n" },
      { "--cluster-grace -1", "dobj-lua: --cluster-grace: the grace period must be 0 or more seconds\n" },
      { "--cluster-ttl soon", "dobj-lua: --cluster-ttl soon: not a number of seconds\n" },
    } do
      local out, err, code = dobj_lua("dev --port 0 --config " .. q(d) .. " --cluster " .. q(pg.url) .. " " .. c[1])
      assert.are.same({ "", c[2], 2 }, { out, err, code })
    end
  end)

  it("a bad --cluster is one line and exit status 2; an unreachable database exit 1", function()
    local d = project()
    local out, err, code = dobj_lua("dev --port 0 --config " .. q(d) .. " --cluster " .. q(BAD_URL))
    assert.are.same({ "", 'dobj-lua: --cluster: invalid PostgreSQL URL: invalid URI query parameter: "bogus"\n', 2 },
      { out, err, code })
    out, err, code = dobj_lua(("dev --port 0 --config %s --cluster postgresql://dobj@127.0.0.1:%d/x")
      :format(q(d), closed_port()), "DOBJ_CLUSTER_TIMEOUT=1")
    assert.are.equal(1, code)
    assert.truthy(err:find("^dobj%-lua: cluster: cannot connect to PostgreSQL: [^\n]*\n$"), err)
    -- The environment is read by the same loader.
    out, err, code = dobj_lua("dev --port 0 --config " .. q(d), "DOBJ_CLUSTER_URL=" .. q(pg.url) .. " DOBJ_CLUSTER_TTL=soon")
    assert.are.equal(1, code)
    assert.are.equal("dobj-lua: environment variable DOBJ_CLUSTER_TTL=soon: not a number of seconds\n", err)
  end)

  it("a node that lost its lease says so on stderr and goes on as a new node", function()
    local d = H.tmpdir()
    dirs[#dirs + 1] = d
    local script = d .. "/lapse.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
local dobj = require "dobj"
local rt = assert(dobj.runtime { storage = arg[1] .. "/s", cluster = arg[2], cluster_ttl = 0.2, cluster_grace = 0 })
local old = rt:node_id()
-- The lease lapses on the database's clock, as after a pause past it.
assert(os.execute(("env -u LD_PRELOAD psql -XAtq '%s' -c \"UPDATE dobj_node SET lease_until = "
  .. "now() - interval '1 hour' WHERE node_id = %d\" >/dev/null"):format(arg[2], old)))
dobj.sleep(1) -- the runtime renews every 50 ms meanwhile: the next renewal is refused
print(("ids %d %d"):format(old, rt:node_id()))
rt:close()
]])
    f:close()
    local out, code = read_all(("env -u LD_PRELOAD env %s lua5.4 %s %s %s 2>&1")
      :format(PRELOAD and ("LD_PRELOAD=" .. q(PRELOAD)) or "", q(script), q(d), q(pg.url)))
    assert.are.equal(0, code, out)
    local old, new = out:match("ids (%d+) (%d+)")
    assert.truthy(old and new ~= old, out)
    assert.truthy(out:find(("dobj: cluster: node %s lost its lease (the process was paused or cut off past it); "
      .. "its objects were reset, and it joined again as node %s\n"):format(old, new), 1, true), out)
  end)

  it("dobj.load of a project is a node without a node address; two loads take two folders", function()
    -- Before: a pure client (no address: it served nothing), and the second
    -- load failed on the namespace folder the first held.
    local d = project(('\n[dobj.cluster]\nurl = "%s"\n'):format(pg.url))
    assert.are.equal("127.0.0.1:0", assert(dobj.load_config(d)).cluster.node_addr)
    local a = assert(dobj.load { config = d })
    local b = assert(dobj.load { config = d })
    assert.truthy(a:node_addr():match("^127%.0%.0%.1:%d+$") and a:node_addr() ~= "127.0.0.1:0", a:node_addr())
    assert.are.equal(b:node_addr(), pg.sql("SELECT addr FROM dobj_node WHERE node_id = " .. b:node_id()))
    assert.are.equal("1", a.default.fetch("http://x/a"):text())
    assert.are.equal("1", b.default.fetch("http://x/b"):text())
    -- The same namespace folder in the state folder and in .node-2.
    local state = d .. "/.wrangler/state/v3/do"
    local top = read_all("ls " .. q(state))
    assert.are.equal(top, read_all("ls " .. q(state .. "/.node-2")))
    assert.truthy(top:find("Counter", 1, true), top)
    a:close()
    b:close()
  end)

  it("dobj.load takes the [dobj.cluster] table; a caller's value wins", function()
    local d = project(('\n[dobj.cluster]\nurl = "%s"\nnode_addr = "127.0.0.1:18313"\nttl = 2.5\ngrace = 0\n')
      :format(pg.url))
    local cfg = assert(dobj.load_config(d))
    assert.are.same({ url = pg.url, node_addr = "127.0.0.1:18313", ttl = 2.5, grace = 0 }, cfg.cluster)
    local port = free_port()
    local rt = assert(dobj.load { config = d, node_addr = "127.0.0.1:" .. port })
    assert.truthy(rt:node_id())
    assert.are.equal("127.0.0.1:" .. port, pg.sql("SELECT addr FROM dobj_node WHERE node_id = " .. rt:node_id()))
    assert.are.equal("1", rt.default.fetch("http://x/cfg"):text())
    rt:close()
    local none, msg = dobj.load { config = d, cluster = BAD_URL }
    assert.is_nil(none)
    assert.truthy(msg:find("the cluster URL given (--cluster, cluster=): invalid PostgreSQL URL", 1, true), msg)
    none, msg = dobj.load { config = d, cluster = ("postgresql://dobj@127.0.0.1:%d/x"):format(closed_port()),
      cluster_timeout = 1 }
    assert.is_nil(none)
    assert.truthy(msg:find("cannot connect to PostgreSQL", 1, true), msg)
    assert.has_error(function() dobj.load { config = d, cluster_ttl = "3" } end,
      "load_config: cluster_ttl must be a number of seconds, not string")
    none, msg = dobj.load { config = d, cluster_grace = -2 }
    assert.is_nil(none)
    assert.are.equal("cluster_grace: the grace period must be 0 or more seconds", msg)
    -- The call timeout resolves like the others (a field here, the file, the environment).
    assert.are.equal(4, assert(dobj.load_config { path = d, cluster_call_timeout = 4 }).cluster.call_timeout)
    none, msg = dobj.load { config = d, cluster_call_timeout = 0 / 0 }
    assert.is_nil(none)
    assert.are.equal("cluster_call_timeout: must be a finite number of seconds", msg)
    -- The snapshot sizes too (bytes; snapshot_bytes 0: never).
    local cl = assert(dobj.load_config { path = d, cluster_snapshot_bytes = 0,
      cluster_snapshot_part_bytes = 2048 }).cluster
    assert.are.same({ 0, 2048 }, { cl.snapshot_bytes, cl.snapshot_part_bytes })
    none, msg = dobj.load { config = d, cluster_snapshot_part_bytes = 1 }
    assert.is_nil(none)
    assert.are.equal("cluster_snapshot_part_bytes: must be from 1 KiB to 256 MiB (bytes)", msg)
  end)
end)
