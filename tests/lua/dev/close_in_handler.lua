-- dobj.http_listen with a handler that closes the runtime (dev_spec.lua
-- runs this under timeout(1)): srv:run must stop with the runtime's error,
-- not poll the closed fd for ever (it spun at full CPU).  Prints what
-- srv:run raised and what curl received.
local dobj = require "dobj"
local rt = dobj.runtime {}
local srv = assert(dobj.http_listen("127.0.0.1", 0))
local port = srv:port()
local client = assert(io.popen(("env -u LD_PRELOAD curl -s -m 10 http://127.0.0.1:%d/close 2>&1"):format(port)))
local ok, err = pcall(srv.run, srv, rt, function(id, req)
  rt:close()
  srv:respond(id, dobj.response("closed"))
end)
io.write("run: ", tostring(ok), " ", tostring(err), "\n")
srv:close()
io.write(client:read("a"))
client:close()
