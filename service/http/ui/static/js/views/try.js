// Try a model in the browser: draw a digit for the classifier (prediction, class scores, CAM heat
// map), denoise a noisy digit with the autoencoder (PSNR, SSIM), or fill in features for the regressor.
import { getJSON, postJSON, modelPath, enc } from "../api.js";
import { h, kv, clear, errorBox } from "../dom.js";
import { get, num, text, isNum, DASH } from "../fmt.js";
import { hbars } from "../charts.js";
import { DrawingPad, imageCanvas } from "../pixels.js";
import { DIGITS, DIABETES } from "../samples.js";

function tensorInput(spec, rows, data) {
  const dims = (spec.shape || []).map((d, i) => (d < 0 ? (i === 0 ? rows : 1) : d));
  return { name: spec.name, datatype: spec.datatype || "FP32", shape: dims, data: Array.from(data) };
}

function outputData(response, name) {
  const outs = get(response, "outputs") || [];
  const out = outs.find((o) => o.name === name) || outs[0];
  return out && Array.isArray(out.data) ? out.data.map(Number) : [];
}

function softmax(xs) {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

function taskOf(manifest, meta) {
  const kind = get(manifest, "task.kind");
  if (kind) return kind;
  const inShape = get(meta, "inputs.0.shape") || [];
  const outShape = get(meta, "outputs.0.shape") || [];
  if (inShape.length === 4 && outShape.length === 4) return "image_to_image";
  if (inShape.length === 4) return "classification";
  return "regression";
}

// seeded Gaussian noise so the same seed shows the same noisy digit
function gaussian(seed) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

function sampleButtons(onPick) {
  return h("div", { class: "controls", role: "group", "aria-label": "sample digits" }, "Samples:",
    DIGITS.map((d, i) => {
      const b = h("button", { type: "button", "aria-label": `sample digit ${i}` }, String(i));
      b.addEventListener("click", () => onPick(d));
      return b;
    }));
}

async function classifier(view, { model, version, meta, manifest }) {
  const spec = meta.inputs[0];
  const outName = get(meta, "outputs.0.name");
  const labels = get(manifest, "task.labels") || null;
  const result = h("section", { class: "panel", id: "result", "aria-live": "polite" }, h("p", { class: "muted" }, "Draw a digit."));
  let seq = 0;
  const predict = async (pixels) => {
    const mine = ++seq;
    if (!pixels.some((v) => v > 0)) {
      clear(result).append(h("p", { class: "muted" }, "Draw a digit."));
      return;
    }
    const body = { inputs: [tensorInput(spec, 1, pixels)] };
    try {
      const [inferred, explained] = await Promise.all([
        postJSON(`${modelPath(model, version)}/infer`, body),
        postJSON(`${modelPath(model, version)}/explain`, { ...body, parameters: { method: "cam" } })
          .catch((err) => ({ error: err })),
      ]);
      if (mine !== seq) return;
      const logits = outputData(inferred, outName);
      const probs = softmax(logits);
      const best = logits.indexOf(Math.max(...logits));
      const label = (i) => (labels && labels[i] !== undefined ? String(labels[i]) : String(i));
      const heat = explained.error ? null : (get(explained, "heatmaps.0") || []).flat();
      clear(result).append(
        h("div", { class: "row" },
          h("div", { class: "figure" }, h("span", { class: "caption" }, "Prediction"),
            h("output", { class: "prediction", id: "prediction", dataset: { index: best } }, label(best)),
            h("span", { class: "caption" }, `p = ${num(probs[best], 4)}`)),
          h("figure", { class: "figure" },
            heat && heat.length === pixels.length
              ? imageCanvas(pixels, `CAM heat map for class ${label(best)}`, { heat, size: 176, heatAlpha: 0.8 })
              : h("p", { class: "muted" }, explained.error ? explained.error.message : "no heat map"),
            h("figcaption", {}, `CAM heat map for class ${label(best)} (viridis: yellow = most evidence)`)),
          h("div", { class: "figure", id: "scores", dataset: { logits: JSON.stringify(logits), pixels: JSON.stringify(pixels) } },
            h("span", { class: "caption" }, "Class probabilities (softmax of the logits)"),
            hbars(probs.map((p, i) => ({ label: label(i), value: p })), { label: "class probabilities", width: 360,
              labelWidth: 40, highlight: best, valueFormat: (v) => num(v, 3) }))));
    } catch (err) {
      if (mine === seq) clear(result).append(errorBox(err));
    }
  };
  const pad = new DrawingPad({ onChange: predict });
  const clearButton = h("button", { type: "button", id: "clear" }, "Clear");
  clearButton.addEventListener("click", () => pad.clear());
  view.append(
    h("p", {}, "Draw a digit with the mouse (or focus the pad: arrow keys move, Space paints, Shift+arrow draws, Delete erases). ",
      "Pixel values are 0–16 like scikit-learn's digits; the prediction updates after each stroke."),
    h("div", { class: "row" },
      h("div", { class: "figure" }, pad.canvas, h("div", { class: "controls" }, clearButton)),
      result),
    sampleButtons((d) => pad.set(d)));
}

async function denoiser(view, { model, version, meta, manifest }) {
  const spec = meta.inputs[0];
  const outName = get(meta, "outputs.0.name");
  const range = get(manifest, "task.data_range");
  const max = isNum(range) ? range : 16;
  const std = get(manifest, "dataset.noise.std");
  const noiseStd = isNum(std) ? std : 4;
  let clean = DIGITS[3];
  let seed = 1;
  const result = h("section", { class: "panel", id: "result", "aria-live": "polite" });
  const run = async () => {
    const rnd = gaussian(seed);
    const noisy = clean.map((v) => Math.min(Math.max(v + rnd() * noiseStd, 0), max));
    try {
      const [inferred, evaluated] = await Promise.all([
        postJSON(`${modelPath(model, version)}/infer`, { inputs: [tensorInput(spec, 1, noisy)] }),
        postJSON(`${modelPath(model, version)}/evaluate`, { inputs: [tensorInput(spec, 1, noisy),
          { name: "targets", datatype: "FP32", shape: [1, 1, 8, 8], data: clean }] }).catch((err) => ({ error: err })),
      ]);
      const recon = outputData(inferred, outName);
      clear(result).append(
        h("div", { class: "row" },
          h("figure", { class: "figure" }, imageCanvas(clean, "clean digit", { max }), h("figcaption", {}, "clean")),
          h("figure", { class: "figure" }, imageCanvas(noisy, "noisy digit", { max }), h("figcaption", {}, `noisy (σ = ${num(noiseStd, 3)}, seed ${seed})`)),
          h("figure", { class: "figure" }, imageCanvas(recon, "reconstruction", { max }), h("figcaption", {}, "reconstruction"))),
        evaluated.error ? errorBox(evaluated.error) : h("div", { id: "image-metrics" }, kv([
          ["PSNR (reconstruction vs clean)", isNum(evaluated.psnr) ? `${num(evaluated.psnr, 4)} dB` : DASH],
          ["SSIM", num(evaluated.ssim, 4)], ["MAE", num(evaluated.mae, 4)],
          ["SSIM window", text(evaluated.ssim_window)]])));
      result.dataset.psnr = String(evaluated.psnr);
      result.dataset.ssim = String(evaluated.ssim);
      result.dataset.noisy = JSON.stringify(noisy);
      result.dataset.clean = JSON.stringify(clean);
    } catch (err) {
      clear(result).append(errorBox(err));
    }
  };
  const again = h("button", { type: "button", id: "new-noise" }, "New noise");
  again.addEventListener("click", () => { seed += 1; run(); });
  view.append(h("p", {}, "A digit with Gaussian noise added, beside the model's reconstruction; the metrics come from the evaluate endpoint."),
    h("div", { class: "controls" }, again), sampleButtons((d) => { clean = d; run(); }), result);
  await run();
}

async function regressor(view, { model, version, meta, manifest }) {
  const spec = meta.inputs[0];
  const outName = get(meta, "outputs.0.name");
  const width = Math.max(1, Number((spec.shape || []).at(-1)) || 1);
  const names = get(manifest, "dataset.features");
  const featureNames = Array.isArray(names) && names.length === width ? names.map(String) : Array.from({ length: width }, (_, i) => `feature ${i}`);
  const target = get(manifest, "task.targets.0") || outName || "prediction";
  const inputs = featureNames.map((n, i) => {
    const known = DIABETES[n];
    return h("label", {}, n + (known ? ` (${known.min}–${known.max})` : ""),
      h("input", { type: "number", step: "any", name: `f${i}`, id: `feature-${i}`, value: known ? known.mean : 0, required: true }));
  });
  const result = h("section", { class: "panel", id: "result", "aria-live": "polite" });
  const form = h("form", { id: "feature-form" }, h("div", { class: "form-grid" }, inputs),
    h("div", { class: "controls" }, h("button", { type: "submit", class: "primary" }, "Predict")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const values = inputs.map((l) => Number(l.querySelector("input").value));
    if (values.some((v) => !Number.isFinite(v))) {
      clear(result).append(errorBox("Every feature needs a number."));
      return;
    }
    try {
      const response = await postJSON(`${modelPath(model, version)}/infer`, { inputs: [tensorInput(spec, 1, values)] });
      const out = outputData(response, outName);
      clear(result).append(h("div", { class: "figure" }, h("span", { class: "caption" }, text(target)),
        h("output", { class: "prediction", id: "prediction", dataset: { value: out[0] } }, num(out[0], 5))));
    } catch (err) {
      clear(result).append(errorBox(err));
    }
  });
  view.append(h("p", {}, "Raw features, as the data set records them; the model does its own scaling."), form, result);
  form.requestSubmit();
}

export async function renderTry(view, ctx, { model }, query) {
  const version = query.get("version") || null;
  ctx.crumbs([["Models", "#/"], [`${model}: try it`, `#/models/${enc(model)}/try`]]);
  const [meta, manifest, index] = await Promise.all([
    getJSON(modelPath(model, version)),
    getJSON(`/ui/manifest/${enc(model)}/${enc(version || "default")}`).catch(() => ({})),
    postJSON("/v2/repository/index", { ready: true }).catch(() => []),
  ]);
  const models = [...new Set((Array.isArray(index) ? index : []).map((e) => e.name))];
  const picker = h("select", { id: "try-model", "aria-label": "model to try" },
    models.map((m) => h("option", { value: m, selected: m === model }, m)));
  picker.addEventListener("change", () => { location.hash = `#/models/${enc(picker.value)}/try`; });
  const kind = taskOf(manifest, meta);
  view.append(h("h1", {}, `Try ${model}`, version ? ` · version ${version}` : ""),
    h("div", { class: "controls" }, h("label", { for: "try-model" }, "Model"), picker,
      h("span", { class: "muted" }, `task: ${kind}; input ${text(get(meta, "inputs.0.name"))} ${JSON.stringify(get(meta, "inputs.0.shape") || [])}`)));
  if (!Array.isArray(meta.inputs) || !meta.inputs.length) {
    view.append(errorBox("The model's metadata lists no inputs."));
    return;
  }
  const args = { model, version, meta, manifest };
  if (kind === "classification") await classifier(view, args);
  else if (kind === "image_to_image") await denoiser(view, args);
  else await regressor(view, args);
}
