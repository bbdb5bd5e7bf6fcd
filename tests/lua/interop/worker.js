// The workerd side of the Lua interop check (run.py): /read compares what
// dobj's Lua binding wrote (object "from-lua") with the same cases in JS;
// /write stores the cases into object "from-workerd" for side.lua to read.
import { makePeer } from "./peer.js";

function cases() {
  const shared = { v: 1 };
  const cycle = { name: "c" };
  cycle.self = cycle;
  return [
    ["int", 1], ["neg", -5], ["smi_max", 2 ** 30 - 1], ["two30", 2 ** 30], ["two31", 2 ** 31],
    ["two40", 2 ** 40], ["safe_max", 2 ** 53], ["ms_timestamp", 1700000000123],
    ["double_array", [0.5, 1]], ["bigint", 2n ** 53n + 1n],
    ["bigint_neg", -(2n ** 63n)], ["float", 1.5], ["nan", NaN], ["negzero", -0],
    ["inf", Infinity], ["ninf", -Infinity], ["true", true], ["false", false], ["null", null],
    ["ascii", "hello"], ["latin1", "héllo ÿ"], ["twobyte", "日本"], ["astral", "😀!"],
    ["empty_str", ""], ["bytes", new Uint8Array([0, 1, 255])], ["empty_bytes", new Uint8Array([])],
    ["date", new Date(1700000000123)], ["array", [1, "a", null]], ["object", { x: 1, y: "z" }],
    ["empty_obj", {}], ["empty_array", []], ["map", new Map([["k", 1], [2, "two"], [true, false]])],
    ["set", new Set([1, "a"])],
    ["nested", { list: [{ a: 1 }, { b: [true, false] }], m: new Map([["inner", [1, 2]]]) }],
    ["shared", { a: shared, b: shared }], ["cycle", cycle],
  ];
}

const peer = makePeer(cases, "from-lua", "Lua");
export const Interop = peer.Interop;
export default peer.worker;
