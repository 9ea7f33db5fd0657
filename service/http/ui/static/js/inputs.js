// One form section per model input, built from its signature alone (name, datatype, shape): the
// shape with its dynamic (-1) dimensions editable, and the values in the editor the shape suggests:
// a box per value for scalars and short vectors, the drawing pad for one 8x8 single-channel image,
// thumbnails with fills for other images, nested JSON in a textarea for everything else.
import { h, clear } from "./dom.js";
import { num } from "./fmt.js";
import { DrawingPad, imageCanvas } from "./pixels.js";
import {
  kindOf, jsonCarries, numel, shapeText, nestedShape, flatten, nest, shapeProblem, tensorProblem,
  requestTensor, zeroOf,
} from "./tensors.js";

const FIELDS_MAX = 32; // a vector up to this long gets one box per value
const TEXT_MAX = 20000; // beyond this many values the textarea is left out (files carry them)
const THUMBS = 8;

/** [lo, hi] of the model's inputs where its manifest records it (the digits: [0, 16]), else null. */
export function inputRange(manifest) {
  const range = manifest && manifest.dataset && manifest.dataset.input_range;
  return Array.isArray(range) && range.length === 2 && range.every(Number.isFinite) && range[1] > range[0] ? range : null;
}

/**
 * How a shape reads as images, or null: [N, C, H, W] with 1 or 3 channels, or [N, H, W] where the
 * signature's first dimension is a dynamic batch; height and width at least 4.
 */
export function imageLayout(signatureShape, shape) {
  if (shape.length === 4 && (shape[1] === 1 || shape[1] === 3) && shape[2] >= 4 && shape[3] >= 4) {
    return { count: shape[0], channels: shape[1], height: shape[2], width: shape[3] };
  }
  if (shape.length === 3 && signatureShape[0] < 0 && shape[1] >= 4 && shape[2] >= 4) {
    return { count: shape[0], channels: 1, height: shape[1], width: shape[2] };
  }
  return null;
}

function isPad(datatype, shape) {
  return kindOf(datatype) === "float" && shape.length === 4 && shape.every((d, i) => d === [1, 1, 8, 8][i]);
}

function rangeOf(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    const x = Number(v);
    if (Number.isFinite(x)) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
  }
  return Number.isFinite(lo) ? [lo, hi > lo ? hi : lo + 1] : [0, 1];
}

/** Nested JSON with one line per innermost row, so a [2, 1, 16] state reads as two rows of 16. */
export function formatNested(value, depth = 0) {
  if (!Array.isArray(value) || !value.some(Array.isArray)) return JSON.stringify(value);
  return `[${value.map((v) => formatNested(v, depth + 1)).join(`,\n${" ".repeat(depth + 1)}`)}]`;
}

function indexLabel(shape, flat) {
  const idx = [];
  let rest = flat;
  for (let axis = shape.length - 1; axis >= 0; axis -= 1) {
    idx.unshift(rest % shape[axis]);
    rest = Math.floor(rest / shape[axis]);
  }
  return `[${idx.join(", ")}]`;
}

export class InputEditor {
  /**
   * spec: the signature entry; index: its position (element ids); manifest: range and feature names
   * where the model has them; onLive: called when the drawing pad changes (the page runs at once).
   */
  constructor(spec, index, { manifest = {}, features = null, onLive = () => {} } = {}) {
    this.spec = { name: spec.name, datatype: spec.datatype, shape: Array.isArray(spec.shape) ? spec.shape : [] };
    this.index = index;
    this.id = `in${index}`;
    this.range = inputRange(manifest);
    this.features = features;
    this.onLive = onLive;
    this.shape = this.spec.shape.map((d) => (d < 0 ? 1 : d));
    this.data = new Array(numel(this.shape)).fill(zeroOf(this.spec.datatype));
    this.source = "defaults";
    this.textProblem = null;
    this.rendering = false;
    this.element = h("fieldset", { class: "tensor-input", id: `${this.id}-fieldset`, dataset: { input: this.spec.name } });
    this.render();
  }

