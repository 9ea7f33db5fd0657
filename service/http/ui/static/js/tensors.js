// V2 tensors in the browser: datatypes, shapes, nested and flat arrays, and the checks a tensor must
// pass against a model's signature before the page sends it (the server checks again; these say
// what is wrong before a round trip, in the words of the form).
const INT_RANGES = {
  INT8: [-128, 127], INT16: [-32768, 32767], INT32: [-2147483648, 2147483647],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  UINT8: [0, 255], UINT16: [0, 65535], UINT32: [0, 4294967295], UINT64: [0, Number.MAX_SAFE_INTEGER],
};
const FLOATS = new Set(["FP16", "FP32", "FP64", "BF16"]);

// numpy's names, for messages that say how to save a file the model takes
export const NUMPY_NAMES = {
  BOOL: "bool", UINT8: "uint8", UINT16: "uint16", UINT32: "uint32", UINT64: "uint64", INT8: "int8",
  INT16: "int16", INT32: "int32", INT64: "int64", FP16: "float16", FP32: "float32", FP64: "float64",
  BF16: "bfloat16", BYTES: "str",
};

export function kindOf(datatype) {
  if (datatype === "BOOL") return "bool";
  if (datatype === "BYTES") return "bytes";
  if (FLOATS.has(datatype)) return "float";
  if (INT_RANGES[datatype]) return "int";
  return "unknown";
}

/** Datatypes a JSON request cannot carry (the V2 JSON form has no bfloat16). */
export function jsonCarries(datatype) {
  return datatype !== "BF16" && kindOf(datatype) !== "unknown";
}

export function numel(shape) {
  return shape.reduce((a, d) => a * d, 1);
}

export function shapeText(shape) {
  return `[${shape.join(", ")}]`;
}

/** The dimensions of a nested JSON array ([[1, 2], [3, 4]] -> [2, 2]); a bare value is 0-d. */
export function nestedShape(value, where = "the array") {
  if (!Array.isArray(value)) return [];
  if (!value.length) return [0];
  const inner = value.map((v, i) => nestedShape(v, `${where}[${i}]`));
  const first = JSON.stringify(inner[0]);
  const odd = inner.findIndex((s) => JSON.stringify(s) !== first);
  if (odd >= 0) {
    throw new Error(`${where} is ragged: element 0 has shape ${shapeText(inner[0])}, element ${odd} has ${shapeText(inner[odd])}`);
  }
  return [value.length, ...inner[0]];
}

export function flatten(value) {
  return Array.isArray(value) ? value.flat(Infinity) : [value];
}

/** Flat values back into nested arrays of `shape` (a 0-d shape gives the bare value). */
export function nest(flat, shape) {
  const values = Array.from(flat);
  if (!shape.length) return values[0];
  const build = (offset, axis) => {
    if (axis === shape.length - 1) return values.slice(offset, offset + shape[axis]);
    const step = numel(shape.slice(axis + 1));
    return Array.from({ length: shape[axis] }, (_, i) => build(offset + i * step, axis + 1));
  };
  return build(0, 0);
}

/** Why `shape` does not fit the signature's (fixed dimensions must match, -1 takes any size), or null. */
export function shapeProblem(spec, shape) {
  const want = spec.shape || [];
  if (shape.length !== want.length) {
    return `input '${spec.name}' takes rank ${want.length} ${shapeText(want)}; this is rank ${shape.length} ${shapeText(shape)}`;
  }
  const bad = want.findIndex((d, i) => !Number.isInteger(shape[i]) || shape[i] < 0 || (d >= 0 && d !== shape[i]));
  if (bad >= 0) {
    return `input '${spec.name}' takes shape ${shapeText(want)}; this is ${shapeText(shape)} (dimension ${bad} is ${shape[bad]}, the model takes ${want[bad]})`;
  }
  return null;
}

export function datatypeProblem(spec, datatype, hint = "") {
  if (datatype === spec.datatype) return null;
  return `input '${spec.name}' takes ${spec.datatype}; this is ${datatype}${hint}`;
}

/**
 * Why these values cannot be `datatype` elements, or null: integers within range for the integer
 * types (JSON numbers carry integers exactly up to 2^53), true/false or 0/1 for BOOL, finite numbers
 * for floats (JSON has no NaN or infinity), strings for BYTES.
 */
export function valueProblem(name, datatype, values) {
  const kind = kindOf(datatype);
  for (let i = 0; i < values.length; i += 1) {
    const v = values[i];
    const at = `input '${name}' element ${i}`;
    if (kind === "bytes") {
      if (typeof v !== "string") return `${at} is ${JSON.stringify(v)}; BYTES elements are strings`;
    } else if (kind === "bool") {
      if (!(v === true || v === false || v === 0 || v === 1)) return `${at} is ${JSON.stringify(v)}; BOOL elements are true / false (or 0 / 1)`;
    } else if (typeof v !== "number") {
      return `${at} is ${JSON.stringify(v)}; ${datatype} elements are numbers`;
    } else if (Number.isNaN(v)) {
      return `${at} is empty or NaN (JSON carries numbers only)`;
    } else if (!Number.isFinite(v)) {
      return `${at} is infinite (JSON cannot carry infinity)`;
    } else if (kind === "int") {
      const [lo, hi] = INT_RANGES[datatype];
      if (!Number.isInteger(v)) return `${at} is ${v}; ${datatype} elements are integers`;
      if (v < lo || v > hi) return `${at} is ${v}, outside ${datatype}'s range [${lo}, ${hi}]`;
    }
  }
  return null;
}

/** A tensor for the request: BOOL as true/false, everything else as it is. */
export function requestTensor(name, datatype, shape, data) {
  const values = datatype === "BOOL" ? Array.from(data, (v) => v === true || v === 1) : Array.from(data);
  return { name, datatype, shape: Array.from(shape), data: values };
}

/** Check a whole tensor against a signature entry; returns the first problem or null. */
export function tensorProblem(spec, tensor) {
  return datatypeProblem(spec, tensor.datatype)
    || shapeProblem(spec, tensor.shape)
    || (tensor.data.length !== numel(tensor.shape)
      ? `input '${spec.name}' has ${tensor.data.length} values, but shape ${shapeText(tensor.shape)} needs ${numel(tensor.shape)}`
      : null)
    || valueProblem(spec.name, spec.datatype, tensor.data);
}

/** The default value of one element. */
export function zeroOf(datatype) {
  const kind = kindOf(datatype);
  if (kind === "bytes") return "";
  if (kind === "bool") return false;
  return 0;
}
