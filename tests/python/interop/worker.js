// The workerd side of the Python interop test (tests/python/test_interop.py):
// /read compares what dobj's Python binding wrote (object "from-python") with
// the same cases in JS; /write stores the cases into object "from-workerd"
// for Python to read.  The cases are the JS values of the Python mapping
// (docs/python.md): e.g. Python's 2.0**30 is the JS number 2**30, Python's
// 2**53 + 1 the BigInt 2n**53n + 1n, a dict with a non-str key a Map.
import { DurableObject } from "cloudflare:workers";

function cases() {
  const shared = { v: 1 };
  const cycle = { name: "c" };
  cycle.self = cycle;
  const selfList = [1];
  selfList.push(selfList);
  return [
    ["int", 1], ["neg", -5], ["smi_max", 2 ** 30 - 1], ["smi_min", -(2 ** 30)],
    ["two30", 2 ** 30], ["two31", 2 ** 31], ["two40", 2 ** 40], ["safe_max", 2 ** 53],
    ["whole_float", 2], ["bigint", 2n ** 53n + 1n], ["bigint_neg", -(2n ** 63n)],
    ["bigint_huge", 2n ** 100n], ["float", 1.5], ["nan", NaN], ["negzero", -0],
    ["inf", Infinity], ["ninf", -Infinity], ["true", true], ["false", false], ["null", null],
    ["ascii", "hello"], ["latin1", "héllo ÿ"], ["twobyte", "日本"], ["astral", "😀!"],
    ["lone_surrogate", "a\ud800b"], ["empty_str", ""],
    ["bytes", new Uint8Array([0, 1, 255])], ["empty_bytes", new Uint8Array([])],
    ["bytearray", new Uint8Array([7, 8])],
    ["date", new Date(1700000000123)], ["array", [1, "a", null]], ["tuple", [1, 2]],
    ["object", { x: 1, y: "z" }], ["empty_obj", {}], ["index_keys", { 1: "a", b: 2 }],
    ["map", new Map([["k", 1], [2, "two"], [true, false]])],
    ["set", new Set([1, "a"])], ["frozenset", new Set([3])],
    ["nested", { list: [{ a: 1 }, { b: [true, false] }], m: new Map([["inner", [1, 2]], [0, null]]) }],
    ["shared", { a: shared, b: shared }], ["cycle", cycle], ["self_list", selfList],
  ];
}

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

export class Interop extends DurableObject {
  async fetch(request) {
    const url = new URL(request.url);
    const out = [];
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

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/") return new Response("dobj bench peer (Python interop)"); // the driver waits for this
    const name = url.pathname === "/write" ? "from-workerd" : "from-python";
    return env.NS.get(env.NS.idFromName(name)).fetch(request);
  },
};
