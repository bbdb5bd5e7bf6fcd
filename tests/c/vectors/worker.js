// Stores every case of cases.js with ctx.storage.put (localDisk, SQLite
// backend); gen.py then reads the blobs from the object's _cf_KV table.
import { DurableObject } from "cloudflare:workers";
import { cases } from "./cases.js";

export class Counter extends DurableObject {
  async fetch(request) {
    const out = [];
    for (const [name, make] of cases) {
      this.ctx.storage.put(name, make());
      out.push(name + "\t" + make.toString().replace(/^\(\) => /, ""));
    }
    await this.ctx.storage.sync();
    return new Response(out.join("\n"));
  }
}

export default {
  async fetch(request, env) {
    const stub = env.NS.get(env.NS.idFromName("vectors"));
    return stub.fetch(request);
  },
};
