// One tensor in full: histograms (linear and log-magnitude), per-channel bars, quantiles,
// the eigenvalue spectrum with its fitted power-law tail (eigenvalues from the server's spectral
// document, never the raw weight), and quantization readiness.
import { getJSON, modelPath, enc } from "../api.js";
import { h, card, kv, clear } from "../dom.js";
import { get, int, num, pct, text, shape, bytes, isNum, DASH } from "../fmt.js";
import { histogram, bars, spectrum, COLORS } from "../charts.js";
import { esdBins, esdNote } from "../spectrum.js";
import { healthCell, flags, progressPanel, followAnalysis } from "./version.js";

const CHANNEL_FIGURES = [["abs_max", "|max|"], ["l2", "L2 norm"], ["mean", "mean"], ["std", "std"]];

function quantileTable(q) {
  const entries = Object.entries(q || {});
  if (!entries.length) return h("p", { class: "muted" }, DASH);
  return h("table", { id: "quantiles" }, h("thead", {}, h("tr", {}, entries.map(([k]) => h("th", { scope: "col", class: "num" }, k)))),
    h("tbody", {}, h("tr", {}, entries.map(([k, v]) => h("td", { class: "num", "data-field": k }, num(v))))));
}

function readiness(r) {
  if (!r) return h("p", { class: "muted" }, DASH);
  const sq = r.int8_sqnr_db || {};
  const db = (v) => (isNum(v) ? `${num(v, 3)} dB` : DASH);
  const pairs = [
    ["int8 SQNR, per tensor", db(sq.per_tensor)],
    ["int8 SQNR, per channel", db(sq.per_channel)],
    ["channel range ratio (max / median |max|)", num(r.channel_range_ratio, 3)],
    ["outliers beyond 3σ", pct(r.outlier_fraction_3sigma, 3)],
    ["outliers beyond 6σ", pct(r.outlier_fraction_6sigma, 3)],
    ["fp16 overflow", int(r.fp16_overflow)],
    ["fp16 subnormal", `${int(r.fp16_subnormal)} (${pct(r.fp16_subnormal_fraction, 3)})`],
  ];
  if (r.integer_view) {
    pairs.push(["stored integer levels", `${int(r.integer_view.distinct_levels)} (${pct(r.integer_view.level_occupancy)})`],
      ["clipped", pct(r.integer_view.clip_fraction, 3)]);
  }
  let verdict = "—";
  const best = Math.max(isNum(sq.per_tensor) ? sq.per_tensor : -Infinity, isNum(sq.per_channel) ? sq.per_channel : -Infinity);
  if (best > -Infinity) {
    verdict = best >= 30 ? "ready for int8 (SQNR ≥ 30 dB)" : best >= 20 ? "int8 with care (20–30 dB)" : "keep in higher precision (SQNR < 20 dB)";
    if (isNum(sq.per_channel) && isNum(sq.per_tensor) && sq.per_channel - sq.per_tensor > 3) verdict += "; quantize per channel";
  }
  return [h("p", { class: "verdict", id: "quant-verdict" }, verdict), kv(pairs)];
}

function spectralTable(sp) {
  if (!sp) return h("p", { class: "muted" }, "No spectrum: only 2-D and convolution weights have one.");
  if (sp.analysis === "queued" || sp.analysis === "running") {
    return h("p", { class: "muted" }, `Spectral analysis ${sp.analysis} (N ${int(sp.N)}, M ${int(sp.M)}, rf ${int(sp.rf)}); the metrics appear here when it is done.`);
  }
  if (sp.status !== "success") {
    return h("p", { class: "muted" }, `Spectral analysis ${text(sp.status)}: ${text(sp.skipped_reason)}`);
  }
  return kv([
    ["alpha", healthCell(sp.alpha)], ["xmin · xmax", `${num(sp.xmin)} · ${num(sp.xmax)}`], ["KS distance D", num(sp.D, 3)],
    ["σ(alpha)", num(sp.sigma, 3)], ["tail eigenvalues", int(sp.num_pl_spikes)], ["fit", text(sp.pl_fit)],
    ["eigenvalues", `${int(sp.num_evals)} (N ${int(sp.N)}, M ${int(sp.M)}, rf ${int(sp.rf)})`],
    ["stable rank", num(sp.stable_rank, 4)], ["log norm", num(sp.log_norm, 4)], ["log spectral norm", num(sp.log_spectral_norm, 4)],
    ["alpha weighted", num(sp.alpha_weighted, 4)], ["log alpha norm", num(sp.log_alpha_norm, 4)],
    ["matrix rank", int(sp.matrix_rank)], ["entropy", num(sp.entropy, 4)],
  ]);
}

