// The workerd side of the Python interop test (tests/python/test_interop.py):
// /read compares what dobj's Python binding wrote (object "from-python") with
// the same cases in JS; /write stores the cases into object "from-workerd"
// for Python to read.  The cases are the JS values of the Python mapping
// (docs/python.md): e.g. Python's 2**40 (and 2.0**40) is the JS number
// 2**40, Python's 2**53 + 1 the BigInt 2n**53n + 1n, a dict with a non-str
// key a Map.  [0.5, 1] is a double array (both N): Python reads [0.5, 1.0].
import { makePeer } from "./peer.js";

function cases() {
  const shared = { v: 1 };
  const cycle = { name: "c" };
  cycle.self = cycle;
  const selfList = [1];
  selfList.push(selfList);
  return [
    ["int", 1], ["neg", -5], ["smi_max", 2 ** 30 - 1], ["smi_min", -(2 ** 30)],
    ["two30", 2 ** 30], ["two31", 2 ** 31], ["two40", 2 ** 40], ["safe_max", 2 ** 53],
    ["ms_timestamp", 1700000000123], ["two40_float", 2 ** 40], ["whole_float", 2],
    ["double_array", [0.5, 1]], ["bigint", 2n ** 53n + 1n], ["bigint_neg", -(2n ** 63n)],
    ["bigint_huge", 2n ** 100n], ["float", 1.5], ["nan", NaN], ["negzero", -0],
    ["inf", Infinity], ["ninf", -Infinity], ["true", true], ["false", false], ["null", null],
    ["ascii", "hello"], ["latin1", "héllo ÿ"], ["twobyte", "日本"], ["astral", "😀!"],
    ["lone_surrogate", "a\ud800b"], ["empty_str", ""], ["key_\udc00_lone", "k"],
    ["bytes", new Uint8Array([0, 1, 255])], ["empty_bytes", new Uint8Array([])],
    ["bytearray", new Uint8Array([7, 8])],
    ["date", new Date(1700000000123)], ["array", [1, "a", null]], ["tuple", [1, 2]],
    ["object", { x: 1, y: "z" }], ["empty_obj", {}], ["empty_array", []], ["index_keys", { 1: "a", b: 2 }],
    ["map", new Map([["k", 1], [2, "two"], [true, false]])],
    ["set", new Set([1, "a"])], ["frozenset", new Set([3])],
    ["nested", { list: [{ a: 1 }, { b: [true, false] }], m: new Map([["inner", [1, 2]], [0, null]]) }],
    ["shared", { a: shared, b: shared }], ["cycle", cycle], ["self_list", selfList],
  ];
}

const peer = makePeer(cases, "from-python", "Python");
export const Interop = peer.Interop;
export default peer.worker;
