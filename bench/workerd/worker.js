// dobj bench peer: a worker and a Durable Object class for workerd.
//
// workerd freezes Date.now()/performance.now() while JavaScript runs and only
// moves the clock when I/O completes (a Spectre mitigation).  A CPU loop timed
// with two reads of the clock therefore measures 0 ms.  Each loop below is
// bracketed by awaited I/O (a timer of 0 ms, then a round trip to the object),
// so that the clock read after the loop includes the loop's time.  The driver
// also times every request from outside, as a cross-check.
//
// The same module is loaded by two workers (config.capnp.in): "main" (IDs,
// fetch, RPC; in-memory storage) and "store" (the Store class, SQLite-backed
// on localDisk), which main reaches through its STORE binding.

import { DurableObject } from "cloudflare:workers";

export class Bench {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
    this.calls = 0;
  }
  async fetch(request) {
    this.calls++; // as the dobj bench handlers do (they check every call arrived)
    return new Response("ok");
  }
}

// RPC: a class extending DurableObject, called with `await stub.add(x)`.
export class RpcBench extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.n = 0;
  }
  add(x) {
    this.n += x;
    return this.n;
  }
}

// Storage on localDisk.  Each method is one call doing a loop of n
// operations on keys "k0".."k<n-1>" with small integer values, as the dobj
// sides do; the caller gets the result only after the writes are committed
// (output gate).
export class Store extends DurableObject {
  // Synchronous key-value API of SQLite-backed objects.
  kvPut(n) {
    const kv = this.ctx.storage.kv;
    for (let i = 0; i < n; i++) kv.put("k" + i, i);
    return n;
  }
  kvGet(n) {
    const kv = this.ctx.storage.kv;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += kv.get("k" + i);
    if (!(sum >= 0)) throw new Error("kvGet: a key is missing");
    return sum;
  }
  // The asynchronous API, every call awaited.
  async put(n) {
    const st = this.ctx.storage;
    for (let i = 0; i < n; i++) await st.put("k" + i, i);
    return n;
  }
  async get(n) {
    const st = this.ctx.storage;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += await st.get("k" + i);
    if (!(sum >= 0)) throw new Error("get: a key is missing");
    return sum;
  }
  // The durable increment: read, add one, write; the reply waits for the commit.
  async inc() {
    const st = this.ctx.storage;
    const n = ((await st.get("n")) ?? 0) + 1;
    await st.put("n", n);
    return n;
  }
  async fetch(request) {
    const st = this.ctx.storage;
    const n = ((await st.get("n")) ?? 0) + 1;
    await st.put("n", n);
    return new Response(String(n));
  }
}

// One class per golden-vector unique key (a namespace is bound to one class).
export class GoldenA extends Bench {}
export class GoldenB extends Bench {}
export class GoldenC extends Bench {}

// Make the clock catch up with real time: an awaited timer is I/O.
async function tick() {
  await new Promise((resolve) => setTimeout(resolve, 0));
}

async function timed(fn) {
  await tick();
  const t0 = performance.now();
  const d0 = Date.now();
  const out = await fn();
  await tick();
  const t1 = performance.now();
  const d1 = Date.now();
  return { ms: t1 - t0, date_ms: d1 - d0, out };
}

const loops = {
  async id_from_name(env, n) {
    const ns = env.BENCH;
    let id;
    for (let i = 0; i < n; i++) id = ns.idFromName("x");
    return id.toString();
  },
  async id_from_string(env, n) {
    const ns = env.BENCH;
    const hex = ns.idFromName("x").toString();
    let id;
    for (let i = 0; i < n; i++) id = ns.idFromString(hex);
    return id.toString();
  },
  async new_unique_id(env, n) {
    const ns = env.BENCH;
    let id;
    for (let i = 0; i < n; i++) id = ns.newUniqueId();
    return id.toString();
  },
  // Sequential round trips to one object; the body is read, as the dobj
  // bindings hand back a Response whose body is already in memory.
  async stub_fetch(env, n) {
    const stub = env.BENCH.get(env.BENCH.idFromName("bench"));
    let text;
    for (let i = 0; i < n; i++) {
      const r = await stub.fetch("https://x/");
      text = await r.text();
    }
    return text;
  },
  // The same without reading the body (reported for reference).
  async stub_fetch_nobody(env, n) {
    const stub = env.BENCH.get(env.BENCH.idFromName("bench"));
    let r;
    for (let i = 0; i < n; i++) r = await stub.fetch("https://x/");
    return r.status;
  },
  // RPC round trips to one object (RpcBench.add).
  async rpc_add(env, n) {
    const stub = env.RPC.get(env.RPC.idFromName("bench"));
    let total = 0;
    for (let i = 0; i < n; i++) total = await stub.add(5);
    return total;
  },
  // Storage: one call doing n operations inside the object (the call's own
  // round trip, ~50 us, is part of the figure and negligible at these n).
  async store_kv_put(env, n) {
    return await storeStub(env).kvPut(n);
  },
  async store_kv_get(env, n) {
    return await storeStub(env).kvGet(n);
  },
  async store_put(env, n) {
    return await storeStub(env).put(n);
  },
  async store_get(env, n) {
    return await storeStub(env).get(n);
  },
  // Durable increment round trips, sequential: by RPC and by fetch.
  async store_inc_rpc(env, n) {
    const stub = storeStub(env);
    let v;
    for (let i = 0; i < n; i++) v = await stub.inc();
    return v;
  },
  async store_inc_fetch(env, n) {
    const stub = storeStub(env);
    let v;
    for (let i = 0; i < n; i++) v = await (await stub.fetch("https://x/inc")).text();
    return v;
  },
};

// Untimed preparation before a loop: the keys a get loop reads must exist.
const preps = {
  async store_kv_get(env, n) {
    await storeStub(env).kvPut(n);
  },
  async store_get(env, n) {
    await storeStub(env).kvPut(n);
  },
};

function storeStub(env) {
  return env.STORE.get(env.STORE.idFromName("bench"));
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/golden") {
      const out = {
        "mykey": { "http://foo/": env.GOLDEN_A.idFromName("http://foo/").toString() },
        "test-unique-key": {},
        "my-unique-key": { "foo": env.GOLDEN_C.idFromName("foo").toString() },
      };
      for (const name of ["foo", "bar", "", "hello world"]) {
        out["test-unique-key"][name] = env.GOLDEN_B.idFromName(name).toString();
      }
      // Round trips through the parser, and its error messages.
      const hex = out["test-unique-key"]["foo"];
      out.parsed = env.GOLDEN_B.idFromString(hex.toUpperCase()).toString();
      const errors = {};
      for (const [k, s] of [["short", "abc"], ["foreign", hex]]) {
        try {
          (k === "foreign" ? env.GOLDEN_C : env.GOLDEN_B).idFromString(s);
          errors[k] = null;
        } catch (e) {
          errors[k] = `${e.name}: ${e.message}`;
        }
      }
      out.errors = errors;
      return Response.json(out);
    }
    if (url.pathname === "/bench") {
      const op = url.searchParams.get("op");
      const n = Number(url.searchParams.get("n") || "0");
      const loop = loops[op];
      if (!loop) return new Response(`unknown op ${op}`, { status: 400 });
      if (preps[op]) await preps[op](env, n);
      const r = await timed(() => loop(env, n));
      return Response.json({ op, n, ms: r.ms, date_ms: r.date_ms, last: r.out });
    }
    return new Response("dobj bench peer\n");
  },
};
