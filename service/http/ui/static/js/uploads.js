// Files a user gives the Try page: a V2 request body as JSON (its inputs, and a last entry named
// "targets" for /evaluate), a plain nested array for a single-input model, or a .npy file per input
// (named after the input it fills). Every tensor is checked against the model's signature before
// anything on the page changes; a file that does not fit is refused with what the model takes.
import { parseNpy } from "./npy.js";
import {
  NUMPY_NAMES, nestedShape, flatten, numel, shapeText, shapeProblem, valueProblem,
} from "./tensors.js";

export const TARGETS = "targets";

function fits(spec, tensor, file) {
  if (tensor.datatype !== spec.datatype) {
    const how = tensor.npy ? `: save it with array.astype(np.${NUMPY_NAMES[spec.datatype] || spec.datatype})` : "";
    const held = tensor.npy ? `${NUMPY_NAMES[tensor.datatype]} (${tensor.datatype})` : tensor.datatype;
    throw new Error(`${file} holds ${held}; input '${spec.name}' takes ${spec.datatype}${how}`);
  }
  const problem = shapeProblem(spec, tensor.shape)
    || (tensor.data.length !== numel(tensor.shape)
      ? `'${spec.name}' has ${tensor.data.length} values, but shape ${shapeText(tensor.shape)} needs ${numel(tensor.shape)}` : null)
    || valueProblem(spec.name, spec.datatype, tensor.data);
  if (problem) throw new Error(`${file}: ${problem}`);
  return { name: spec.name, datatype: spec.datatype, shape: tensor.shape, data: tensor.data };
}

function fromEntry(entry, file, datatype) {
  if (!entry || typeof entry !== "object" || Array.isArray(entry)) throw new Error(`${file}: each of "inputs" must be an object`);
  if (entry.parameters && entry.parameters.binary_data_size !== undefined) {
    throw new Error(`${file}: '${entry.name}' is binary data; upload a JSON body with "data", or a .npy file`);
  }
  if (entry.data === undefined) throw new Error(`${file}: '${entry.name}' has no "data"`);
  const nested = nestedShape(entry.data, `${file}: '${entry.name}' data`);
  const shape = Array.isArray(entry.shape) ? entry.shape : nested;
  return { datatype: entry.datatype || datatype, shape, data: flatten(entry.data) };
}

function plain(value, spec, file) {
  return fits(spec, { datatype: spec.datatype, shape: nestedShape(value, file), data: flatten(value) }, file);
}

async function readOne(file, specs, chosen) {
  const lower = file.name.toLowerCase();
  const byName = new Map(specs.map((s) => [s.name, s]));
  if (lower.endsWith(".npy")) {
    const array = parseNpy(await file.arrayBuffer(), file.name);
    const stem = file.name.replace(/\.npy$/i, "");
    const spec = chosen || byName.get(stem) || (specs.length === 1 ? specs[0] : null);
    if (!spec) {
      throw new Error(`${file.name}: name the file after the input it fills (${specs.map((s) => `${s.name}.npy`).join(", ")}), `
        + "or load it from that input's own file field");
    }
    return { inputs: [fits(spec, { ...array, npy: true }, file.name)], targets: null };
  }
  if (!lower.endsWith(".json")) throw new Error(`${file.name}: upload a .json request (or array) or a .npy file`);
  let doc;
  try {
    doc = JSON.parse(await file.text());
  } catch (err) {
    throw new Error(`${file.name} is not JSON: ${err.message}`);
  }
  if (Array.isArray(doc) || typeof doc === "number" || typeof doc === "boolean" || typeof doc === "string") {
    const spec = chosen || (specs.length === 1 ? specs[0] : null);
    if (!spec) {
      throw new Error(`${file.name}: a plain array fits a model with one input; this one has ${specs.map((s) => `'${s.name}'`).join(", ")}: `
        + 'upload a V2 request body ({"inputs": [...]}) or one .npy per input');
    }
    return { inputs: [plain(doc, spec, file.name)], targets: null };
  }
  return fromBody(doc, file.name, specs, chosen);
}

/** A V2 request body: inputs by name, and a last entry "targets" (for /evaluate) kept apart. */
function fromBody(doc, file, specs, chosen = null) {
  if (!doc || typeof doc !== "object" || !Array.isArray(doc.inputs)) {
    throw new Error(`${file}: expected a V2 request body ({"inputs": [{"name", "datatype", "shape", "data"}, ...]}) or a nested array`);
  }
  const byName = new Map(specs.map((s) => [s.name, s]));
  const entries = doc.inputs;
  const last = entries.at(-1);
  const targets = entries.length > 1 && last && last.name === TARGETS && !byName.has(TARGETS) ? last : null;
  const given = targets ? entries.slice(0, -1) : entries;
  const inputs = given.map((entry) => {
    const spec = chosen && given.length === 1 ? chosen : byName.get(entry && entry.name);
    if (!spec) {
      throw new Error(`${file}: the model has no input '${entry && entry.name}' (its inputs: ${specs.map((x) => `'${x.name}'`).join(", ")})`);
    }
    return fits(spec, fromEntry(entry, file, spec.datatype), file);
  });
  if (chosen && !inputs.some((t) => t.name === chosen.name)) throw new Error(`${file} holds no values for '${chosen.name}'`);
  let target = null;
  if (targets) {
    const t = fromEntry(targets, file, null);
    if (!t.datatype) throw new Error(`${file}: "targets" has no datatype`);
    if (t.data.length !== numel(t.shape)) {
      throw new Error(`${file}: "targets" has ${t.data.length} values, but shape ${shapeText(t.shape)} needs ${numel(t.shape)}`);
    }
    target = { name: TARGETS, datatype: t.datatype, shape: t.shape, data: t.data };
  }
  return { inputs: chosen ? inputs.filter((t) => t.name === chosen.name) : inputs, targets: target };
}

/**
 * Read files into checked tensors: { inputs: [tensor], targets: tensor or null, sources: Map of
 * input name -> file name }. `chosen` (a signature entry) reads every file as that input's values.
 * Throws an Error naming the file and the problem; nothing is half applied.
 */
export async function readFiles(files, specs, chosen = null) {
  const inputs = new Map();
  const sources = new Map();
  let targets = null;
  for (const file of files) {
    const read = await readOne(file, specs, chosen);
    for (const tensor of read.inputs) {
      if (inputs.has(tensor.name)) throw new Error(`'${tensor.name}' is given twice: by ${sources.get(tensor.name)} and by ${file.name}`);
      inputs.set(tensor.name, tensor);
      sources.set(tensor.name, file.name);
    }
    if (read.targets) targets = read.targets;
  }
  if (!inputs.size) throw new Error("the files hold no inputs");
  return { inputs: [...inputs.values()], targets, sources };
}

/** The tensors of an example request body (GET …/examples/{name}), checked like an upload. */
export function readExample(body, name, specs) {
  return fromBody(body, `example '${name}'`, specs);
}
