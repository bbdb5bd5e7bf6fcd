-- Shared fixtures for the busted specs (loaded with dofile from each spec,
-- so that no LUA_PATH set-up is needed; LUA_CPATH must find dobj.so).
local dobj = require "dobj"

local H = { dobj = dobj }

-- A class table in the usual Lua style; `name` becomes its __name, which
-- dobj uses for messages.
function H.class(name, methods)
  local C = methods or {}
  C.__index = C
  C.__name = name
  return C
end

-- A runtime with virtual time: dobj.sleep takes no wall time in tests.
function H.runtime(opts)
  opts = opts or {}
  if opts.virtual_time == nil then opts.virtual_time = true end
  return dobj.runtime(opts)
end

-- Run f and return the error it raised (fails the test if it did not raise).
function H.catch(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error, got success")
  return err
end

function H.text(res) return res:text() end

-- Background errors (failed ctx:wait_until functions and alarm runs) for the
-- rest of the running test: installs a dobj.on_error handler that records
-- each report as { err = dobj.Error, message = err.message, info = { kind,
-- class, id, retry_count } } in the list it returns, instead of writing it
-- to stderr.  Pass busted's `finally`: the previous handler is put back when
-- the test ends, passed or failed.
function H.capture_errors(finally)
  local reported = {}
  local previous = dobj.on_error(function(err, info)
    reported[#reported + 1] = { err = err, info = info,
      message = type(err) == "table" and err.message or tostring(err) }
  end)
  finally(function() dobj.on_error(previous) end)
  return reported
end

-- A class whose fetch returns the request's fields, for echo tests.
H.Echo = H.class("Echo")
function H.Echo:fetch(req)
  local names = {}
  for k in pairs(req.headers) do names[#names + 1] = k end
  table.sort(names)
  local hs = {}
  for _, k in ipairs(names) do hs[#hs + 1] = k .. "=" .. req.headers[k] end
  return dobj.response(req.method .. " " .. req.url .. " " .. req.body .. " [" .. table.concat(hs, ",") .. "]")
end

-- Storage fixtures ---------------------------------------------------------

-- A fresh temporary directory (removed with H.rm_rf).
function H.tmpdir()
  local p = io.popen("mktemp -d /tmp/dobj-lua-XXXXXX")
  local dir = p:read("l")
  p:close()
  return dir
end

function H.rm_rf(dir)
  assert(dir:match("^/tmp/dobj%-lua%-"), "refusing to remove " .. dir)
  os.execute("rm -rf '" .. dir .. "'")
end

-- PostgreSQL fixture ------------------------------------------------------

local PGTMP = (debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../cluster/pgtmp.sh"
-- What runs PostgreSQL's own tools (psql): without the sanitizers' preload.
H.TOOL_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS "

-- A throw-away PostgreSQL from tests/cluster/pgtmp.sh (the script every suite
-- uses): { url, dir }, pg.run(verb) for the script's other verbs ("kill",
-- "restart"), pg.sql(query) (one statement through psql: its output without
-- the trailing white space; a failed statement fails the test) and pg.stop().  The server lives while its lifeline (a FIFO) is
-- open: the script's watchdog stops it when the test process goes away,
-- however it ends.
function H.postgres()
  local p = assert(io.popen("'" .. PGTMP .. "' start"))
  local url, dir = (p:read("l") or ""):match("^(%S+) (%S+)$")
  assert(p:close() and url, "could not start PostgreSQL")
  local pg = { url = url, dir = dir, lifeline = assert(io.open(dir .. "/lifeline", "r+")) }
  function pg.run(verb)
    assert(os.execute("'" .. PGTMP .. "' " .. verb .. " '" .. dir .. "'"))
  end
  function pg.sql(query)
    local p = assert(io.popen(H.TOOL_ENV .. "psql -XAtq -v ON_ERROR_STOP=1 " .. H.q(url) .. " -c " ..
      H.q(query)))
    local out = p:read("a")
    assert(p:close(), "psql failed: " .. query)
    return (out:gsub("%s+$", ""))
  end
  function pg.stop()
    if not pg.lifeline then return end
    pg.lifeline:close()
    pg.lifeline = nil
    os.execute("'" .. PGTMP .. "' stop '" .. dir .. "'")
  end
  return pg
end

-- dobj-lua dev fixture ------------------------------------------------------

-- A shell word: s quoted.
function H.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Run a shell command: everything it printed and its exit code.
function H.read_all(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

H.DOBJ_LUA = (debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../../bindings/lua/bin/dobj-lua"

-- `dobj-lua dev ARGS` (with the dobj.so of LUA_CPATH; the sanitizer preload
-- of an ASan run for the server only; its lifetime bounded by timeout(1),
-- `limit` seconds, default 60, so that a hung server cannot hang the suite),
-- once it printed its "Ready on" line: { p, pid, port, lines }.  `env`: more
-- variables ("NAME=value ...").  Or nil,
-- everything it printed and its exit code if it exited first.
function H.dev_start(args, limit, env)
  local preload = os.getenv("LD_PRELOAD")
  local cmd = ("echo $$; exec env -u LD_PRELOAD timeout --foreground -k 5 %d env %s %s lua5.4 %s dev %s 2>&1")
    :format(limit or 60, preload and ("LD_PRELOAD=" .. H.q(preload)) or "", env or "", H.q(H.DOBJ_LUA), args)
  local p = assert(io.popen("sh -c " .. H.q(cmd)))
  local s = { p = p, pid = assert(tonumber(p:read("l"))), lines = {} }
  for line in p:lines() do
    s.lines[#s.lines + 1] = line
    if line:find("Ready on", 1, true) then
      s.port = assert(tonumber(line:match(":(%d+)$")), line)
      return s
    end
  end
  local _, _, code = p:close()
  return nil, table.concat(s.lines, "\n"), code
end

-- SIGTERM to a server of H.dev_start (unless `no_signal`), then everything it
-- printed until it exited, and its exit code (the same again on later calls).
function H.dev_stop(s, no_signal)
  if s.stopped then return s.output, s.code end
  if not no_signal then os.execute("kill -TERM " .. s.pid .. " 2>/dev/null") end
  local rest = s.p:read("a")
  local _, _, code = s.p:close()
  s.stopped, s.code = true, code
  s.output = table.concat(s.lines, "\n") .. "\n" .. rest
  return s.output, code
end

-- Run a shell command and return its output (trailing newline removed).
function H.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return (out:gsub("\n$", ""))
end

-- Number of this process's open files of object databases under `dir`
-- (<hex>.sqlite and its -wal/-shm; a namespace keeps metadata.sqlite open,
-- counted too with `with_metadata`).
function H.open_files(dir, with_metadata)
  local n = 0
  local p = io.popen("ls -l /proc/" .. H.sh("echo $PPID") .. "/fd 2>/dev/null")
  for line in p:lines() do
    -- (database files only: a bound namespace also holds its folder, locked)
    if line:find(dir, 1, true) and line:find(".sqlite", 1, true) and
       (with_metadata or not line:find("metadata.sqlite", 1, true)) then
      n = n + 1
    end
  end
  p:close()
  return n
end

-- The keys committed to an object's database file, read by another SQLite
-- connection (the sqlite3 shell), sorted and joined with ",".
function H.committed_keys(file)
  return (H.sh("sqlite3 " .. file .. " 'SELECT key FROM _cf_KV ORDER BY key'"):gsub("\n", ","))
end

-- A class that runs functions inside the object: H.job(stub, fn) calls
-- fn(storage, ctx, instance) in a handler and returns its results (an error
-- raised by fn reaches the caller as a dobj.Error).  Alarms call the class's
-- on_alarm(instance, info) when set.  C.constructed counts constructions.
local jobs, next_job = {}, 0

function H.job_class(name)
  local C = H.class(name or "Job")
  C.constructed = 0
  function C.new(ctx, env)
    C.constructed = C.constructed + 1
    return setmetatable({ ctx = ctx, env = env }, C)
  end
  function C:fetch(req)
    local id = tonumber(req.url:match("/job/(%d+)$"))
    local job = jobs[id]
    jobs[id] = nil
    job.results = table.pack(job.fn(self.ctx.storage, self.ctx, self))
    return dobj.response("ok")
  end
  function C:alarm(info)
    if C.on_alarm then return C.on_alarm(self, info) end
  end
  return C
end

function H.job(stub, fn)
  next_job = next_job + 1
  local job = { fn = fn }
  jobs[next_job] = job
  stub:fetch("https://job/job/" .. next_job)
  return table.unpack(job.results, 1, job.results.n)
end

-- The message of the error that H.job(stub, fn) raises.
function H.job_error(stub, fn)
  local err = H.catch(H.job, stub, fn)
  return type(err) == "table" and err.message or tostring(err)
end

-- Deep equality for stored values: NaN equals NaN, -0.0 differs from 0,
-- integers and floats differ, shared tables must be shared the same way.
function H.same_value(a, b, seen)
  seen = seen or {}
  if type(a) ~= type(b) then return false, type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false, math.type(a) .. " vs " .. math.type(b) end
    if a ~= a then return b ~= b, "NaN" end
    if a == 0 and b == 0 then return 1 / a == 1 / b, "signed zero" end
    return a == b, tostring(a) .. " vs " .. tostring(b)
  end
  if type(a) ~= "table" then return a == b, tostring(a) .. " vs " .. tostring(b) end
  if seen[a] then return seen[a] == b, "sharing differs" end
  seen[a] = b
  -- A table stored as a Map reads back marked with dobj.Map (so that it is
  -- stored as a Map again), and a non-empty dobj.array table unmarked (its
  -- keys 1..n make it an Array); its keys and values are what count.
  local ma, mb = getmetatable(a), getmetatable(b)
  if ma ~= mb and not (ma == nil and mb == dobj.Map) and
     not (ma == dobj.Array and mb == nil and next(a) ~= nil) then
    return false, "metatables differ"
  end
  for k, v in pairs(a) do
    local kb = k
    if type(k) == "table" or type(k) == "userdata" then
      kb = seen[k]
      if kb == nil and rawget(b, k) == nil then
        -- a table or bytes key: find the key of b that matches
        for k2 in pairs(b) do
          if type(k2) == type(k) and H.same_value(k, k2, seen) then kb = k2 break end
        end
      end
    end
    if kb == nil then return false, "key " .. tostring(k) .. " missing" end
    local ok, why = H.same_value(v, rawget(b, kb), seen)
    if not ok then return false, "at " .. tostring(k) .. ": " .. tostring(why) end
  end
  for k in pairs(b) do
    if type(k) ~= "table" and type(k) ~= "userdata" and rawget(a, k) == nil then
      return false, "extra key " .. tostring(k)
    end
  end
  return true
end

return H
