-- dobj as a LuaRocks package.  From a clone:
--   luarocks --lua-version=5.4 make            (or: make test-rock)
-- builds the module "dobj" from the C core and the Lua binding and installs it.
rockspec_format = "3.0"
package = "dobj"
version = "scm-1"
source = {
   -- No public home yet: this rockspec builds the source tree it sits in
   -- (`luarocks make` in a checkout); `luarocks install` of it has nothing
   -- to fetch.  The URL says so rather than naming a repository that does
   -- not exist.
   url = "file://.",
}
description = {
   summary = "Cloudflare-style Durable Objects as a native SDK (C core, Lua 5.4 binding)",
   detailed = [[
Named, single-instance objects with serialized delivery, input and output
gates, durable storage on SQLite in workerd's on-disk format, alarms and
native C classes, driven from Lua coroutines.]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4",
}
external_dependencies = {
   OPENSSL = { header = "openssl/sha.h", library = "crypto" },
   SQLITE = { header = "sqlite3.h", library = "sqlite3" },
   -- By its library, not its header: Debian keeps ffi.h in the multiarch
   -- folder (/usr/include/x86_64-linux-gnu), where the compiler finds it
   -- but LuaRocks does not look.
   LIBFFI = { library = "ffi" },
   -- libpq (cluster mode): Debian keeps its header in include/postgresql.
   PQ = { header = "postgresql/libpq-fe.h", library = "pq" },
   -- The HTTP server of `dobj-lua dev` (Debian: libmicrohttpd-dev).
   MHD = { header = "microhttpd.h", library = "microhttpd" },
   -- Its WebSockets' framing (Debian: libwslay-dev).
   WSLAY = { header = "wslay/wslay.h", library = "wslay" },
}
build = {
   type = "builtin",
   modules = {
      dobj = {
         -- core/src/*.c and the Lua binding's C files.  LuaRocks has no
         -- globs: `make rockspec` rewrites this list, `make check-sources`
         -- (part of `make test`) fails when it is stale.
         sources = {
            "core/src/alarm.c",
            "core/src/background.c",
            "core/src/cluster.c",
            "core/src/cluster_activate.c",
            "core/src/cluster_append.c",
            "core/src/cluster_commit.c",
            "core/src/cluster_lease.c",
            "core/src/cluster_log.c",
            "core/src/cluster_net.c",
            "core/src/cluster_pg.c",
            "core/src/cluster_record.c",
            "core/src/cluster_route.c",
            "core/src/cluster_snapshot.c",
            "core/src/cluster_wal.c",
            "core/src/cluster_worker.c",
            "core/src/cluster_ws.c",
            "core/src/config.c",
            "core/src/config_cluster.c",
            "core/src/config_dotenv.c",
            "core/src/config_json.c",
            "core/src/config_text.c",
            "core/src/config_toml.c",
            "core/src/error.c",
            "core/src/folder.c",
            "core/src/id.c",
            "core/src/idmap.c",
            "core/src/loop.c",
            "core/src/msg.c",
            "core/src/msg_wire.c",
            "core/src/native.c",
            "core/src/ns.c",
            "core/src/rt.c",
            "core/src/rules.c",
            "core/src/server.c",
            "core/src/server_ws.c",
            "core/src/sql_guard.c",
            "core/src/storage.c",
            "core/src/stub.c",
            "core/src/testkit.c",
            "core/src/v8_format.c",
            "core/src/v8_reader.c",
            "core/src/v8_writer.c",
            "core/src/val_tree.c",
            "core/src/val_v8.c",
            "core/src/websocket.c",
            "bindings/lua/src/cluster.c",
            "bindings/lua/src/config.c",
            "bindings/lua/src/ctx.c",
            "bindings/lua/src/driver.c",
            "bindings/lua/src/errors.c",
            "bindings/lua/src/host_values.c",
            "bindings/lua/src/http.c",
            "bindings/lua/src/module.c",
            "bindings/lua/src/namespace.c",
            "bindings/lua/src/project.c",
            "bindings/lua/src/route.c",
            "bindings/lua/src/rpc.c",
            "bindings/lua/src/runtime.c",
            "bindings/lua/src/server.c",
            "bindings/lua/src/sleep.c",
            "bindings/lua/src/sql.c",
            "bindings/lua/src/storage.c",
            "bindings/lua/src/stub.c",
            "bindings/lua/src/testkit.c",
            "bindings/lua/src/values.c",
            "bindings/lua/src/websocket.c",
         },
         defines = { "DOBJ_HAVE_MHD", "DOBJ_HAVE_WSLAY" },
         incdirs = { "core/include", "core/src", "$(OPENSSL_INCDIR)", "$(SQLITE_INCDIR)", "$(MHD_INCDIR)", "$(WSLAY_INCDIR)",
            "$(PQ_INCDIR)/postgresql" },
         libdirs = { "$(OPENSSL_LIBDIR)", "$(SQLITE_LIBDIR)", "$(LIBFFI_LIBDIR)", "$(MHD_LIBDIR)", "$(WSLAY_LIBDIR)",
            "$(PQ_LIBDIR)" },
         libraries = { "crypto", "sqlite3", "pq", "ffi", "microhttpd", "wslay", "dl", "m", "pthread" },
      },
      -- require "dobj.test": the busted helpers (docs/testing.md).
      ["dobj.test"] = "bindings/lua/dobj/test.lua",
   },
   -- `dobj-lua dev`: LuaRocks puts a wrapper in the tree's bin/ that finds
   -- the tree's modules.
   install = {
      bin = { ["dobj-lua"] = "bindings/lua/bin/dobj-lua" },
   },
}
