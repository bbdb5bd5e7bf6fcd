-- `dobj-lua dev`: the real server as a subprocess (bindings/lua/bin/dobj-lua,
-- with the dobj.so of LUA_CPATH, so ASan runs cover it too), driven over
-- real HTTP with curl.  Each server is stopped by SIGTERM in after_each; its
-- lifetime is bounded by timeout(1) so that a hung server cannot hang the
-- suite.  Ports: any free one (--port 0; the Ready line says which), since
-- every worktree and CI job runs this suite, maybe at the same time.
local H = dofile("tests/lua/helpers.lua")
local dobj = H.dobj

local HERE = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local SCRIPT = H.DOBJ_LUA
local PROJECT = HERE .. "dev"
local PRELOAD = os.getenv("LD_PRELOAD") -- the ASan runtime, for the server only
local q, read_all = H.q, H.read_all

-- curl without the sanitizer preload (its own leaks are not ours).
local function curl(args)
  return read_all("env -u LD_PRELOAD curl -s -m 20 " .. args .. " 2>&1")
end

local servers = {}

-- Start `dobj-lua dev ARGS` on `port` (default 0: a free one); returns a
-- server { port, pid, lines } once it printed its "Ready on" line, or nil
-- and everything it printed if it exited first.
local function start(args, port)
  local s, out, code = H.dev_start(("--port %d %s"):format(port or 0, args))
  if not s then return nil, out, code end
  servers[#servers + 1] = s
  return s
end

-- Read the server's output until a line containing `text`.
local function wait_line(s, text)
  for line in s.p:lines() do
    s.lines[#s.lines + 1] = line
    if line:find(text, 1, true) then return line end
  end
  error("the server exited before printing " .. text .. ":\n" .. table.concat(s.lines, "\n"))
end

local stop = H.dev_stop -- (s [, no_signal]): everything it printed, its exit code

local function url(s, path) return ("http://127.0.0.1:%d%s"):format(s.port, path) end

describe("dobj-lua dev", function()
  local dir

  before_each(function() dir = H.tmpdir() end)

  after_each(function()
    for _, s in ipairs(servers) do stop(s) end
    servers = {}
    H.rm_rf(dir)
  end)

  it("counts per object, keeps the counts across a restart, logs a line per request", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    assert.equal("1", curl(q(url(s, "/count/a"))))
    assert.equal("2", curl(q(url(s, "/count/a"))))
    assert.equal("1", curl(q(url(s, "/count/b"))))
    local out, code = stop(s)
    assert.equal(0, code)
    assert.truthy(out:find("[dobj:inf] GET /count/a 200 OK (", 1, true), out)
    assert.truthy(out:find("stopped (SIGTERM)", 1, true), out)
    -- The state is the project's folder layout: a restart reads it back.
    s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    assert.equal("3", curl(q(url(s, "/count/a"))))
    assert.equal("2", curl(q(url(s, "/count/b"))))
  end)

  it("serves the example project and keeps a connection alive across requests", function()
    local s = assert(start(("--config examples/workers/lua-counter --persist-to %s"):format(q(dir))))
    local out = curl("-v " .. q(url(s, "/x")) .. " " .. q(url(s, "/x")))
    assert.truthy(out:find("Re-using existing connection", 1, true), out)
    assert.truthy(out:find("\n1", 1, true) or out:find("^1"), out)
    assert.truthy(out:find("2", 1, true), out)
    local log = stop(s)
    assert.equal(2, select(2, log:gsub("GET /x 200 OK", "")), log)
  end)

  it("serves the environment given by --env (its worker name, so its own state folder)", function()
    local s = assert(start(("--config examples/workers/lua-counter --env staging --persist-to %s"):format(q(dir))))
    assert.equal("1", curl(q(url(s, "/a"))))
    local _, code = stop(s)
    assert.equal(0, code)
    local f = io.open(dir .. "/v3/do/lua-counter-staging-Counter", "r")
    assert.truthy(f, "no state folder for the staging worker")
    f:close()
    assert.is_nil(io.open(dir .. "/v3/do/lua-counter-Counter", "r"))
  end)

  it("answers 400 to a Host header that is not host[:port], without running the entry", function()
    -- It would rewrite the URL the entry routes on ("http://evil.com/x?y/echo").
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local out = curl("-i -H 'Host: evil.com/x?y' " .. q(url(s, "/count/a")))
    assert.truthy(out:find("^HTTP/1.1 400 "), out)
    assert.truthy(out:find("invalid Host header", 1, true), out)
    assert.equal("1", curl(q(url(s, "/count/a")))) -- the refused request never reached the entry
    stop(s)
  end)

  it("gives the entry the full URL and every header, repeated ones in order", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local out = curl("-H 'X-Rep: first' -H 'X-Other: o' -H 'X-Rep: second' -H 'X-Rep: third' "
      .. q(url(s, "/echo?a=1&b=%20c")))
    assert.truthy(out:find(("url=http://127.0.0.1:%d/echo?a=1&b=%%20c\n"):format(s.port), 1, true), out)
    assert.truthy(out:find("method=GET\n", 1, true), out)
    assert.truthy(out:find("x-rep: first, second, third\n", 1, true), out)
    assert.truthy(out:find("x-other: o\n", 1, true), out)
    -- A request target in absolute form (as to a proxy) is the URL itself.
    out = curl("--request-target http://example.com/echo?q " .. q(url(s, "/")))
    assert.truthy(out:find("url=http://example.com/echo?q\n", 1, true), out)
  end)

  it("passes a binary body through, sent whole or in chunks, both ways", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local body = table.concat(bytes):rep(300) -- 76,800 bytes: NUL, CR, LF, 0xff...
    local file = dir .. "/body.bin"
    local f = assert(io.open(file, "wb"))
    f:write(body)
    f:close()
    for _, extra in ipairs({ "", "-H 'Transfer-Encoding: chunked' " }) do
      local out = curl("-i -X PUT --data-binary @" .. q(file) .. " " .. extra .. q(url(s, "/echo")))
      assert.truthy(out:find("x-body-length: 76800", 1, true), out:sub(1, 500))
      -- The entry's own content-length ("1") is dropped: the server frames the body.
      assert.truthy(out:find("Content%-Length: %d+"), out:sub(1, 500))
      assert.equal(body, out:sub(-#body))
      assert.truthy(out:find("method=PUT\n", 1, true))
      if extra ~= "" then assert.truthy(out:find("transfer-encoding: chunked", 1, true)) end
    end
  end)

  it("answers 413 to a body over 100 MiB without running the entry, and logs it", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    -- 100 MiB and one byte, streamed (chunked): read, dropped, answered 413.
    local out = read_all("head -c 104857601 /dev/zero | env -u LD_PRELOAD curl -s -m 60 -i -T - "
      .. q(url(s, "/count/big")) .. " 2>&1")
    assert.truthy(out:find("HTTP/1.1 413 Content Too Large", 1, true), out)
    assert.truthy(out:find("request body larger than 100 MiB", 1, true), out)
    assert.equal("1", curl(q(url(s, "/count/big")))) -- the entry never saw the big one
    assert.truthy(stop(s):find("PUT /count/big 413 Payload Too Large", 1, true)) -- workerd's phrase
  end)

  it("sends each set-cookie on its own line", function()
    -- Joined with ", " they were one broken cookie (the date holds a comma).
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local out = curl("-i " .. q(url(s, "/cookies")))
    assert.truthy(out:find("\r\nset%-cookie: a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\n"), out)
    assert.truthy(out:find("\r\nset%-cookie: b=2\r\n"), out)
    assert.truthy(out:find("\r\ncontent%-type: text/plain;charset=UTF%-8\r\n"), out)
  end)

  it("answers 500 with the error logged, as a page for browsers", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local page = curl("-i -H 'Accept: text/html,application/xhtml+xml' " .. q(url(s, "/boom")))
    assert.truthy(page:find("^HTTP/1.1 500"), page)
    assert.truthy(page:find("content-type: text/html", 1, true), page)
    assert.truthy(page:find("<!DOCTYPE html>", 1, true), page)
    assert.truthy(page:find("boom from the entry", 1, true), page)
    local text = curl("-i " .. q(url(s, "/boom")))
    assert.truthy(text:find("^HTTP/1.1 500"), text)
    assert.truthy(text:find("content-type: text/plain", 1, true), text)
    assert.truthy(text:find("Error: ", 1, true), text)
    -- The server goes on serving.
    assert.equal("1", curl(q(url(s, "/count/after"))))
    local log = stop(s)
    assert.truthy(log:find(("[dobj:err] GET http://127.0.0.1:%d/boom: "):format(s.port), 1, true), log)
    assert.truthy(log:find("boom from the entry", 1, true), log)
    assert.truthy(log:find("GET /boom 500 Internal Server Error", 1, true), log)
  end)

  it("answers 500 to a response whose header would split the head, and says why", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local out = curl("-i " .. q(url(s, "/badheader")))
    assert.truthy(out:find("^HTTP/1.1 500"), out)
    assert.falsy(out:find("\nInjected: yes", 1, true), out)
    local log = stop(s)
    assert.truthy(log:find("invalid value for header x-bad: it holds a CR, LF or NUL byte", 1, true), log)
    assert.truthy(log:find("GET /badheader 500 Internal Server Error", 1, true), log)
  end)

  it("refuses a port in use with one clear line and a non-zero exit", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local ok, out, code = start(("--config %s --persist-to %s/other"):format(q(PROJECT), q(dir)), s.port)
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.equal(("dobj-lua: 127.0.0.1:%d: address already in use (is another server running on this port?)")
      :format(s.port), out)
    assert.equal("1", curl(q(url(s, "/count/a")))) -- the first one still serves
  end)

  it("exits non-zero with the loader's message on a bad config", function()
    local f = assert(io.open(dir .. "/wrangler.toml", "w"))
    f:write('name = "x"\nmain = [oops\n')
    f:close()
    local ok, out, code = start("--config " .. q(dir))
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.truthy(out:find("wrangler.toml", 1, true), out)
    assert.truthy(out:find("wrangler.toml:2:", 1, true), out)
  end)

  it("on SIGTERM finishes the request in flight, commits its write and frees the port", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local client = assert(io.popen("env -u LD_PRELOAD curl -s -m 20 " .. q(url(s, "/slow/x")) .. " 2>&1"))
    wait_line(s, "slow request started")
    local log, code = stop(s)
    assert.equal("1", client:read("a"))
    client:close()
    assert.equal(0, code, log)
    assert.truthy(log:find("GET /slow/x 200 OK", 1, true), log)
    -- The write is on disk and the port is free: a new server on it reads it.
    s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir)), s.port))
    assert.equal("2", curl(q(url(s, "/count/x"))))
  end)

  it("on SIGTERM lets the entry's ctx:wait_until work finish before it closes the runtime", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    assert.equal("queued", curl(q(url(s, "/later"))))
    local log, code = stop(s) -- at once: the work sleeps 1 s
    assert.equal(0, code, log)
    local done, stopped = log:find("background done", 1, true), log:find("stopped (SIGTERM)", 1, true)
    assert.truthy(done and stopped and done < stopped, log)
  end)

  it("stops at once on a second signal, with a request still in flight", function()
    local s = assert(start(("--config %s --persist-to %s"):format(q(PROJECT), q(dir))))
    local client = assert(io.popen("env -u LD_PRELOAD curl -s -m 20 " .. q(url(s, "/slow/x")) .. " 2>&1"))
    wait_line(s, "slow request started")
    os.execute("kill -INT " .. s.pid)
    assert.truthy(wait_line(s, "SIGINT: stopping after 1 request in flight (again to stop now)"))
    os.execute("kill -INT " .. s.pid)
    local log, code = stop(s, true)
    assert.equal(0, code, log)
    assert.truthy(log:find("stopped (SIGINT)", 1, true), log)
    assert.falsy(log:find("GET /slow/x 200", 1, true), log)
    client:close()
  end)

  it("stops cleanly on a SIGTERM right after its Ready line", function()
    -- The server signals itself the moment it has written the line (the
    -- earliest a supervisor can): the line used to come before the server
    -- took SIGTERM, whose default action then killed it.
    local term_at_ready = [[
      local real = io.stdout
      local pid = io.open("/proc/self/stat"):read("l"):match("^(%d+)")
      io.stdout = setmetatable({}, { __index = {
        setvbuf = function(_, ...) return real:setvbuf(...) end,
        flush = function() return real:flush() end,
        write = function(self, ...)
          real:write(...)
          if table.concat({ ... }):find("Ready on", 1, true) then
            real:flush()
            os.execute("kill -TERM " .. pid)
          end
          return self
        end } })]]
    local out, code = read_all(("env -u LD_PRELOAD timeout -k 5 60 env %s lua5.4 -e %s %s dev --port 0 --config %s --persist-to %s 2>&1")
      :format(PRELOAD and ("LD_PRELOAD=" .. q(PRELOAD)) or "", q(term_at_ready), q(SCRIPT), q(PROJECT), q(dir)))
    assert.truthy(out:find("Ready on", 1, true), out)
    assert.truthy(out:find("stopped (SIGTERM)", 1, true), out)
    assert.equal(0, code, out)
  end)

  it("says how to run it when the dobj module cannot be found", function()
    local out, code = read_all(("LUA_CPATH=/nonexistent/?.so lua5.4 %s dev 2>&1"):format(q(SCRIPT)))
    assert.equal(1, code)
    assert.truthy(out:find("^dobj%-lua: cannot load the dobj module %(run build/bin/dobj%-lua"), out)
  end)

  it("answers a usage line for unknown arguments", function()
    local out, code = read_all(("lua5.4 %s dev --nope 2>&1"):format(q(SCRIPT)))
    assert.equal(2, code)
    assert.truthy(out:find("unknown argument --nope", 1, true), out)
    assert.truthy(out:find("usage: dobj-lua dev", 1, true), out)
  end)
end)