  /** Values from an example, an upload or the page; the caller has checked them against the signature. */
  set(tensor, source) {
    this.shape = Array.from(tensor.shape);
    this.data = Array.from(tensor.data);
    this.source = source;
    this.textProblem = null;
    this.render();
  }

  /** The tensor to send, or an Error saying what is wrong (also shown under the input). */
  tensor() {
    const { name, datatype } = this.spec;
    let problem = this.textProblem;
    if (!problem && !jsonCarries(datatype)) {
      problem = `input '${name}' is ${datatype}, which the V2 JSON form cannot carry; send it as binary data (tritonclient does)`;
    }
    problem ||= tensorProblem(this.spec, { datatype, shape: this.shape, data: this.data });
    this.showProblem(problem);
    if (problem) throw new Error(problem);
    return requestTensor(name, datatype, this.shape, this.data);
  }

  /** The current values as images (first sample first), or null when the shape is not an image. */
  images() {
    const layout = imageLayout(this.spec.shape, this.shape);
    return layout ? { ...layout, data: this.data, range: this.range || rangeOf(this.data) } : null;
  }

  noteSource(source) {
    this.source = source;
    const note = this.element.querySelector("[data-field='source']");
    if (note) note.textContent = `from ${source}`;
  }

  showProblem(problem) {
    const box = this.element.querySelector(".input-problem");
    if (!box) return;
    box.textContent = problem || "";
    box.hidden = !problem;
    this.element.classList.toggle("invalid", Boolean(problem));
  }

  resize(axis, size) {
    const shape = this.shape.map((d, i) => (i === axis ? size : d));
    const count = numel(shape);
    const fill = zeroOf(this.spec.datatype);
    this.data = Array.from({ length: count }, (_, i) => (i < this.data.length ? this.data[i] : fill));
    this.shape = shape;
    this.textProblem = null;
    this.render();
  }

  render() {
    // Rebuilding removes the focused control, and the browser may then commit it (a change event
    // that calls back in here): let that happen first, then build once from the latest values, and
    // give focus back to the control of the same id.
    if (this.rendering) return;
    this.rendering = true;
    try {
      const active = document.activeElement;
      const focused = active && this.element.contains(active) ? active.id : null;
      if (focused) active.blur();
      this.build();
      const again = focused ? document.getElementById(focused) : null;
      if (again) again.focus({ preventScroll: true });
    } finally {
      this.rendering = false;
    }
  }

  build() {
    const { name, datatype } = this.spec;
    clear(this.element);
    this.element.append(
      h("legend", {}, h("strong", {}, name), " ", h("span", { class: "muted" }, `${datatype} ${shapeText(this.spec.shape)}`)),
      this.shapeRow(),
      this.editor(),
      h("div", { class: "controls" },
        h("label", { for: `${this.id}-file` }, "Load from a file (.npy, or a JSON array)"),
        h("input", { type: "file", id: `${this.id}-file`, accept: ".npy,.json,application/json", dataset: { input: name } })),
      h("p", { class: "input-problem error", role: "alert", id: `${this.id}-problem`, hidden: true }));
  }

  shapeRow() {
    const dims = this.spec.shape.map((d, i) => {
      if (d >= 0) return h("span", { class: "dim" }, String(d));
      const box = h("input", { type: "number", min: 0, step: 1, value: this.shape[i], id: `${this.id}-dim${i}`, class: "dim",
        "aria-label": `${this.spec.name} dimension ${i} (dynamic)` });
      box.addEventListener("change", () => {
        const size = Number(box.value);
        if (Number.isInteger(size) && size >= 0) this.resize(i, size);
        else this.showProblem(`dimension ${i} of '${this.spec.name}' must be a whole number, 0 or more`);
      });
      return box;
    });
    const parts = [];
    dims.forEach((d, i) => parts.push(i ? ", " : "", d));
    return h("div", { class: "controls shape-row" }, h("span", { class: "muted" }, "shape"),
      h("span", { class: "dims" }, "[", parts, "]"),
      h("span", { class: "muted", dataset: { field: "count" } },
        this.shape.length ? `${numel(this.shape).toLocaleString("en-US")} values` : "a scalar (0-d)"),
      h("span", { class: "muted", dataset: { field: "source" } }, `from ${this.source}`));
  }

