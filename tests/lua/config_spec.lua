-- dobj.load_config: wrangler's configuration read by the core, on the fixture
-- projects in tests/config (the C and Python suites read the same ones).
local HERE = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local H = dofile(HERE .. "helpers.lua")
local dobj = H.dobj

-- The fixtures folder, absolute (the loader reports absolute paths).
local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  local pwd = assert(os.getenv("PWD"))
  return pwd .. "/" .. p
end
local FIX = (absolute(HERE .. "../config"):gsub("/%./", "/"):gsub("[^/]+/%.%./", ""))

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("load_config", function()
  for _, p in ipairs { { "project_toml", "wrangler.toml" }, { "project_jsonc", "wrangler.jsonc" },
                       { "project_json", "wrangler.json" } } do
    local folder, file = p[1], p[2]
    local dir = FIX .. "/" .. folder

    it("reads " .. file .. " at the top level", function()
      local c = assert(dobj.load_config { path = dir, env = "" })
      assert.equal(dir .. "/" .. file, c.config_path)
      assert.is_nil(c.env)
      assert.equal("counter", c.name)
      assert.equal(dir .. "/src/entry.py", c.main)
      assert.equal("2024-10-22", c.compatibility_date)
      assert.same({ "python_workers" }, c.compatibility_flags)
      assert.same({ GREETING = "from dev vars", LIMIT = 10, FEATURES = { beta = true }, SECRET = "top-secret" },
        c.vars)
      assert.equal("integer", math.type(c.vars.LIMIT))
      assert.equal(dir .. "/.dev.vars", c.dev_vars_path)
      local state = dir .. "/.wrangler/state/v3/do"
      assert.equal(state, c.state_dir)
      assert.same({
        { binding = "COUNTER", class_name = "Counter", unique_key = "counter-Counter",
          storage_dir = state .. "/counter-Counter", sqlite = true, id_key = "counter-Counter" },
        { binding = "ROOM", class_name = "ChatRoom", unique_key = "counter-ChatRoom",
          storage_dir = state .. "/counter-ChatRoom", sqlite = false, id_key = "counter-Room" },
      }, c.bindings)
      assert.equal(3, #c.migrations)
      assert.same({ tag = "v3", new_classes = {}, new_sqlite_classes = {},
        renamed_classes = { { from = "Room", to = "ChatRoom" } }, deleted_classes = { "Old" } }, c.migrations[3])
      assert.same({}, c.warnings)
    end)

    it("applies " .. file .. "'s environments as wrangler does", function()
      local s = assert(dobj.load_config { path = dir, env = "staging" })
      assert.equal("counter-staging", s.name)
      assert.equal(dir .. "/src/entry.py", s.main)
      assert.equal(3, #s.migrations)
      assert.same({ GREETING = "hi from staging", SECRET = "staging-secret" }, s.vars)
      assert.equal(1, #s.bindings)
      assert.equal("counter-staging-Counter", s.bindings[1].unique_key)
      local p = assert(dobj.load_config { path = dir, env = "production" })
      assert.equal("counter-prod", p.name)
      assert.equal(dir .. "/src/prod.py", p.main)
      assert.same({}, p.bindings)
      assert.equal(2, #p.warnings)
      assert.equal('"vars" exists at the top level, but not on "env.production".\n' ..
        'This is not what you probably want, since "vars" is not inherited by environments.\n' ..
        'Please add "vars" to "env.production".', p.warnings[1])
    end)
  end

  it("takes a path as its only argument, and an unknown environment fails", function()
    local c = assert(dobj.load_config(FIX .. "/both"))
    assert.equal("from-json", c.name) -- wrangler.json wins over wrangler.toml
    local none, msg = dobj.load_config { path = FIX .. "/project_toml", env = "nope" }
    assert.is_nil(none)
    assert.matches('No environment found in configuration with name "nope"', msg, 1, true)
  end)

  it("looks each file name up from the folder upwards, json first", function()
    assert.equal("nested-json", assert(dobj.load_config(FIX .. "/nested/sub/deeper")).name)
    assert.equal("nested-sub", assert(dobj.load_config(FIX .. "/nested/sub/wrangler.toml")).name)
  end)

  it("reads .env files when there is no .dev.vars", function()
    assert.same({ A = "from .env", B = "from .env.local", C = "from config" },
      assert(dobj.load_config(FIX .. "/dotenv")).vars)
    assert.same({ A = "from .env.staging", B = "from .env.local" },
      assert(dobj.load_config { path = FIX .. "/dotenv", env = "staging" }).vars)
  end)

  it("names the worker 'worker' without a name, and warns of a class no migration creates", function()
    local c = assert(dobj.load_config(FIX .. "/noname"))
    assert.is_nil(c.name)
    assert.equal("worker", c.worker_name)
    assert.equal("worker-Beta", c.bindings[2].unique_key)
    assert.equal(1, #c.warnings)
    assert.truthy(c.warnings[1]:find("exported by this Worker (Beta), but no `migrations` for them.", 1, true))
  end)

  it("puts state under persist_to/v3/do", function()
    local c = assert(dobj.load_config { path = FIX .. "/project_toml", persist_to = "/tmp/dobj-state" })
    assert.equal("/tmp/dobj-state/v3/do", c.state_dir)
    assert.equal("/tmp/dobj-state/v3/do/counter-Counter", c.bindings[1].storage_dir)
  end)

  local bad = {
    { "syntax.toml", nil, "bad/syntax.toml:3:22: unterminated string" },
    { "syntax.jsonc", nil, "bad/syntax.jsonc:3:3: expected ',' or '}'" },
    { "script_name.toml", nil, 'durable_objects.bindings[0].script_name is not supported (binding "REMOTE"' },
    { "environment.jsonc", nil, 'durable_objects.bindings[1].environment is not supported (binding "ENVD"' },
    { "env_binding.toml", "staging",
      'env.staging.durable_objects.bindings[0].script_name is not supported (binding "S"' },
    { "types.toml", nil, "vars must be a table, not string" },
    { "date.toml", nil, "bad/date.toml:2:22: dates and times are not supported" },
    { "table_twice.toml", nil, "bad/table_twice.toml:4:2: the table a is defined twice" },
    { "root_array.json", nil, "the configuration must be an object, not array" },
  }
  for _, b in ipairs(bad) do
    it("refuses bad/" .. b[1] .. " with nil and a message naming the file, the key and the line", function()
      local c, msg = dobj.load_config { path = FIX .. "/bad/" .. b[1], env = b[2] or "" }
      assert.is_nil(c)
      assert.truthy(msg:find(b[3], 1, true), msg)
      assert.truthy(msg:find(FIX .. "/bad/" .. b[1], 1, true), msg)
    end)
  end

  it("raises on misuse", function()
    assert.has_error(function() dobj.load_config(42) end)
    -- the env goes in the table: a second argument is not dropped unseen
    assert.has_error(function() dobj.load_config(".", "staging") end,
      "load_config: takes one argument, a path or { path =, env =, ... }")
    assert.has_error(function() dobj.load(".", "staging") end,
      "dobj.load: takes one argument, a config path or { config =, env =, ... }")
    assert.has_error(function() dobj.load_config { env = 1 } end)
    assert.has_error(function() dobj.load_config { path = "a\0b" } end)
  end)

  it("parses TOML and JSONC as the C and Python suites do", function()
    local t = assert(dobj._config_parse('a = [1, 2.0, 3e9, 0xff]\nb.c = "x"\n[[d]]\ne = true\n', "toml"))
    assert.same({ a = { 1, 2.0, 3e9, 255 }, b = { c = "x" }, d = { { e = true } } }, t)
    assert.equal("integer", math.type(t.a[1]))
    assert.equal("float", math.type(t.a[2]))
    assert.equal("float", math.type(t.a[3]))
    local j = assert(dobj._config_parse('// c\n{"a": [1, null,], /* b */ "b": 1.5,}', "jsonc"))
    assert.equal(dobj.null, j.a[2])
    assert.equal(1.5, j.b)
    local none, msg = dobj._config_parse("a = 1\na = 2\n", "toml", "x.toml")
    assert.is_nil(none)
    assert.equal("x.toml:2:1: the key a is defined twice", msg)
    assert.same({ "a" }, keys(assert(dobj._config_parse("a=1\n", "dotenv"))))
  end)
end)
