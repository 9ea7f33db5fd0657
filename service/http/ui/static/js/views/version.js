// One model version: summary cards, the spectral analysis's progress, the sortable layer table with
// sparklines and alpha health (filled in as the background analysis finishes each layer), and the
// trained state_dict beside the effective (served) tensors.
import { getJSON, modelPath, enc, pool } from "../api.js";
import { h, card, clear } from "../dom.js";
import { get, int, num, pct, text, shape, bytes, alphaHealth, isNum, DASH } from "../fmt.js";
import { spark } from "../charts.js";

export function healthCell(alpha) {
  const health = alphaHealth(alpha);
  return h("span", { class: `health ${health.cls}`, title: health.label },
    isNum(alpha) ? `${num(alpha, 3)} ` : DASH, h("span", { class: "muted" }, isNum(alpha) ? `(${health.label})` : ""));
}

/** A spectral cell: the alpha health once analysed, else the analysis state in words. */
export function alphaOrState(spectral) {
  const state = spectral && spectral.analysis;
  if (state === "queued" || state === "running") {
    return h("span", { class: `pending ${state}`, title: `spectral analysis ${state}` }, state === "running" ? "analysing…" : "queued");
  }
  return healthCell(spectral ? spectral.alpha : undefined);
}

function seconds(value) {
  if (!isNum(value)) return "?";
  return value < 90 ? `${Math.round(value)} s` : `${(value / 60).toFixed(1)} min`;
}

/** The analysis job's progress bar and sentence. */
export function drawProgress(panel, job) {
  const layers = job.layers || {};
  const done = job.state === "done";
  panel.dataset.state = job.state;
  panel.dataset.done = String(layers.done ?? 0);
  panel.dataset.total = String(layers.total ?? 0);
  const bar = panel.querySelector("progress");
  bar.value = isNum(job.progress) ? job.progress : 0;
  const parts = [`${int(layers.done)} of ${int(layers.total)} layers analysed`];
  if (layers.running) parts.push(`${int(layers.running)} running`);
  if (layers.failed) parts.push(`${int(layers.failed)} failed`);
  parts.push(`${pct(job.progress, 0)} of the work`);
  parts.push(done ? `took ${seconds(job.elapsed_s)}` : `elapsed ${seconds(job.elapsed_s)}, about ${seconds(job.eta_s)} left`);
  panel.querySelector(".text").textContent = `${done ? "Spectral analysis done" : "Spectral analysis running"}: ${parts.join(" · ")}`;
}