describe("dobj.http_listen", function()
  it("returns nil and the reason for an address it cannot listen on", function()
    local srv, err = dobj.http_listen("10.9.9.9", 0) -- not one of this machine's
    assert.is_nil(srv)
    assert.equal("10.9.9.9:0: Cannot assign requested address", err)
  end)

  it("listens on a name's address, and says which", function()
    local srv <close> = assert(dobj.http_listen("localhost", 0))
    local port = srv:port()
    assert.truthy(port > 0)
    assert.truthy(srv:address() == "127.0.0.1:" .. port or srv:address() == "[::1]:" .. port, srv:address())
  end)

  it("sends an answer given at once, inside the handler", function()
    -- A resume wakes nothing in libmicrohttpd's external-select mode: the
    -- loop used to wait in poll() forever with the answer queued.
    local out, code = read_all(("timeout -k 5 20 lua5.4 %s 2>&1"):format(q(PROJECT .. "/sync_respond.lua")))
    assert.equal(0, code, out)
    assert.truthy(out:find("^answered http://127%.0%.0%.1:%d+/sync$"), out)
  end)

  it("stops with the runtime's error when a handler closes the runtime", function()
    local out, code = read_all(("timeout -k 5 20 lua5.4 %s 2>&1"):format(q(PROJECT .. "/close_in_handler.lua")))
    assert.equal(0, code, out)
    assert.truthy(out:find("^run: false [^\n]*the runtime is closed\n"), out)
  end)

  it("refuses to answer a request it never gave", function()
    local srv <close> = assert(dobj.http_listen("127.0.0.1", 0))
    assert.truthy(srv:port() > 0)
    local err = H.catch(srv.respond, srv, 1, dobj.response("x"))
    assert.truthy(tostring(err):find("no request 1 waits for a response", 1, true))
  end)
end)