  editor() {
    const { datatype } = this.spec;
    if (!jsonCarries(datatype)) {
      return h("p", { class: "muted" }, `${datatype} values cannot be sent from this page (the V2 JSON form has no ${datatype}).`);
    }
    if (isPad(datatype, this.shape)) return this.padEditor();
    const wide = this.shape.filter((d) => d > 1).length;
    if (numel(this.shape) <= FIELDS_MAX && wide <= 1) return this.fieldsEditor();
    const layout = imageLayout(this.spec.shape, this.shape);
    if (layout && kindOf(datatype) !== "bool" && kindOf(datatype) !== "bytes") return this.imageEditor(layout);
    return this.textEditor();
  }

  padEditor() {
    const [min, max] = this.range || [0, 16];
    const first = this.index === 0;
    const pad = new DrawingPad({ id: first ? "pad" : `${this.id}-pad`, min, max, label: `${this.spec.name}: `,
      onChange: (pixels) => {
        this.data = pixels;
        this.noteSource("the drawing pad");
        this.onLive();
      } });
    pad.set(this.data, { quiet: true });
    const clearButton = h("button", { type: "button", id: first ? "clear" : `${this.id}-clear` }, "Clear");
    clearButton.addEventListener("click", () => pad.clear());
    return h("div", { class: "figure" },
      h("p", { class: "muted" }, "Draw with the mouse (or focus the pad: arrow keys move, Space paints, Shift+arrow draws, ",
        `Delete erases). Ink is ${num(max)}, paper ${num(min)}; the model runs after each stroke.`),
      pad.canvas, h("div", { class: "controls" }, clearButton));
  }

  fieldsEditor() {
    const { name, datatype } = this.spec;
    const kind = kindOf(datatype);
    const count = numel(this.shape);
    const named = this.features && this.features.length === count;
    const boxes = Array.from({ length: count }, (_, i) => {
      const label = !this.shape.length ? name : named ? this.features[i] : `${name}${indexLabel(this.shape, i)}`;
      const attrs = { id: `${this.id}-v${i}`, name: `${name}-${i}`, dataset: { index: i } };
      let box;
      if (kind === "bool") box = h("input", { ...attrs, type: "checkbox", checked: this.data[i] === true || this.data[i] === 1 });
      else if (kind === "bytes") box = h("input", { ...attrs, type: "text", value: this.data[i] });
      else box = h("input", { ...attrs, type: "number", step: kind === "int" ? 1 : "any", value: this.data[i], required: true });
      box.addEventListener(kind === "bool" ? "change" : "input", () => {
        if (kind === "bool") this.data[i] = box.checked;
        else if (kind === "bytes") this.data[i] = box.value;
        else this.data[i] = box.value.trim() === "" ? NaN : Number(box.value);
        this.noteSource("the form");
        this.showProblem(null);
      });
      return h("label", {}, label, box);
    });
    return h("div", { class: "form-grid" }, boxes);
  }

  imageEditor(layout) {
    const [lo, hi] = this.range || rangeOf(this.data);
    const plane = layout.channels * layout.height * layout.width;
    const thumbs = Array.from({ length: Math.min(layout.count, THUMBS) }, (_, k) =>
      h("figure", { class: "figure" },
        imageCanvas(this.data.slice(k * plane, (k + 1) * plane), `${this.spec.name} sample ${k}`,
          { height: layout.height, width: layout.width, channels: layout.channels, min: lo, max: hi, size: 96,
            colormap: layout.channels === 1 ? "gray_r" : undefined }),
        h("figcaption", {}, `sample ${k}`)));
    const fill = (how) => {
      const [a, b] = this.range || [0, 1];
      this.data = this.data.map(() => (how === "zeros" ? a : a + Math.random() * (b - a)));
      if (kindOf(this.spec.datatype) === "int") this.data = this.data.map(Math.round);
      this.source = how === "zeros" ? "a blank fill" : "a random fill";
      this.textProblem = null;
      this.render();
    };
    const blank = h("button", { type: "button" }, "Blank");
    blank.addEventListener("click", () => fill("zeros"));
    const noise = h("button", { type: "button" }, "Random");
    noise.addEventListener("click", () => fill("noise"));
    const picture = h("input", { type: "file", accept: "image/*", id: `${this.id}-picture` });
    picture.addEventListener("change", () => this.loadPicture(picture.files[0], layout));
    return h("div", {},
      h("div", { class: "row thumbs" }, thumbs,
        layout.count > THUMBS ? h("p", { class: "muted" }, `and ${layout.count - THUMBS} more`) : null),
      h("p", { class: "muted" }, `${layout.count} × ${layout.channels === 3 ? "RGB" : "single-channel"} ${layout.height}×${layout.width}`,
        `, shown from ${num(lo)} (${layout.channels === 1 ? "white" : "dark"}) to ${num(hi)}`,
        this.range ? " (the manifest's input range)" : " (the values' own range)"),
      h("div", { class: "controls" }, "Fill:", blank, noise,
        h("label", { for: `${this.id}-picture` }, "or a picture (resized to fit; sample 0)"), picture),
      this.textEditor({ collapsed: true }));
  }