export function progressPanel(id) {
  return h("section", { class: "panel analysis", id, "aria-live": "polite" },
    h("progress", { max: 1, value: 0, "aria-label": "spectral analysis progress" }), h("span", { class: "text" }, ""));
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Poll a version's analysis job until done (or the view is left): `onJob(job)` after each poll. */
export async function followAnalysis(panel, url, onJob) {
  for (;;) {
    if (!panel.isConnected) return null;
    let job;
    try {
      job = await getJSON(url);
    } catch (err) {
      panel.querySelector(".text").textContent = `Spectral analysis: ${err.message}`;
      return null;
    }
    if (!panel.isConnected) return null;
    drawProgress(panel, job);
    onJob(job);
    if (job.state === "done") return job;
    await sleep(1000);
  }
}

export function flags(t) {
  const out = [];
  if (t.folded) out.push(h("span", { class: "badge folded", title: "folded: batch-norm or another op merged into this weight at export" }, "folded"));
  if (t.transposed) out.push(h("span", { class: "badge transposed", title: "stored transposed relative to the trained layout" }, "transposed"));
  if (t.shared) out.push(h("span", { class: "badge shared", title: "shared: used by more than one layer" }, "shared"));
  if (t.quantization) out.push(h("span", { class: "badge" }, "quantized"));
  if (t.relation && t.relation !== "identical") out.push(h("span", { class: "badge" }, `trained: ${t.relation}`));
  return out;
}

const COLUMNS = [
  { key: "layer", label: "Layer", value: (t) => t.module_path || "", sort: true },
  { key: "name", label: "Tensor", value: (t) => t.name || "", sort: true },
  { key: "shape", label: "Shape" },
  { key: "parameters", label: "Parameters", num: true, value: (t) => get(t, "stats.numel"), fmt: int, sort: true },
  { key: "mean", label: "Mean", num: true, value: (t) => get(t, "stats.mean"), sort: true },
  { key: "std", label: "Std", num: true, value: (t) => get(t, "stats.std"), sort: true },
  { key: "abs_max", label: "|max|", num: true, value: (t) => get(t, "stats.abs_max"), sort: true },
  { key: "zero_fraction", label: "Zeros", num: true, value: (t) => get(t, "stats.zero_fraction"), fmt: (v) => pct(v, 2), sort: true },
  { key: "alpha", label: "Alpha", num: true, value: (t) => get(t, "spectral.alpha"), sort: true },
  { key: "stable_rank", label: "Stable rank", num: true, value: (t) => get(t, "spectral.stable_rank"), sort: true },
  { key: "hist", label: "Histogram" },
  { key: "flags", label: "Flags" },
];

function sortRows(rows, col, dir) {
  const missing = dir === "ascending" ? Infinity : -Infinity;
  const key = (t) => {
    const v = col.value(t);
    return v === null || v === undefined || (typeof v === "number" && !Number.isFinite(v)) ? missing : v;
  };
  return [...rows].sort((a, b) => {
    const x = key(a);
    const y = key(b);
    const c = typeof x === "string" && typeof y === "string" ? x.localeCompare(y) : x < y ? -1 : x > y ? 1 : 0;
    return dir === "ascending" ? c : -c;
  });
}

function layerTable(report, base, sparks) {
  const rows = (report.tensors || []).map((t) => t);
  let sortKey = null;
  let dir = "none";
  const tbody = h("tbody");
  const headRow = h("tr");
  const draw = () => {
    clear(tbody);
    const col = COLUMNS.find((c) => c.key === sortKey);
    for (const t of col ? sortRows(rows, col, dir) : rows) {
      const histCell = h("td", { class: "spark", "data-tensor": t.id });
      const have = sparks.get(t.id);
      if (have) histCell.append(spark(have));
      tbody.append(h("tr", { dataset: { tensorId: t.id, analysis: get(t, "spectral.analysis") || "none" } },
        h("td", {}, text(t.module_path), h("div", { class: "muted" }, (t.layers || []).join(", "))),
        h("td", {}, h("a", { href: `${base}/tensors/${enc(t.id)}` }, text(t.name)), h("div", { class: "muted" }, text(t.role))),
        h("td", {}, shape(t.shape)),
        ...COLUMNS.slice(3, 10).map((c) => {
          const v = c.value(t);
          if (c.key === "alpha") return h("td", { class: "num", "data-field": c.key }, alphaOrState(t.spectral));
          return h("td", { class: "num", "data-field": c.key }, (c.fmt || num)(v));
        }),
        histCell,
        h("td", {}, flags(t)),
      ));
    }
  };
  for (const c of COLUMNS) {
    const th = h("th", { scope: "col", class: c.num ? "num" : null }, c.label);
    if (c.sort) {
      th.setAttribute("aria-sort", "none");
      th.setAttribute("tabindex", "0");
      th.dataset.sort = c.key;
      const activate = () => {
        dir = sortKey === c.key && dir === "descending" ? "ascending" : "descending";
        sortKey = c.key;
        for (const other of headRow.querySelectorAll("th[aria-sort]")) other.setAttribute("aria-sort", "none");
        th.setAttribute("aria-sort", dir);
        draw();
      };
      th.addEventListener("click", activate);
      th.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); activate(); }
      });
    }
    headRow.append(th);
  }
  draw();
  const table = h("table", { id: "layer-table" },
    h("caption", { class: "sr-only" }, "Weight tensors of each layer; column headers sort"), h("thead", {}, headRow), tbody);
  return { table, redraw: draw };
}

function summaryCards(sm) {
  const warnings = sm.spectral_warnings || {};
  return [
    card("Layers", int(sm.layers)), card("Tensors", int(sm.tensors)), card("Parameters", int(sm.parameters)),
    card("Bytes", bytes(sm.bytes)), card("Folded · transposed · shared", `${int(sm.folded)} · ${int(sm.transposed)} · ${int(sm.shared)}`),
    card("Mean alpha", num(sm.mean_alpha, 3)), card("Mean stable rank", num(sm.mean_stable_rank, 3)),
    card("Alpha < 2 · alpha > 6", `${int(warnings["over-trained"])} · ${int(warnings["under-trained"])}`),
    card("NaN · Inf", `${int(sm.nan_count)} · ${int(sm.inf_count)}`),
  ];
}

