// The workerd side of the interop tests of both bindings
// (tests/lua/interop/run.py, tests/python/test_interop.py).  Each language's
// worker.js lists its cases (the JS values of that language's mapping) and
// builds its worker with makePeer: /read compares what the binding wrote
// (object `reader`) with those cases; /write stores the cases into object
// "from-workerd" for the binding to read; /alarm-get, /alarm-set and
// /alarm-wait (?name=object) check that each runtime fires the alarms the
// other set; /sql-counts runs statements and answers their rowsRead and
// rowsWritten.
import { DurableObject } from "cloudflare:workers";

// Deep equality that also checks types, -0, NaN and the sharing of objects.
function same(a, b, seen = new Map()) {
  if (typeof a !== typeof b) return `${typeof a} vs ${typeof b}`;
  if (typeof a !== "object" || a === null || b === null) {
    return Object.is(a, b) ? null : `${String(a)} vs ${String(b)}`;
  }
  if (seen.has(a)) return seen.get(a) === b ? null : "sharing differs";
  seen.set(a, b);
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) {
    return `${a.constructor?.name} vs ${b.constructor?.name}`;
  }
  if (a instanceof Date) return Object.is(a.getTime(), b.getTime()) ? null : "dates differ";
  if (a instanceof Uint8Array) {
    return a.length === b.length && a.every((x, i) => x === b[i]) ? null : "bytes differ";
  }
  if (a instanceof Map) {
    if (a.size !== b.size) return "map sizes differ";
    for (const [k, v] of a) {
      if (!b.has(k)) return `map key ${String(k)} missing`;
      const r = same(v, b.get(k), seen);
      if (r) return `map ${String(k)}: ${r}`;
    }
    return null;
  }
  if (a instanceof Set) {
    if (a.size !== b.size) return "set sizes differ";
    for (const k of a) if (!b.has(k)) return `set item ${String(k)} missing`;
    return null;
  }
  const ka = Object.keys(a), kb = Object.keys(b);
  if (ka.length !== kb.length) return `keys ${ka} vs ${kb}`;
  for (const k of ka) {
    if (!Object.hasOwn(b, k)) return `key ${k} missing`;
    const r = same(a[k], b[k], seen);
    if (r) return `${k}: ${r}`;
  }
  return null;
}

export function makePeer(cases, reader, language) {
  class Interop extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env);
      this.fired = new Promise((resolve) => (this.onAlarm = resolve));
    }

    // Alarms across runtimes: dobj sets one and workerd fires it (/alarm-wait),
    // workerd sets one (/alarm-set?at=ms) and dobj fires it.
    async alarm(info) {
      const record = { at: Date.now(), retryCount: info?.retryCount ?? 0 };
      await this.ctx.storage.put("alarm-fired", record);
      this.onAlarm(record);
    }

    async alarmRequest(url) {
      const storage = this.ctx.storage;
      if (url.pathname === "/alarm-get") return { alarm: await storage.getAlarm() };
      if (url.pathname === "/alarm-set") {
        await storage.setAlarm(Number(url.searchParams.get("at")));
        return { alarm: await storage.getAlarm() };
      }
      // /alarm-wait: until this object's alarm has run (or 30 s passed).
      let fired = await storage.get("alarm-fired");
      if (!fired) {
        const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 30000));
        fired = await Promise.race([this.fired, timeout]);
      }
      return { fired, alarm: await storage.getAlarm() };
    }

    async fetch(request) {
      const url = new URL(request.url);
      const out = [];
      if (url.pathname === "/sql-counts") {
        // rowsRead and rowsWritten of each statement of ?q= (a JSON list).
        const sql = this.ctx.storage.sql;
        return new Response(JSON.stringify(JSON.parse(url.searchParams.get("q")).map((q) => {
          const cursor = sql.exec(q);
          cursor.toArray();
          return [cursor.rowsRead, cursor.rowsWritten];
        })));
      }
      if (url.pathname.startsWith("/alarm-")) {
        return new Response(JSON.stringify(await this.alarmRequest(url)));
      }
      if (url.pathname === "/write") {
        for (const [k, v] of cases()) this.ctx.storage.put(k, v);
        await this.ctx.storage.sync();
        return new Response("workerd wrote " + cases().length + " values");
      }
      for (const [k, want] of cases()) {
        let got;
        try {
          got = await this.ctx.storage.get(k);
        } catch (e) {
          out.push(`${k}: ${e}`);
          continue;
        }
        const r = same(want, got);
        if (r) out.push(`${k}: ${r}`);
      }
      return new Response(JSON.stringify({ n: cases().length, mismatches: out }));
    }
  }
  const worker = {
    async fetch(request, env) {
      const url = new URL(request.url);
      // The driver waits for "/" to answer before it sends anything.
      if (url.pathname === "/") return new Response(`dobj bench peer (${language} interop)`);
      const name = url.searchParams.get("name") ??
        (url.pathname === "/write" ? "from-workerd" : reader);
      return env.NS.get(env.NS.idFromName(name)).fetch(request);
    },
  };
  return { Interop, worker };
}
