-- One Lua node of the fault test (tests/cluster/fault.py): the same as
-- node.py, in Lua — a runtime in cluster mode serving the namespace LIST
-- with the same list-append class (ListObj, written in Lua) to the client
-- processes (client.py; CLIENTS=n runs n clients of the workload here too),
-- each operation logged as one JSON line on stdout in node.py's format.  Python and Lua nodes serve one namespace: a list
-- written by one language's incarnation is read by the other's (the values
-- are the core's V8 format: a Lua sequence of strings is a JS array of
-- strings, a Python list of str too).
--
-- Times are seconds of CLOCK_REALTIME (rt:now(); node.py uses time.time()),
-- one clock for every process of the machine.  Lua has no thread to watch
-- stdin, so the node runs until the wall-clock deadline END (seconds) and
-- then stops its clients, closes the runtime and exits.
--
--   lua5.4 lua_node.lua URL STORAGE NAME SEED END [TTL GRACE]
local dobj = require "dobj"

local URL, STORAGE, NAME, SEED, END = arg[1], arg[2], arg[3], math.tointeger(tonumber(arg[4])), tonumber(arg[5])
local TTL, GRACE = tonumber(arg[6] or 1.5), tonumber(arg[7] or 0.5)
assert(URL and STORAGE and NAME and SEED and END, "usage: lua_node.lua URL STORAGE NAME SEED END")
local OBJECTS = 5

local function json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return c == '"' and '\\"' or c == "\\" and "\\\\" or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

-- A record as one JSON line: string, number, boolean and array-of-strings
-- values (the only ones records hold), keys in a fixed order.
local KEYS = { "c", "op", "obj", "tok", "t0", "t1", "th", "out", "val", "inc", "node", "err",
  "started", "stopped", "rejoined", "old", "new", "t", "lang" }
local function emit(rec)
  local parts = {}
  for _, k in ipairs(KEYS) do
    local v = rec[k]
    if v ~= nil then
      local enc
      if type(v) == "string" then
        enc = json_str(v)
      elseif type(v) == "number" then
        enc = math.type(v) == "integer" and tostring(v) or ("%.6f"):format(v)
      elseif type(v) == "boolean" then
        enc = tostring(v)
      elseif v == dobj.null or v == false then
        enc = "null"
      else
        local items = {}
        for i, s in ipairs(v) do items[i] = json_str(tostring(s)) end
        enc = "[" .. table.concat(items, ",") .. "]"
      end
      parts[#parts + 1] = json_str(k) .. ":" .. enc
    end
  end
  io.stdout:write("{", table.concat(parts, ","), "}\n")
  io.stdout:flush()
end

local rt
local incarnations = 0

local function now() return rt:now() / 1e3 end

local ListObj = { __name = "ListObj" }
ListObj.__index = ListObj

function ListObj.new(ctx, env)
  incarnations = incarnations + 1
  return setmetatable({ ctx = ctx, inc = ("%s-lua-%d"):format(NAME, incarnations) }, ListObj)
end

function ListObj:append(token)
  local items = self.ctx.storage:get("items") or dobj.array()
  items[#items + 1] = token
  self.ctx.storage:put("items", items)
  return { self.inc, items, now() }
end

function ListObj:read()
  return { self.inc, self.ctx.storage:get("items") or dobj.array(), now() }
end

for attempt = 1, 40 do -- PostgreSQL may be down (a fault) when the node starts
  local err
  -- (a low snapshot threshold, as node.py's: compaction under the faults)
  rt, err = dobj.runtime { storage = STORAGE, cluster = URL, node_addr = "127.0.0.1:0",
    cluster_ttl = TTL, cluster_grace = GRACE, idle_timeout = 1, cluster_snapshot_bytes = 16384 }
  if rt then break end
  if attempt == 40 then error(err) end
  os.execute("sleep 0.25")
end
local ns = rt:bind("LIST", ListObj)
local node = rt:node_id()
emit { started = NAME, node = node, t = now(), lang = "lua" }

local function client(c, rng_seed)
  local rng = rng_seed
  local function random() -- a small LCG per client: math.random is shared
    rng = (rng * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff
    return (rng >> 11) / (1 << 52)
  end
  local n = 0
  while now() < END do
    local k = math.floor(random() * OBJECTS)
    local stub = ns:get_by_name("list" .. k)
    local rec = { c = ("%s.%d"):format(NAME, c), obj = k, node = rt:node_id() }
    local call
    if random() < 0.6 then
      n = n + 1
      rec.op, rec.tok = "append", ("%s.%d.%d"):format(NAME, c, n)
      call = function() return stub:append(rec.tok) end
    else
      rec.op = "read"
      call = function() return stub:read() end
    end
    rec.t0 = now()
    local ok, res = pcall(call)
    if ok then
      rec.inc, rec.val, rec.th, rec.out = res[1], res[2], res[3], "ok"
    else
      local msg = type(res) == "table" and tostring(res.message) or tostring(res)
      rec.err = msg:sub(1, 200)
      rec.out = (msg:find("was not sent", 1, true) or msg:find("is active on node", 1, true))
        and "fail" or "unknown"
    end
    rec.t1 = now()
    if rec.op == "append" and rec.out == "ok" then rec.val = nil end
    emit(rec)
    dobj.sleep(random() * 0.02)
  end
end

-- The node lost its lease (paused past it) and joined again: log it.  This
-- also keeps rt:run() serving the client processes until END.
local function watch()
  while now() < END do
    if rt:node_id() ~= node then
      emit { rejoined = NAME, old = node, new = rt:node_id(), t = now() }
      node = rt:node_id()
    end
    dobj.sleep(0.05)
  end
end

-- The workload runs in the client processes (client.py); CLIENTS=n runs n
-- clients here too.
for c = 0, (tonumber(os.getenv("CLIENTS") or "0") or 0) - 1 do
  rt:spawn(client, c, SEED * 1000 + c + 1)
end
rt:spawn(watch)
rt:run()
emit { stopped = NAME, node = rt:node_id(), t = now() }
rt:close()
