// Every output of an inference answer: name, datatype, shape, the first values with the total
// count, and a chart where the shape suggests one: one number shown large; class scores as bars
// (with the manifest's labels); a long 1-D output as a line; [1, C, H, W] / [1, H, W] as images; a
// small matrix as a colour grid.
import { h } from "./dom.js";
import { num } from "./fmt.js";
import { hbars, line } from "./charts.js";
import { imageCanvas } from "./pixels.js";
import { flatten, shapeText, kindOf } from "./tensors.js";

const PREVIEW = 12;
const BARS_MAX = 64; // a vector up to this long is drawn as bars, longer as a line
const GRID_MAX = 256;
const THUMBS = 8;
const DATASET_MAX = 100000; // values kept on the panel's data-values (what tests and scripts read)

export function softmax(xs) {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

function looksLikeProbabilities(xs) {
  const sum = xs.reduce((a, b) => a + b, 0);
  return xs.every((x) => x >= 0 && x <= 1) && Math.abs(sum - 1) < 1e-3;
}

function argmax(xs) {
  let best = 0;
  xs.forEach((x, i) => { if (x > xs[best]) best = i; });
  return best;
}

function rangeOf(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  return Number.isFinite(lo) ? [lo, hi > lo ? hi : lo + 1] : [0, 1];
}

export function preview(values, datatype) {
  const shown = values.slice(0, PREVIEW).map((v) => (kindOf(datatype) === "float" || typeof v === "number" ? num(Number(v)) : JSON.stringify(v)));
  const more = values.length > PREVIEW ? ", …" : "";
  return `[${shown.join(", ")}${more}] (${values.length.toLocaleString("en-US")} value${values.length === 1 ? "" : "s"})`;
}

/** What the page knows of the model's task from its manifest (never guessed from shapes). */
export function taskInfo(manifest) {
  const task = (manifest && manifest.task) || {};
  return {
    kind: typeof task.kind === "string" ? task.kind : null,
    labels: Array.isArray(task.labels) ? task.labels.map(String) : null,
    targets: Array.isArray(task.targets) ? task.targets.map(String) : null,
    dataRange: Number.isFinite(task.data_range) ? task.data_range : null,
  };
}

/** The layout of an output read as images, or null: [N, C, H, W] with 1 or 3 channels, or [1, H, W]. */
function outputImages(shape) {
  if (shape.length === 4 && (shape[1] === 1 || shape[1] === 3) && shape[2] >= 2 && shape[3] >= 2) {
    return { count: shape[0], channels: shape[1], height: shape[2], width: shape[3] };
  }
  if (shape.length === 3 && shape[0] === 1 && shape[1] >= 2 && shape[2] >= 2) return { count: 1, channels: 1, height: shape[1], width: shape[2] };
  return null;
}

function classifier(name, values, shape, task, first) {
  const rows = shape.length === 2 ? shape[0] : 1;
  const k = shape.at(-1);
  const label = (i) => (task.labels && task.labels[i] !== undefined ? task.labels[i] : String(i));
  if (rows > 1) {
    const picks = Array.from({ length: rows }, (_, r) => argmax(values.slice(r * k, (r + 1) * k)));
    return h("div", { class: "figure", id: first ? "predictions" : null, dataset: { predicted: JSON.stringify(picks) } },
      h("span", { class: "caption" }, `Predicted class of each of the ${rows} samples`),
      h("p", { class: "predicted-list" }, picks.slice(0, 50).map(label).join(" "), rows > 50 ? " …" : ""));
  }
  const own = looksLikeProbabilities(values);
  const probs = own ? values : softmax(values);
  const best = argmax(values);
  return h("div", { class: "row" },
    h("div", { class: "figure" }, h("span", { class: "caption" }, "Prediction"),
      h("output", { class: "prediction", id: first ? "prediction" : null, dataset: { index: best } }, label(best)),
      h("span", { class: "caption" }, `p = ${num(probs[best], 4)}`)),
    h("div", { class: "figure", id: first ? "scores" : null, dataset: { logits: JSON.stringify(values) } },
      h("span", { class: "caption" }, own ? "Class probabilities (as the model gives them)" : "Class probabilities (softmax of the logits)"),
      hbars(probs.map((p, i) => ({ label: label(i), value: p })), { label: `${name}: class probabilities`, width: 360,
        labelWidth: 60, highlight: best, valueFormat: (v) => num(v, 3) })));
}

function chart(out, values, first, task) {
  const shape = out.shape;
  const wide = shape.filter((d) => d !== 1);
  if (kindOf(out.datatype) === "bytes" || kindOf(out.datatype) === "bool" || !values.length) return null;
  if (values.length === 1) {
    const caption = first && task.targets && task.targets.length === 1 ? task.targets[0] : out.name;
    return h("div", { class: "figure" }, h("span", { class: "caption" }, caption),
      h("output", { class: "prediction", id: first ? "prediction" : null, dataset: { value: values[0] } }, num(values[0], 5)));
  }
  const k = shape.at(-1);
  const isClassifier = first && (task.kind === "classification" || (task.labels && task.labels.length === k))
    && shape.length >= 1 && shape.length <= 2 && k > 1 && k <= BARS_MAX;
  if (isClassifier) return classifier(out.name, values, shape, task, first);
  const images = outputImages(shape);
  if (images) {
    const [lo, hi] = task.dataRange ? [0, task.dataRange] : rangeOf(values);
    const plane = images.channels * images.height * images.width;
    return h("div", {},
      h("div", { class: "row" }, Array.from({ length: Math.min(images.count, THUMBS) }, (_, n) =>
        h("figure", { class: "figure" },
          imageCanvas(values.slice(n * plane, (n + 1) * plane), `output ${out.name} as an image${images.count > 1 ? ` (sample ${n})` : ""}`,
            { height: images.height, width: images.width, channels: images.channels, min: lo, max: hi,
              size: images.count > 1 ? 96 : undefined }),
          images.count > 1 ? h("figcaption", {}, `sample ${n}`) : null))),
      h("p", { class: "caption muted" }, `${images.height}×${images.width}${images.channels === 3 ? " RGB" : ""}, shown from ${num(lo)} `,
        `${images.channels === 1 ? "(white)" : ""} to ${num(hi)}${images.channels === 1 ? " (black)" : ""}`,
        task.dataRange ? " (the manifest's data range)" : " (the values' own range)",
        images.count > THUMBS ? `; the first ${THUMBS} of ${images.count}` : ""));
  }
  if (wide.length === 1) {
    const labels = first && task.labels && task.labels.length === values.length ? task.labels : null;
    if (values.length <= BARS_MAX) {
      return hbars(values.map((v, i) => ({ label: labels ? labels[i] : String(i), value: v })),
        { label: `${out.name}: values by index`, width: 420, labelWidth: 60, valueFormat: (v) => num(v, 4) });
    }
    return line(values, { label: `${out.name}: values by index`, width: 520 });
  }
  if (wide.length === 2 && wide.every((d) => d <= GRID_MAX)) {
    const [rows, cols] = wide;
    const [lo, hi] = rangeOf(values);
    return h("figure", { class: "figure" },
      imageCanvas(values, `${out.name} as a ${rows} × ${cols} grid`, { height: rows, width: cols, min: lo, max: hi,
        colormap: "viridis", size: Math.min(480, Math.max(160, cols * 12)) }),
      h("figcaption", {}, `${rows} × ${cols} grid, viridis from ${num(lo)} (purple) to ${num(hi)} (yellow)`));
  }
  return null;
}

/** One panel per output, in the order the server gave them. */
export function outputPanels(response, task) {
  const outs = Array.isArray(response && response.outputs) ? response.outputs : [];
  return outs.map((out, i) => {
    const raw = flatten(out.data === undefined ? [] : out.data);
    const values = kindOf(out.datatype) === "bytes" || kindOf(out.datatype) === "bool" ? raw : raw.map(Number);
    const shape = Array.isArray(out.shape) ? out.shape : [values.length];
    const drawn = chart({ ...out, shape }, values, i === 0, task);
    const data = { output: out.name, shape: JSON.stringify(shape), datatype: String(out.datatype) };
    if (values.length <= DATASET_MAX) data.values = JSON.stringify(values);
    return h("section", { class: "panel output", dataset: data },
    h("h3", {}, out.name, " ", h("span", { class: "muted" }, `${out.datatype} ${shapeText(shape)}`)),
    h("p", { class: "preview" }, h("code", {}, preview(values, out.datatype))),
    drawn || h("p", { class: "muted" }, "No chart for this shape."));
  });
}