  async loadPicture(file, layout) {
    if (!file) return;
    try {
      const bitmap = await createImageBitmap(file);
      const canvas = document.createElement("canvas");
      canvas.width = layout.width;
      canvas.height = layout.height;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(bitmap, 0, 0, layout.width, layout.height);
      const rgba = ctx.getImageData(0, 0, layout.width, layout.height).data;
      const [lo, hi] = this.range || [0, 1];
      const plane = layout.width * layout.height;
      const int = kindOf(this.spec.datatype) === "int";
      for (let p = 0; p < plane; p += 1) {
        const [r, g, b] = [rgba[p * 4], rgba[p * 4 + 1], rgba[p * 4 + 2]];
        const levels = layout.channels === 3 ? [r, g, b] : [1 - (0.299 * r + 0.587 * g + 0.114 * b) / 255];
        levels.forEach((level, c) => {
          const t = layout.channels === 3 ? level / 255 : level; // one channel: dark ink is high, as the pad draws
          const v = lo + t * (hi - lo);
          this.data[c * plane + p] = int ? Math.round(v) : v;
        });
      }
      this.source = `the picture ${file.name}`;
      this.textProblem = null;
      this.render();
    } catch (err) {
      this.showProblem(`${file.name}: not a picture this browser can read (${err.message || err})`);
    }
  }

  textEditor({ collapsed = false } = {}) {
    const count = numel(this.shape);
    if (count > TEXT_MAX) {
      return h("p", { class: "muted" }, `${count.toLocaleString("en-US")} values: too many to edit here; load a file to change them.`);
    }
    const text = formatNested(nest(this.data, this.shape));
    const area = h("textarea", { id: `${this.id}-values`, rows: Math.min(12, Math.max(3, text.split("\n").length + 1)),
      spellcheck: "false", "aria-label": `values of ${this.spec.name} as JSON (flat or nested)` });
    area.value = text;
    area.addEventListener("change", () => this.fromText(area.value));
    const body = [h("p", { class: "muted" }, "Values as JSON, flat or nested; a nested array may change the dynamic dimensions."), area];
    if (!collapsed) return h("div", { class: "values" }, body);
    return h("details", { class: "values" }, h("summary", {}, "Values as JSON"), body);
  }

  fromText(text) {
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      this.textProblem = `values of '${this.spec.name}' are not JSON: ${err.message}`;
      this.showProblem(this.textProblem);
      return;
    }
    try {
      const nested = nestedShape(value, `the values of '${this.spec.name}'`);
      const flat = flatten(value);
      let shape = this.shape;
      if (nested.length === this.spec.shape.length && !shapeProblem(this.spec, nested)) shape = nested;
      else if (!(nested.length <= 1 && flat.length === numel(this.shape))) {
        throw new Error(`${shapeProblem(this.spec, nested) || "the values do not fit"}; `
          + `give ${numel(this.shape)} values flat, or a nested array of shape ${shapeText(this.spec.shape)}`);
      }
      this.textProblem = null;
      this.set({ shape, data: flat }, "the form");
    } catch (err) {
      this.textProblem = err.message;
      this.showProblem(this.textProblem);
    }
  }
}
