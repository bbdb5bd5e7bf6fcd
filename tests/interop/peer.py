"""What the Lua and Python interop tests share to run workerd on the folder
a binding wrote: the config (localDisk storage, unique key "interop-key")
and the template folder bench/workerd/driver.py starts workerd from."""
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG = """using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .w),
               (name = "disk", disk = (path = "@STORE@", writable = true)) ],
  sockets = [ (name = "http", address = "@ADDRESS@", http = (), service = "main") ],
);
const w :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js"),
              (name = "peer.js", esModule = embed "peer.js") ],
  compatibilityDate = "2024-09-01",
  durableObjectNamespaces = [ (className = "Interop", uniqueKey = "interop-key", enableSql = true) ],
  durableObjectStorage = (localDisk = "disk"),
  bindings = [ (name = "NS", durableObjectNamespace = "Interop") ],
);
"""


def prepare(tmpl, store, worker_js):
    """Fill the template folder `tmpl` for a workerd on storage folder `store`
    running the language's `worker_js` (with the shared peer.js)."""
    with open(os.path.join(tmpl, "config.capnp.in"), "w") as f:
        f.write(CONFIG.replace("@STORE@", str(store)))
    shutil.copy(worker_js, os.path.join(tmpl, "worker.js"))
    shutil.copy(os.path.join(HERE, "peer.js"), os.path.join(tmpl, "peer.js"))
