-- dobj.load: a Workers project (config + main) as a runtime, on
-- examples/workers/lua-counter (copied to a temporary folder, so its state
-- and .dev.vars stay there) and small projects written by the tests.
local HERE = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local H = dofile(HERE .. "helpers.lua")
local dobj = H.dobj

local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  return assert(os.getenv("PWD")) .. "/" .. p
end
local EXAMPLE = (absolute(HERE .. "../../examples/workers/lua-counter"):gsub("/%./", "/")
  :gsub("[^/]+/%.%./", ""):gsub("[^/]+/%.%./", ""))

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local CONFIG = [==[
name = "t"
main = "src/entry.lua"
[[durable_objects.bindings]]
name = "COUNTER"
class_name = "Counter"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["Counter"]
]==]

-- A project in a new temporary folder: wrangler.toml and src/entry.lua.
local function project(entry, config)
  local dir = H.tmpdir()
  write(dir .. "/wrangler.toml", config or CONFIG)
  if entry then
    os.execute("mkdir -p '" .. dir .. "/src'")
    write(dir .. "/src/entry.lua", entry)
  end
  return dir
end

local function copy_example()
  local dir = H.tmpdir()
  os.execute("cp -r '" .. EXAMPLE .. "/wrangler.toml' '" .. EXAMPLE .. "/src' '" .. dir .. "/'")
  return dir
end

local function close(rt)
  rt:close()
  collectgarbage()
end