function trainedTable(report, base) {
  const trained = report.trained;
  if (!Array.isArray(trained)) {
    return h("p", { class: "muted" }, "This version ships no weights.safetensors sidecar, so only the effective tensors are known.");
  }
  const effective = new Map((report.tensors || []).map((t) => [t.id, t]));
  const rows = trained.map((t) => {
    const eff = effective.get(t.effective_id);
    const same = eff && t.sha256 && eff.sha256 ? (t.sha256 === eff.sha256 ? "yes" : "no") : DASH;
    return h("tr", {},
      h("td", {}, h("a", { href: `${base}/tensors/${enc(t.id)}` }, text(t.state_dict_key)),
        t.folded_from ? h("div", { class: "muted" }, `folded with ${t.folded_from.join(", ")}`) : null),
      h("td", {}, text(t.relation)),
      h("td", {}, shape(t.shape)),
      h("td", { class: "num" }, num(get(t, "stats.std"))),
      h("td", { class: "num" }, num(get(t, "stats.abs_max"))),
      h("td", { class: "num" }, alphaOrState(t.spectral)),
      h("td", {}, eff ? h("a", { href: `${base}/tensors/${enc(eff.id)}` }, text(eff.name)) : DASH),
      h("td", {}, eff ? shape(eff.shape) : DASH),
      h("td", { class: "num" }, num(get(eff, "stats.std"))),
      h("td", { class: "num" }, num(get(eff, "stats.abs_max"))),
      h("td", { class: "num" }, alphaOrState(eff && eff.spectral)),
      h("td", {}, same),
    );
  });
  return h("div", { class: "scroll" }, h("table", { id: "trained-table" },
    h("caption", { class: "sr-only" }, "Trained state_dict tensors beside the effective tensors the model runs"),
    h("thead", {},
      h("tr", {}, h("th", { colspan: 6, scope: "colgroup" }, "Trained (state_dict)"), h("th", { colspan: 6, scope: "colgroup" }, "Effective (model.onnx)")),
      h("tr", {}, ["Key", "Relation", "Shape", "Std", "|max|", "Alpha", "Initializer", "Shape", "Std", "|max|", "Alpha", "Same values"]
        .map((l, i) => h("th", { scope: "col", class: [3, 4, 5, 8, 9, 10].includes(i) ? "num" : null }, l)))),
    h("tbody", {}, rows)));
}

export async function renderVersion(view, ctx, { model, version }) {
  const base = `#/models/${enc(model)}/versions/${enc(version)}`;
  ctx.crumbs([["Models", "#/"], [`${model} v${version}`, base]]);
  const api = `${modelPath(model, version)}/weights`;
  const report = await getJSON(api);
  const summary = h("div", { class: "cards", id: "summary" }, summaryCards(report.summary || {}));
  const progress = progressPanel("analysis");
  view.append(
    h("h1", {}, `${model} · version ${version}`),
    h("nav", { class: "tabs", "aria-label": "Model views" },
      h("a", { href: base, "aria-current": "page" }, "Weights"),
      h("a", { href: `#/models/${enc(model)}/diff` }, "Diff"),
      h("a", { href: `#/models/${enc(model)}/try?version=${enc(version)}` }, "Try it")),
    summary,
    progress,
    h("p", { class: "muted" }, "Alpha is the power-law exponent of each weight's eigenvalue spectrum (weightwatcher ",
      text(get(report, "ww_compat.version")), "): roughly 2–6 is well trained (●), above 6 under-trained (▲), below 2 over-fit (▼)."),
    h("h2", {}, "Layers"),
  );
  if (report.analysis) drawProgress(progress, report.analysis);
  const sparks = new Map();
  const { table, redraw } = layerTable(report, base, sparks);
  view.append(h("div", { class: "scroll" }, table));
  const trained = h("div", { id: "trained" }, trainedTable(report, base));
  view.append(h("h2", {}, "Trained vs effective"), trained);
  // layers fill in as the background analysis finishes them; the summary once it is all done
  const byId = new Map([...(report.tensors || []), ...(report.trained || [])].map((t) => [t.id, t]));
  const following = report.analysis && report.analysis.state !== "done"
    ? followAnalysis(progress, report.analysis.url || `${api}/analysis`, (job) => {
      let changed = false;
      for (const matrix of job.matrices || []) {
        for (const member of matrix.tensors || []) {
          const t = byId.get(member.id);
          if (!t || !t.spectral || t.spectral.analysis === matrix.state) continue;
          t.spectral = matrix.state === "done" && matrix.spectral
            ? { ...t.spectral, ...matrix.spectral, layer_type: t.spectral.layer_type, analysis: "done" }
            : { ...t.spectral, analysis: matrix.state };
          changed = true;
        }
      }
      if (changed) redraw();
    }).then(async (job) => {
      if (!job || !summary.isConnected) return;
      const fresh = await getJSON(api);
      summary.replaceChildren(...summaryCards(fresh.summary || {}));
      trained.replaceChildren(trainedTable(fresh, base));
    })
    : Promise.resolve();
  // sparklines come from each tensor's own histogram; fetched after the table is on screen
  const ids = (report.tensors || []).map((t) => t.id);
  await pool(ids, 2, async (id) => {
    const detail = await getJSON(`${api}/${enc(id)}?bins=24`);
    sparks.set(id, get(detail, "stats.histogram"));
    const cell = table.querySelector(`td.spark[data-tensor="${CSS.escape(id)}"]`);
    if (cell && !cell.firstChild) cell.append(spark(sparks.get(id)));
  });
  table.dataset.sparks = "done";
  void following;
}
