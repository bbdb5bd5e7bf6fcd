-- wrk script of the HTTP bench: each thread sends GET /obj0, /obj1, ...,
-- /obj31, /obj0, ... in turn, so the load is spread over 32 Durable Objects
-- (the same on every server).  The requests are formatted once per thread,
-- in init (wrk sets the Host header just before it).
local requests = {}
local next_one = 0

init = function(args)
  for i = 0, 31 do
    requests[i + 1] = wrk.format("GET", "/obj" .. i)
  end
end

request = function()
  next_one = next_one % #requests + 1
  return requests[next_one]
end