describe("dobj.load", function()
  local dirs = {}
  local function tmp(d) dirs[#dirs + 1] = d; return d end
  after_each(function()
    for _, d in ipairs(dirs) do H.rm_rf(d) end
    dirs = {}
  end)

  it("runs the example: the entry forwards to the object named by the path", function()
    local dir = tmp(copy_example())
    local rt = assert(dobj.load { config = dir })
    local got = {}
    for _, n in ipairs { "a", "a", "b", "a" } do
      got[#got + 1] = rt.default.fetch("https://example.com/" .. n):text()
    end
    assert.same({ "1", "2", "1", "3" }, got)
    local res = rt.default.fetch(dobj.request("https://example.com/b", { method = "POST", body = "x" }))
    assert.equal(200, res.status)
    assert.equal("2", res:text())
    assert.equal("text/plain", res.headers["content-type"])
    assert.equal("lua-counter", rt.config.name)
    assert.equal("function", type(rt.module.fetch))
    assert.equal("hello", rt.env.GREETING)
    close(rt)
  end)

  it("puts vars and .dev.vars secrets in env", function()
    local dir = tmp(copy_example())
    write(dir .. "/.dev.vars", 'SECRET="s3cret"\nGREETING=overridden\n')
    local rt = assert(dobj.load { config = dir .. "/wrangler.toml" })
    assert.equal("s3cret", rt.env.SECRET)
    assert.equal("overridden", rt.env.GREETING)
    assert.equal("dobj.Namespace", (tostring(rt.env.COUNTER):match("^dobj%.Namespace")))
    close(rt)
  end)

  it("picks an environment's vars, bindings and state", function()
    local dir = tmp(copy_example())
    local top = assert(dobj.load { config = dir })
    assert.equal("1", top.default.fetch("https://x/a"):text())
    close(top)
    local rt = assert(dobj.load { config = dir, env = "staging" })
    assert.equal("staging", rt.config.env)
    assert.equal("hello from staging", rt.env.GREETING)
    assert.equal("lua-counter-staging-Counter", rt.config.bindings[1].unique_key)
    assert.equal("1", rt.default.fetch("https://x/a"):text()) -- its own state folder
    close(rt)
  end)

  it("keeps state across two loads, in the config's state folder or persist_to", function()
    local dir = tmp(copy_example())
    local rt = assert(dobj.load(dir))
    for _ = 1, 3 do rt.default.fetch("https://x/visits") end
    local folder = rt.config.bindings[1].storage_dir
    close(rt)
    assert.equal(dir .. "/.wrangler/state/v3/do/lua-counter-Counter", folder)
    assert.is_not_nil(read(folder .. "/metadata.sqlite"))
    rt = assert(dobj.load(dir))
    assert.equal("4", rt.default.fetch("https://x/visits"):text())
    close(rt)

    local state = tmp(H.tmpdir())
    rt = assert(dobj.load { config = dir, persist_to = state })
    assert.equal("1", rt.default.fetch("https://x/visits"):text())
    close(rt)
    rt = assert(dobj.load { config = dir, persist_to = state })
    assert.equal("2", rt.default.fetch("https://x/visits"):text())
    close(rt)
    assert.is_not_nil(read(state .. "/v3/do/lua-counter-Counter/metadata.sqlite"))
  end)

  it("runs the entry inside a task, and ctx:wait_until after the response", function()
    local dir = tmp(project([[
      local dobj = require "dobj"
      local Counter = {}
      Counter.__index = Counter
      function Counter:fetch(req)
        local n = (self.ctx.storage:get("n") or 0) + 1
        self.ctx.storage:put("n", n)
        return dobj.response(tostring(n))
      end
      local seen = {}
      local function fetch(request, env, ctx)
        seen[#seen + 1] = request.method .. " " .. request.url .. " " .. request.body
        ctx:wait_until(function()
          dobj.sleep(0.01)
          env.COUNTER:get_by_name("bg"):fetch("https://c/")
        end)
        local inner = env.COUNTER:get_by_name("x"):fetch("https://c/")
        return dobj.response("inner " .. inner:text(), { status = 201 })
      end
      return { fetch = fetch, Counter = Counter, seen = seen }
    ]]))
    local rt = assert(dobj.load { config = dir, virtual_time = true })
    local res
    rt:spawn(function()
      res = rt.default.fetch("https://w/p", { method = "PUT", body = "\0\255" })
    end)
    rt:run()
    assert.equal(201, res.status)
    assert.equal("inner 1", res:text())
    assert.same({ "PUT https://w/p \0\255" }, rt.module.seen)
    -- rt:run() also ran the wait_until function.
    assert.equal("2", rt.env.COUNTER:get_by_name("bg"):fetch("https://c/"):text())
    close(rt)
  end)

  it("reports a failed ctx:wait_until of the entry to dobj.on_error, not rt:run(); drain_background waits", function()
    local reported = H.capture_errors(finally)
    local dir = tmp(project([[
      local dobj = require "dobj"
      local Counter = {}
      Counter.__index = Counter
      function Counter:fetch(req)
        local n = (self.ctx.storage:get("n") or 0) + 1
        self.ctx.storage:put("n", n)
        return dobj.response(tostring(n))
      end
      local function fetch(request, env, ctx)
        ctx:wait_until(function() dobj.sleep(0.01); error("entry background failed", 0) end)
        ctx:wait_until(function()
          dobj.sleep(tonumber(request.url:match("%d+$")))
          env.COUNTER:get_by_name("bg"):fetch("https://c/")
        end)
        return dobj.response("sent")
      end
      return { fetch = fetch, Counter = Counter }
    ]]))
    local rt = assert(dobj.load { config = dir, virtual_time = true })
    rt:spawn(function() assert.equal("sent", rt.default.fetch("https://w/1"):text()) end)
    rt:run() -- does not raise: nobody awaited the background work
    assert.equal(1, #reported)
    assert.equal("entry background failed", reported[1].message)
    assert.same({ kind = "wait_until", entry = true }, reported[1].info)
    assert.equal("2", rt.env.COUNTER:get_by_name("bg"):fetch("https://c/"):text())
    -- drain_background: the work within the limit, nil and a message past it.
    assert.equal("sent", rt.default.fetch("https://w/60"):text())
    local ok, msg = rt:drain_background(30)
    assert.is_nil(ok)
    assert.equal("drain_background(): 1 ctx:wait_until() tasks still pending", msg)
    assert.is_true(rt:drain_background())
    assert.equal("4", rt.env.COUNTER:get_by_name("bg"):fetch("https://c/"):text())
    assert.equal(2, #reported)
    close(rt)
  end)

  it("passes runtime options and refuses storage", function()
    local dir = tmp(copy_example())
    local a = assert(dobj.load { config = dir, id_seed = 7 })
    local b = assert(dobj.load { config = dir, id_seed = 7, persist_to = tmp(H.tmpdir()) })
    assert.equal(tostring(a.env.COUNTER:new_unique_id()), tostring(b.env.COUNTER:new_unique_id()))
    close(a)
    close(b)
    local err = H.catch(dobj.load, { config = dir, storage = "elsewhere" })
    assert.matches("use persist_to", tostring(err))
  end)

  it("checks what the entry returns and says when there is no fetch", function()
    local rt = assert(dobj.load(tmp(project("return { Counter = {}, fetch = function() return 42 end }"))))
    assert.matches("fetch%(%) must return a dobj.response, got number",
      tostring(H.catch(rt.default.fetch, "https://w/")))
    assert.matches("Invalid URL", tostring(H.catch(rt.default.fetch, "no-scheme")))
    close(rt)
    rt = assert(dobj.load(tmp(project("return { Counter = {} }"))))
    assert.matches("Handler does not export a fetch%(%) function.",
      tostring(H.catch(rt.default.fetch, "https://w/")))
    close(rt)
    -- A runtime not made by dobj.load has none of these.
    local plain = dobj.runtime()
    assert.is_nil(plain.default)
    assert.is_nil(plain.config)
    plain:close()
  end)

  it("requires main's siblings from its folder, without leaking them", function()
    local entry = [[
      local helper = require "helper"
      return { Counter = {}, fetch = function() return require("dobj").response(helper.who) end }
    ]]
    local a, b = tmp(project(entry)), tmp(project(entry))
    write(a .. "/src/helper.lua", 'return { who = "a" }')
    write(b .. "/src/helper.lua", 'return { who = "b" }')
    local path = package.path
    local ra = assert(dobj.load(a))
    local rb = assert(dobj.load(b))
    assert.equal("a", ra.default.fetch("https://w/"):text())
    assert.equal("b", rb.default.fetch("https://w/"):text())
    assert.equal(path, package.path)
    assert.is_nil(package.loaded.helper)
    close(ra)
    close(rb)
  end)

  it("returns nil and a message naming the binding for a missing class", function()
    local dir = tmp(project("return { Other = {} }"))
    local rt, msg = dobj.load(dir)
    assert.is_nil(rt)
    assert.matches("wrangler%.toml: durable_objects binding COUNTER: class Counter is not in the table "
      .. "main .*src/entry%.lua returns", msg)
    rt, msg = dobj.load(tmp(project("return { Counter = function() end }")))
    assert.is_nil(rt)
    assert.matches("binding COUNTER: Counter in main .* is a function, not a class", msg)
  end)

  it("returns nil and a message for a missing or bad main and a bad config", function()
    local rt, msg = dobj.load(tmp(project(nil)))
    assert.is_nil(rt)
    assert.matches("wrangler%.toml: main .*src/entry%.lua does not exist", msg)
    rt, msg = dobj.load(tmp(project(nil, 'name = "x"\n')))
    assert.is_nil(rt)
    assert.matches("wrangler%.toml: main is not set", msg)
    rt, msg = dobj.load(tmp(project("return {")))
    assert.is_nil(rt)
    assert.matches("main .*entry%.lua failed: .*expected", msg)
    rt, msg = dobj.load(tmp(project("error('at load')")))
    assert.is_nil(rt)
    assert.matches("main .*entry%.lua failed: .*at load", msg)
    rt, msg = dobj.load(tmp(project("return 42")))
    assert.is_nil(rt)
    assert.matches("main .*entry%.lua must return a table %(fetch and the classes%), got number", msg)
    rt, msg = dobj.load(tmp(project(nil, 'name = "x\n')))
    assert.is_nil(rt)
    assert.matches("wrangler%.toml:1:", msg)
    rt, msg = dobj.load { config = "/nonexistent/wrangler.toml" }
    assert.is_nil(rt)
    assert.is_string(msg)
  end)

  it("is collected with its runtime", function()
    collectgarbage()
    collectgarbage()
    local before = dobj._stats().runtimes
    do
      local rt = assert(dobj.load(tmp(project("return { Counter = {}, fetch = function() end }"))))
      assert.is_false(pcall(rt.default.fetch, "https://w/")) -- no response: an error
    end
    collectgarbage()
    collectgarbage()
    assert.equal(before, dobj._stats().runtimes)
  end)

  it("keeps a renamed class's objects: same IDs, its folder moved on start", function()
    local entry = [==[
      local dobj = require "dobj"
      local C = {}
      C.__index = C
      function C.new(ctx, env) return setmetatable({ ctx = ctx }, C) end
      function C:fetch(req)
        local n = (self.ctx.storage:get("n") or 0) + 1
        self.ctx.storage:put("n", n)
        return dobj.response(tostring(n))
      end
      return { %s = C, fetch = function(req, env, ctx) return env.COUNTER:get_by_name("a"):fetch(req) end }
    ]==]
    local dir = tmp(project(entry:format("Counter")))
    local rt = assert(dobj.load { config = dir })
    assert.equal("1", rt.default.fetch("https://x/"):text())
    local old_id = rt.env.COUNTER:id_from_name("a"):to_string()
    close(rt)
    local state = dir .. "/.wrangler/state/v3/do"
    assert.truthy(read(state .. "/t-Counter/" .. old_id .. ".sqlite"))
    write(dir .. "/src/entry.lua", entry:format("Tally"))
    write(dir .. "/wrangler.toml", (CONFIG:gsub('class_name = "Counter"', 'class_name = "Tally"')) ..
      '[[migrations]]\ntag = "v2"\nrenamed_classes = [{ from = "Counter", to = "Tally" }]\n')
    local cfg = assert(dobj.load_config(dir))
    assert.same({ "t-Tally", "t-Counter" }, { cfg.bindings[1].unique_key, cfg.bindings[1].id_key })
    assert.truthy(read(state .. "/t-Counter/" .. old_id .. ".sqlite")) -- reading moves nothing
    rt = assert(dobj.load { config = dir })
    assert.equal(old_id, rt.env.COUNTER:id_from_name("a"):to_string())
    assert.equal("2", rt.default.fetch("https://x/"):text())
    close(rt)
    assert.falsy(read(state .. "/t-Counter/" .. old_id .. ".sqlite"))
    assert.truthy(read(state .. "/t-Tally/" .. old_id .. ".sqlite"))
    os.execute("mkdir '" .. state .. "/t-Counter'")
    local none, msg = dobj.load { config = dir }
    assert.is_nil(none)
    assert.matches("both its folder .*t%-Tally and the folder of its earlier name", msg)
  end)
end)
