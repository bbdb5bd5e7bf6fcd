-- Hostile input to the binding: NUL bytes in names and paths, user code
-- (metamethods, finalizers) running while the binding is in the middle of
-- something.  Each case crashed, leaked or silently did the wrong thing.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "helpers.lua")
local dobj = H.dobj

local function message(f, ...)
  local err = H.catch(f, ...)
  return type(err) == "table" and err.message or tostring(err)
end

describe("NUL bytes", function()
  it("are refused in binding names (q\\0one and q\\0two would be one namespace)", function()
    local rt = H.runtime()
    assert.matches("binding name must not contain a NUL byte",
      message(rt.bind, rt, "q\0one", H.class("Q")))
    local kinds = assert(package.searchpath("dobj", package.cpath)):gsub("[^/]*$", "") ..
      "libdobjtest_kinds.so"
    assert.matches("binding name must not contain a NUL byte",
      message(rt.bind_native, rt, "q\0two", kinds, "Kinds"))
    assert.is_nil(rt.env.q)
  end)

  it("are refused in the storage directory (it would be cut at the NUL)", function()
    assert.matches("storage directory must not contain a NUL byte",
      message(dobj.runtime, { storage = os.tmpname() .. "\0/elsewhere" }))
  end)

  it("are refused in a native library's path and class name", function()
    local rt = H.runtime()
    assert.matches("library path must not contain a NUL byte",
      message(rt.bind_native, rt, "N", "librate.so\0.txt", "Rate"))
    assert.matches("class name must not contain a NUL byte",
      message(rt.bind_native, rt, "N", "librate.so", "Rate\0x"))
  end)
end)

describe("user code inside the binding", function()
  it("an error from a class's __index during bind leaves the runtime usable", function()
    local rt = H.runtime()
    local Bad = setmetatable({}, { __index = function(_, k)
      if k == "alarm" then error("no alarms here", 0) end
    end })
    assert.are.equal("no alarms here", message(rt.bind, rt, "BAD", Bad))
    assert.is_nil(rt.env.BAD)
    local Good = H.class("Good")
    function Good:fetch() return dobj.response("good") end
    assert.are.equal("good", rt:bind("BAD", Good):get_by_name("g"):fetch("https://g/"):text())
  end)
end)
