// .npy files read in the browser (format versions 1.0, 2.0 and 3.0): little-endian, C order, the
// numeric dtypes the V2 protocol carries. Anything else is refused with what the file holds and
// what to do, never guessed at.
const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

// dtype code (without its byte-order mark) -> V2 datatype and bytes per element
const DTYPES = {
  b1: ["BOOL", 1], u1: ["UINT8", 1], u2: ["UINT16", 2], u4: ["UINT32", 4], u8: ["UINT64", 8],
  i1: ["INT8", 1], i2: ["INT16", 2], i4: ["INT32", 4], i8: ["INT64", 8],
  f2: ["FP16", 2], f4: ["FP32", 4], f8: ["FP64", 8],
};
const KINDS = { c: "complex numbers", U: "unicode strings", S: "byte strings", O: "Python objects",
  M: "datetimes", m: "timedeltas", V: "raw or structured records" };
const SUPPORTED = "bool, int8-64, uint8-64, float16, float32 or float64";

export class NpyError extends Error {}

function fp16(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function header(bytes, name) {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new NpyError(`${name} is not a .npy file (it does not start with \\x93NUMPY)`);
  }
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let length;
  let start;
  if (major === 1) { length = view.getUint16(8, true); start = 10; }
  else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new NpyError(`${name} ends inside its header`);
    length = view.getUint32(8, true);
    start = 12;
  } else throw new NpyError(`${name} is .npy format version ${major}.${bytes[7]}; this page reads versions 1 to 3`);
  if (start + length > bytes.length) throw new NpyError(`${name} ends inside its header`);
  const text = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(start, start + length));
  return { text, dataStart: start + length };
}

function field(text, key, pattern, name) {
  const match = new RegExp(`['"]${key}['"]\\s*:\\s*${pattern}`).exec(text);
  if (!match) throw new NpyError(`${name}: the header has no readable '${key}' (${text.trim()})`);
  return match[1];
}

/** The dtype of a header's descr, as [V2 datatype, item size], or a clear refusal. */
function dtypeOf(descr, name) {
  const order = descr[0];
  const code = "<>|=".includes(order) ? descr.slice(1) : descr;
  const known = DTYPES[code];
  if (!known) {
    const what = KINDS[code[0]] || `dtype '${descr}'`;
    throw new NpyError(`${name} holds ${what} ('${descr}'); the page reads numeric .npy files: ${SUPPORTED}`);
  }
  if (order === ">" && known[1] > 1) {
    throw new NpyError(`${name} is big-endian ('${descr}'); save it little-endian: array.astype(array.dtype.newbyteorder('<'))`);
  }
  return known;
}

/**
 * Parse a .npy file: { shape, datatype, data } with data a plain array (numbers; booleans for
 * BOOL). 64-bit integers beyond 2^53 are refused, since JSON numbers cannot carry them exactly.
 */
export function parseNpy(buffer, name = "the file") {
  const bytes = new Uint8Array(buffer);
  const { text, dataStart } = header(bytes, name);
  if (/['"]descr['"]\s*:\s*\[/.test(text)) {
    throw new NpyError(`${name} holds structured records; the page reads plain numeric arrays: ${SUPPORTED}`);
  }
  const descr = field(text, "descr", "['\"]([^'\"]+)['\"]", name);
  const [datatype, size] = dtypeOf(descr, name);
  if (field(text, "fortran_order", "(True|False)", name) === "True") {
    throw new NpyError(`${name} is in Fortran order; save it in C order: np.save(path, np.ascontiguousarray(array))`);
  }
  const dims = field(text, "shape", "\\(([^)]*)\\)", name).split(",").map((d) => d.trim()).filter((d) => d !== "");
  if (dims.some((d) => !/^\d+$/.test(d.replace(/L$/, "")))) throw new NpyError(`${name}: unreadable shape (${dims.join(", ")})`);
  const shape = dims.map((d) => Number(d.replace(/L$/, "")));
  const count = shape.reduce((a, d) => a * d, 1);
  const need = count * size;
  if (bytes.length - dataStart < need) {
    throw new NpyError(`${name} is truncated: shape [${shape.join(", ")}] needs ${need} bytes of data, the file has ${bytes.length - dataStart}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + dataStart, need);
  const data = new Array(count);
  const read = {
    BOOL: (o) => view.getUint8(o), UINT8: (o) => view.getUint8(o), INT8: (o) => view.getInt8(o),
    UINT16: (o) => view.getUint16(o, true), INT16: (o) => view.getInt16(o, true),
    UINT32: (o) => view.getUint32(o, true), INT32: (o) => view.getInt32(o, true),
    UINT64: (o) => view.getBigUint64(o, true), INT64: (o) => view.getBigInt64(o, true),
    FP16: (o) => fp16(view.getUint16(o, true)), FP32: (o) => view.getFloat32(o, true), FP64: (o) => view.getFloat64(o, true),
  }[datatype];
  for (let i = 0; i < count; i += 1) {
    let v = read(i * size);
    if (typeof v === "bigint") {
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new NpyError(`${name}: element ${i} (${v}) is beyond 2^53, which JSON numbers cannot carry exactly`);
      }
      v = Number(v);
    } else if (datatype === "BOOL") {
      if (v > 1) throw new NpyError(`${name}: element ${i} of a bool array is ${v}, not 0 or 1`);
      v = v === 1;
    }
    data[i] = v;
  }
  return { shape, datatype, data };
}
