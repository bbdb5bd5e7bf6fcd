// The HTTP bench's project for `workerd serve` (bench/http_bench.py): the
// shape of examples/workers/{python,lua}-counter.  The entry forwards each
// request to the Counter named by the URL path (GET /obj7 -> "obj7"); the
// Counter reads its count, adds one, writes it (durable storage, SQLite on
// localDisk) and returns the new count as text.  The response leaves after
// the write is committed (output gate), as on dobj.

import { DurableObject } from "cloudflare:workers";

export class Counter extends DurableObject {
  async fetch(request) {
    const storage = this.ctx.storage;
    const n = ((await storage.get("count")) ?? 0) + 1;
    await storage.put("count", n);
    return new Response(String(n), { headers: { "content-type": "text/plain" } });
  }
}

export default {
  async fetch(request, env) {
    const name = new URL(request.url).pathname.replace(/^\/+|\/+$/g, "") || "default";
    return env.COUNTER.get(env.COUNTER.idFromName(name)).fetch(request);
  },
};
