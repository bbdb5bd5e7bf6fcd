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

return H
