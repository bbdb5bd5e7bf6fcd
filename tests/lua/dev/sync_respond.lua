-- dobj.http_listen with a handler that answers at once, inside the call
-- (dev_spec.lua runs this under timeout(1)): the answer must go out.
-- Prints what curl received.
local dobj = require "dobj"
local rt = dobj.runtime {}
local srv = assert(dobj.http_listen("127.0.0.1", 0))
local port = srv:port()
-- The client connects to the listening socket before the loop runs.
local client = assert(io.popen(("env -u LD_PRELOAD curl -s -m 10 http://127.0.0.1:%d/sync 2>&1"):format(port)))
srv:run(rt, function(id, req)
  srv:respond(id, dobj.response("answered " .. req.url))
  srv:stop()
end)
srv:close()
rt:close()
io.write(client:read("a"))
client:close()
