// The eigenvalues behind a tensor's spectral metrics, computed in the browser from the raw values
// (.npy), the way the server's weightwatcher-compatible analysis defines them: the pooled
// eigenvalues of WᵀW; a convolution weight [out, in, *kernel] gives one matrix per kernel position,
// each scaled by √½ (eigenvalues halved).
import { getBytes } from "./api.js";

const MAX_WORK = 2e8; // N·M²·rf multiply-adds: a fraction of a second in a browser

function halfToFloat(h) {
  const sgn = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return sgn * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : sgn * Infinity;
  return sgn * 2 ** (e - 15) * (1 + f / 1024);
}

/** {shape, data: Float64Array} from an .npy file (little-endian numbers, C order). */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.slice(1, 6)) !== "NUMPY") throw new Error("not an .npy file");
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLen = major >= 2 ? view.getUint32(8, true) : view.getUint16(8, true);
  const start = major >= 2 ? 12 : 10;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "";
  const shape = shapeText.split(",").map((t) => t.trim()).filter(Boolean).map(Number);
  if (!descr || fortran || descr.startsWith(">")) throw new Error(`unsupported .npy layout ${descr}`);
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  const kind = descr.slice(1);
  const readers = {
    f8: [8, (o) => view.getFloat64(o, true)], f4: [4, (o) => view.getFloat32(o, true)],
    f2: [2, (o) => halfToFloat(view.getUint16(o, true))], i1: [1, (o) => view.getInt8(o)],
    u1: [1, (o) => view.getUint8(o)], i2: [2, (o) => view.getInt16(o, true)], u2: [2, (o) => view.getUint16(o, true)],
    i4: [4, (o) => view.getInt32(o, true)], u4: [4, (o) => view.getUint32(o, true)],
  };
  const reader = readers[kind];
  if (!reader) throw new Error(`unsupported .npy dtype ${descr}`);
  const [size, read] = reader;
  const data = new Float64Array(count);
  for (let i = 0; i < count; i += 1) data[i] = read(offset + i * size);
  return { shape, data };
}

/** Eigenvalues of a symmetric matrix (row-major Float64Array, n×n) by cyclic Jacobi rotations. */
export function symmetricEigenvalues(a, n) {
  const m = Float64Array.from(a);
  for (let sweep = 0; sweep < 100; sweep += 1) {
    let off = 0;
    let diag = 0;
    for (let i = 0; i < n; i += 1) {
      diag += m[i * n + i] ** 2;
      for (let j = i + 1; j < n; j += 1) off += m[i * n + j] ** 2;
    }
    if (off <= 1e-30 * Math.max(diag, 1e-300)) break;
    for (let p = 0; p < n; p += 1) {
      for (let q = p + 1; q < n; q += 1) {
        const apq = m[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (m[q * n + q] - m[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const sn = t * c;
        for (let k = 0; k < n; k += 1) {
          const mkp = m[k * n + p];
          const mkq = m[k * n + q];
          m[k * n + p] = c * mkp - sn * mkq;
          m[k * n + q] = sn * mkp + c * mkq;
        }
        for (let k = 0; k < n; k += 1) {
          const mpk = m[p * n + k];
          const mqk = m[q * n + k];
          m[p * n + k] = c * mpk - sn * mqk;
          m[q * n + k] = sn * mpk + c * mqk;
        }
      }
    }
  }
  return Array.from({ length: n }, (_, i) => Math.max(m[i * n + i], 0));
}

/** Gram matrix of the smaller side of a rows×cols slice read through `at(r, c)`. */
function gram(rows, cols, at) {
  const n = Math.min(rows, cols);
  const g = new Float64Array(n * n);
  const byCols = cols <= rows;
  const len = byCols ? rows : cols;
  for (let i = 0; i < n; i += 1) {
    for (let j = i; j < n; j += 1) {
      let acc = 0;
      for (let k = 0; k < len; k += 1) acc += byCols ? at(k, i) * at(k, j) : at(i, k) * at(j, k);
      g[i * n + j] = acc;
      g[j * n + i] = acc;
    }
  }
  return [g, n];
}

/** Pooled, sorted eigenvalues for a 2-D or convolution weight, or null when too large to do here. */
export function eigenvalues({ shape, data }, conv) {
  if (conv && shape.length >= 3) {
    const [out, inp] = shape;
    const rf = shape.slice(2).reduce((a, b) => a * b, 1);
    if (Math.max(out, inp) * Math.min(out, inp) ** 2 * rf > MAX_WORK) return null;
    const evals = [];
    for (let k = 0; k < rf; k += 1) {
      const [g, n] = gram(out, inp, (r, c) => data[(r * inp + c) * rf + k]);
      evals.push(...symmetricEigenvalues(g, n).map((v) => v * 0.5));
    }
    return evals.sort((a, b) => a - b);
  }
  if (shape.length !== 2) return null;
  const [rows, cols] = shape;
  if (Math.max(rows, cols) * Math.min(rows, cols) ** 2 > MAX_WORK) return null;
  const [g, n] = gram(rows, cols, (r, c) => data[r * cols + c]);
  return symmetricEigenvalues(g, n).sort((a, b) => a - b);
}

export async function fetchEigenvalues(valuesPath, conv) {
  return eigenvalues(parseNpy(await getBytes(valuesPath)), conv);
}