export async function renderTensor(view, ctx, { model, version, tensor }, query) {
  const vbase = `#/models/${enc(model)}/versions/${enc(version)}`;
  const api = `${modelPath(model, version)}/weights/${enc(tensor)}`;
  const bins = Math.min(Math.max(parseInt(query.get("bins") || "60", 10) || 60, 4), 256);
  const range = query.get("range") === "symmetric" ? "symmetric" : "minmax";
  const t = await getJSON(`${api}?bins=${bins}&range=${range}`);
  const name = t.name || t.state_dict_key || tensor;
  ctx.crumbs([["Models", "#/"], [`${model} v${version}`, vbase], [name, `${vbase}/tensors/${enc(tensor)}`]]);
  const st = t.stats || {};
  const here = `${vbase}/tensors/${enc(tensor)}`;
  const controls = h("form", { class: "controls", id: "hist-controls" },
    h("label", {}, "Bins ", h("input", { type: "number", name: "bins", min: 4, max: 256, value: bins, "aria-label": "histogram bins" })),
    h("label", {}, "Range ", h("select", { name: "range" },
      h("option", { value: "minmax", selected: range === "minmax" }, "min … max"),
      h("option", { value: "symmetric", selected: range === "symmetric" }, "symmetric around 0"))),
    h("button", { type: "submit" }, "Apply"));
  controls.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const form = new FormData(controls);
    location.hash = `${here}?bins=${enc(form.get("bins"))}&range=${enc(form.get("range"))}`;
  });
  const counterpart = t.counterpart;
  view.append(
    h("h1", {}, name),
    h("p", {}, `${text(t.kind)} tensor · ${text(t.role || (t.kind === "trained" ? "state_dict" : ""))} · shape ${shape(t.shape)} · ${text(t.storage_dtype)} · ${bytes(t.bytes)} `, flags(t)),
    h("dl", { class: "kv" },
      h("dt", {}, "layer"), h("dd", {}, text(t.module_path), " ", h("span", { class: "muted" }, (t.layers || []).join(", "))),
      h("dt", {}, "state_dict key"), h("dd", {}, text(t.state_dict_key)),
      h("dt", {}, "export chain"), h("dd", {}, Array.isArray(t.chain) && t.chain.length ? t.chain.join(" → ") : DASH),
      h("dt", {}, counterpart ? (t.kind === "trained" ? "effective tensor" : "trained tensor") : "counterpart"),
      h("dd", {}, counterpart ? [h("a", { href: `${vbase}/tensors/${enc(counterpart.id)}` }, text(counterpart.name || counterpart.state_dict_key)),
        ` (${text(counterpart.relation || t.relation)}; same values: ${counterpart.same_values ? "yes" : "no"})`] : DASH),
      h("dt", {}, "sha256"), h("dd", {}, h("code", {}, text(t.sha256)))),
    h("div", { class: "cards", id: "tensor-stats" },
      ...[["numel", int(st.numel)], ["mean", num(st.mean)], ["std", num(st.std)], ["min", num(st.min)], ["max", num(st.max)],
        ["abs_max", num(st.abs_max)], ["rms", num(st.rms)], ["zero fraction", pct(st.zero_fraction, 2)],
        ["skewness", num(st.skewness, 3)], ["excess kurtosis", num(st.excess_kurtosis, 3)],
        ["NaN · Inf", `${int(st.nan_count)} · ${int(st.inf_count)}`]]
        .map(([k, v]) => { const c = card(k, v); c.dataset.field = k; return c; })),
    controls,
  );
  const grid = h("div", { class: "grid2" });
  grid.append(
    h("section", { class: "panel", "aria-labelledby": "h-hist" }, h("h2", { id: "h-hist" }, "Values"),
      histogram({ hist: st.histogram, color: COLORS.blue }, { label: "histogram of values", xLabel: "value" })),
    h("section", { class: "panel", "aria-labelledby": "h-log" }, h("h2", { id: "h-log" }, "Magnitudes (log10 |w|)"),
      st.log_abs_histogram ? histogram({ hist: st.log_abs_histogram, color: COLORS.green },
        { label: "histogram of log10 magnitudes", xLabel: "log10 |value|" }) : h("p", { class: "muted" }, "All values are zero.")),
  );
  const pc = st.per_channel;
  const channelPanel = h("section", { class: "panel", "aria-labelledby": "h-ch" }, h("h2", { id: "h-ch" }, "Per output channel"));
  if (pc && Array.isArray(pc.abs_max)) {
    const holder = h("div");
    const select = h("select", { "aria-label": "per-channel figure" }, CHANNEL_FIGURES.map(([k, l]) => h("option", { value: k }, l)));
    const drawChannels = () => {
      clear(holder).append(bars(pc[select.value], { label: `per-channel ${select.value}`, color: COLORS.blue,
        xLabel: `channel (axis ${text(pc.axis)}, ${int(pc.channels)} channels)` }));
    };
    select.addEventListener("change", drawChannels);
    drawChannels();
    channelPanel.append(h("div", { class: "controls" }, h("label", {}, "Figure ", select)), holder);
  } else if (pc && pc.skipped) channelPanel.append(h("p", { class: "muted" }, `Not computed: ${pc.skipped}.`));
  else channelPanel.append(h("p", { class: "muted" }, "No channel axis for this tensor."));
  grid.append(channelPanel,
    h("section", { class: "panel", "aria-labelledby": "h-q" }, h("h2", { id: "h-q" }, "Quantization readiness"), readiness(st.quant_readiness)));
  view.append(grid, h("h2", {}, "Quantiles"), h("div", { class: "scroll" }, quantileTable(st.quantiles)));

  const specChart = h("div", { id: "spectrum" });
  const specTable = h("section", { class: "panel", id: "spectral-metrics" });
  view.append(h("h2", {}, "Eigenvalue spectrum"),
    h("div", { class: "grid2" }, h("section", { class: "panel" },
      h("div", { class: "legend" }, h("span", { class: "sw-blue" }, "empirical spectral density"),
        h("span", { class: "sw-vermillion" }, "fitted power law (dashed)"), h("span", { class: "sw-green" }, "xmin")),
      specChart), specTable));
  const showSpectrum = (sp) => {
    drawSpectrum(specChart, sp);
    specTable.replaceChildren(spectralTable(sp));
  };
  showSpectrum(t.spectral);
  const state = get(t, "spectral.analysis");
  if (state === "queued" || state === "running") {
    // wait for this tensor's analysis, with the version's progress meanwhile, then fill it in
    const progress = progressPanel("tensor-analysis");
    specChart.replaceChildren(progress);
    let shown = state;
    void followAnalysis(progress, `${modelPath(model, version)}/weights/analysis`, async (job) => {
      const mine = (job.matrices || []).find((m) => (m.tensors || []).some((x) => x.id === tensor));
      const now = mine ? mine.state : "done";
      if (now === shown || !specChart.isConnected) return;
      shown = now;
      if (now === "done" || now === "failed") showSpectrum((await getJSON(`${api}?bins=${bins}&range=${range}`)).spectral);
    });
  }
}

function drawSpectrum(el, sp) {
  if (!sp || sp.status !== "success") {
    el.replaceChildren(h("p", { class: "muted" }, "No fitted spectrum for this tensor."));
    return;
  }
  const listing = sp.eigenvalues;
  const esd = esdBins(listing);
  if (!esd) {
    el.replaceChildren(h("p", { class: "muted" }, "The eigenvalues are being computed again; reload in a moment."));
    return;
  }
  el.dataset.evalSum = String(listing.sum);
  el.dataset.evalCount = String(listing.count);
  el.replaceChildren(spectrum(esd, sp, { label: `eigenvalue spectrum, alpha ${num(sp.alpha, 3)}` }),
    h("p", { class: "muted" }, esdNote(listing, sp.norm, num)));
}
