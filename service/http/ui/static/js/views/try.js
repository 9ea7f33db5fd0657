// Try any model in the browser. The form comes from the model's signature (every input with its
// datatype and shape, dynamic dimensions editable), prefilled from the example requests the model
// ships with, or from uploaded files (a V2 request body, a nested array, a .npy per input), checked
// before anything is sent. Every output comes back with its first values and a chart where its
// shape suggests one; image classifiers also get a heat map (/explain, the server picks the
// method), and examples with targets are scored by /evaluate.
import { getJSON, postJSON, modelPath, enc } from "../api.js";
import { h, clear, errorBox } from "../dom.js";
import { text } from "../fmt.js";
import { InputEditor, imageLayout } from "../inputs.js";
import { readFiles, readExample } from "../uploads.js";
import { outputPanels, taskInfo } from "../outputs.js";
import { metricsPanel } from "../evaluation.js";
import { heatmapPanel } from "../heatmap.js";
import { imageCanvas } from "../pixels.js";
import { shapeText } from "../tensors.js";

const REQUEST_DATASET_MAX = 1 << 20; // the last request is kept on #result while it is this small

function signatureTable(meta) {
  const rows = [
    ...(meta.inputs || []).map((t) => ["input", t]),
    ...(meta.outputs || []).map((t) => ["output", t]),
  ];
  return h("table", { id: "signature", class: "signature" },
    h("caption", {}, "Signature (from the model's metadata; -1 is a dynamic dimension)"),
    h("thead", {}, h("tr", {}, ["", "Name", "Datatype", "Shape"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map(([role, t]) => h("tr", { dataset: { role, name: t.name } },
      h("td", {}, role), h("th", { scope: "row" }, text(t.name)), h("td", {}, text(t.datatype)),
      h("td", {}, Array.isArray(t.shape) ? shapeText(t.shape) : "—")))));
}

/** A heat map needs an image input ([N, C, H, W]) and class scores per sample ([N, K]) as the first output. */
function explainable(meta) {
  const scores = meta.outputs && meta.outputs[0] && Array.isArray(meta.outputs[0].shape) && meta.outputs[0].shape.length === 2;
  return Boolean(scores) && meta.inputs.some((t) => Array.isArray(t.shape) && t.shape.length === 4);
}

/** For an image-to-image model scored against image targets: the first sample's input, target and output. */
function sampleFigures(images, targets, inferred, task) {
  const out = inferred && Array.isArray(inferred.outputs) ? inferred.outputs[0] : null;
  if (!images || !targets || !out || JSON.stringify(out.shape) !== JSON.stringify(targets.shape)) return [];
  const layout = imageLayout([-1], targets.shape);
  if (!layout || layout.height !== images.height || layout.width !== images.width) return [];
  const plane = layout.channels * layout.height * layout.width;
  const [min, max] = task.dataRange ? [0, task.dataRange] : images.range;
  return [["input", images.data], ["target", targets.data], ["output", out.data.flat(Infinity)]].map(([label, values]) =>
    h("figure", { class: "figure" },
      imageCanvas(values.slice(0, plane).map(Number), `${label} image, sample 0`,
        { height: layout.height, width: layout.width, channels: layout.channels, min, max }),
      h("figcaption", {}, `${label} (sample 0)`)));
}

export async function renderTry(view, ctx, { model }, query) {
  const version = query.get("version") || null;
  const path = modelPath(model, version);
  ctx.crumbs([["Models", "#/"], [`${model}: try it`, `#/models/${enc(model)}/try`]]);
  const [meta, manifest, index, listing] = await Promise.all([
    getJSON(path),
    getJSON(`/ui/manifest/${enc(model)}/${enc(version || "default")}`).catch(() => ({})),
    postJSON("/v2/repository/index", { ready: true }).catch(() => []),
    getJSON(`/v2/models/${enc(model)}/examples`).catch((err) => ({ examples: [], error: err })),
  ]);
  const models = [...new Set((Array.isArray(index) ? index : []).map((e) => e.name))];
  const picker = h("select", { id: "try-model", "aria-label": "model to try" },
    models.map((m) => h("option", { value: m, selected: m === model }, m)));
  picker.addEventListener("change", () => { location.hash = `#/models/${enc(picker.value)}/try`; });
  const task = taskInfo(manifest);
  view.append(h("h1", {}, `Try ${model}`, version ? ` · version ${version}` : ""),
    h("div", { class: "controls" }, h("label", { for: "try-model" }, "Model"), picker,
      task.kind ? h("span", { class: "muted", id: "task" }, `task: ${task.kind} (from the manifest)`) : null),
    signatureTable(meta));
  if (!Array.isArray(meta.inputs) || !meta.inputs.length) {
    view.append(errorBox("The model's metadata lists no inputs."));
    return;
  }

  const specs = meta.inputs;
  const result = h("section", { class: "result", id: "result", "aria-live": "polite" },
    h("p", { class: "muted" }, "Pick an example, fill in the inputs or upload a file, then Run."));
  let targets = null;
  let seq = 0;
  const features = Array.isArray(manifest.dataset && manifest.dataset.features) && specs.length === 1
    ? manifest.dataset.features.map(String) : null;
  const editors = specs.map((spec, i) => new InputEditor(spec, i, { manifest, features, onLive: () => run() }));
  const heatBox = explainable(meta) ? h("input", { type: "checkbox", id: "want-heatmap", checked: true }) : null;
  const runButton = h("button", { type: "submit", class: "primary", id: "run" }, "Run");
  const targetsNote = h("div", { class: "controls", id: "targets", hidden: true });
  const uploadStatus = h("p", { id: "upload-status", class: "muted", role: "status" });

  function setTargets(tensor, source) {
    targets = tensor;
    clear(targetsNote);
    targetsNote.hidden = !tensor;
    runButton.textContent = tensor ? "Run and evaluate" : "Run";
    if (!tensor) return;
    const drop = h("button", { type: "button", id: "drop-targets" }, "Drop targets");
    drop.addEventListener("click", () => setTargets(null));
    targetsNote.append(h("span", {}, `targets ${tensor.datatype} ${shapeText(tensor.shape)} from ${source}: `,
      "Run also scores the outputs against them (/evaluate)."), drop);
  }

  function apply(read, sourceOf) {
    for (const tensor of read.inputs) editors.find((e) => e.spec.name === tensor.name).set(tensor, sourceOf(tensor.name));
    setTargets(read.targets, sourceOf("targets"));
  }

  async function run() {
    const mine = ++seq;
    result.dataset.state = "running";
    result.setAttribute("aria-busy", "true");
    const done = (state, ...parts) => {
      if (mine !== seq) return;
      clear(result).append(...parts);
      const json = body ? JSON.stringify(body) : "";
      if (json && json.length <= REQUEST_DATASET_MAX) result.dataset.request = json;
      else delete result.dataset.request;
      result.dataset.state = state;
      result.dataset.run = String(mine);
      result.setAttribute("aria-busy", "false");
    };
    let inputs;
    let body = null;
    try {
      inputs = editors.map((e) => e.tensor());
    } catch (err) {
      done("invalid", errorBox(`Not sent: ${err.message}`));
      return;
    }
    body = { inputs };
    const images = editors.map((e) => e.images()).find((im) => im && im.count >= 1) || null;
    const wantHeat = heatBox && heatBox.checked && images && images.count === 1;
    const scored = targets;
    try {
      const [inferred, explained, evaluated] = await Promise.all([
        postJSON(`${path}/infer`, body),
        wantHeat ? postJSON(`${path}/explain`, body).catch((err) => ({ error: err })) : null,
        scored ? postJSON(`${path}/evaluate`, { inputs: [...inputs, scored] }).catch((err) => ({ error: err })) : null,
      ]);
      const parts = [];
      if (evaluated) {
        parts.push(evaluated.error
          ? h("section", { class: "panel", id: "metrics" }, h("h3", {}, "Evaluation (/evaluate)"), errorBox(evaluated.error))
          : metricsPanel(evaluated, sampleFigures(images, scored, inferred, task)));
      }
      parts.push(h("div", { class: "outputs", id: "outputs" }, outputPanels(inferred, task)));
      if (explained) {
        parts.push(explained.error
          ? h("section", { class: "panel", id: "heatmap" }, h("h3", {}, "Heat map (/explain)"), errorBox(explained.error))
          : heatmapPanel(explained, images, task.labels));
      }
      done("done", ...parts);
    } catch (err) {
      done("error", errorBox(err));
    }
  }

  async function loadExample(name, button) {
    try {
      const body = await getJSON(`/v2/models/${enc(model)}/examples/${enc(name)}`);
      apply(readExample(body, name, specs), () => `example ${name}`);
    } catch (err) {
      clear(result).append(errorBox(err));
      result.dataset.state = "error";
      return;
    }
    for (const b of exampleBox.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
    exampleText.textContent = text(button.title);
    await run();
  }

  const examples = Array.isArray(listing.examples) ? listing.examples : [];
  const exampleText = h("p", { class: "muted", id: "example-description" });
  const exampleBox = h("div", { class: "controls", id: "examples", role: "group", "aria-label": "example requests" },
    h("span", {}, "Examples:"),
    examples.map((e) => {
      const b = h("button", { type: "button", dataset: { example: e.name, kind: text(e.kind) }, "aria-pressed": "false",
        title: e.error ? `not a usable request: ${e.error}` : e.description || e.name, disabled: Boolean(e.error) },
      e.name, e.kind === "evaluate" ? " (evaluate)" : "");
      b.addEventListener("click", () => loadExample(e.name, b));
      return b;
    }),
    examples.length ? null : h("span", { class: "muted" }, listing.error
      ? `none available (${listing.error.message || listing.error})`
      : "this model ships no example requests (models/<name>/examples/*.json); fill in the form or upload a file"));

  const upload = h("input", { type: "file", id: "upload", multiple: true, accept: ".json,.npy,application/json" });
  upload.addEventListener("change", async () => {
    const files = [...upload.files];
    upload.value = ""; // the same file may be chosen again after a fix
    if (!files.length) return;
    try {
      const read = await readFiles(files, specs);
      apply(read, (name) => read.sources.get(name) || files.map((f) => f.name).join(", "));
      uploadStatus.className = "muted";
      uploadStatus.setAttribute("role", "status");
      uploadStatus.textContent = `Loaded ${read.inputs.map((t) => `'${t.name}' ${t.datatype} ${shapeText(t.shape)} from ${read.sources.get(t.name)}`).join("; ")}`
        + `${read.targets ? "; targets for /evaluate" : ""}. Press Run.`;
    } catch (err) {
      uploadStatus.className = "error";
      uploadStatus.setAttribute("role", "alert");
      uploadStatus.textContent = `Not loaded: ${err.message}`;
    }
  });

  const form = h("form", { id: "try-form", novalidate: true },
    editors.map((e) => e.element),
    targetsNote,
    h("div", { class: "controls upload" },
      h("label", { for: "upload" }, "Upload a request: a V2 body (.json; a last \"targets\" entry adds /evaluate), ",
        "a nested array (.json, one-input models) or a .npy per input, named after it"),
      upload),
    uploadStatus,
    h("div", { class: "controls" }, runButton,
      heatBox ? h("label", { for: "want-heatmap" }, heatBox, " heat map (/explain; the server picks the method)") : null));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); run(); });
  // each input's own file field: its values from a .npy, a nested array or a request body
  form.addEventListener("change", async (ev) => {
    const field = ev.target;
    if (!(field instanceof HTMLInputElement) || field.type !== "file" || !field.dataset.input) return;
    const editor = editors.find((e) => e.spec.name === field.dataset.input);
    const file = field.files[0];
    if (!editor || !file) return;
    try {
      const read = await readFiles([file], specs, editor.spec);
      editor.set(read.inputs[0], file.name);
    } catch (err) {
      editor.showProblem(`Not loaded: ${err.message}`);
    }
  });
  view.append(exampleBox, exampleText, h("div", { class: "try-layout" }, form, result));

  const first = examples.find((e) => e.kind === "infer") || examples.find((e) => e.kind === "evaluate");
  if (first) {
    await loadExample(first.name, exampleBox.querySelector(`button[data-example="${CSS.escape(first.name)}"]`));
  }
}
