// Formatting that never throws: anything missing or not a finite number shows as "—".
export const DASH = "—";

export function get(obj, path) {
  let cur = obj;
  for (const key of path.split(".")) {
    if (cur === null || cur === undefined || typeof cur !== "object") return undefined;
    cur = cur[key];
  }
  return cur;
}

export function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

export function num(x, digits = 4) {
  if (!isNum(x)) return DASH;
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(Math.max(digits - 1, 1));
  return Number(x.toPrecision(digits)).toString();
}

export function int(x) {
  return isNum(x) ? Math.round(x).toLocaleString("en-US") : DASH;
}

export function pct(x, digits = 1) {
  return isNum(x) ? `${(x * 100).toFixed(digits)}%` : DASH;
}

export function bytes(x) {
  if (!isNum(x)) return DASH;
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = x;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

export function msFromNs(ns, count) {
  if (!isNum(ns) || !isNum(count) || count <= 0) return DASH;
  return `${(ns / count / 1e6).toFixed(3)} ms`;
}

export function text(x) {
  return x === null || x === undefined || x === "" ? DASH : String(x);
}

export function shape(dims) {
  return Array.isArray(dims) ? `[${dims.join(", ")}]` : DASH;
}

// weightwatcher's guidance: alpha roughly 2-6 is well trained; above ~6 under-trained; below 2 over-fit.
export function alphaHealth(alpha) {
  if (!isNum(alpha)) return { cls: "none", label: "no fit" };
  if (alpha < 2) return { cls: "over", label: "over-fit" };
  if (alpha > 6) return { cls: "under", label: "under-trained" };
  return { cls: "good", label: "well trained" };
}
