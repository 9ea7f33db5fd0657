// One model version: summary cards, the sortable layer table with sparklines and alpha health,
// and the trained state_dict beside the effective (served) tensors.
import { getJSON, modelPath, enc, pool } from "../api.js";
import { h, card, clear } from "../dom.js";
import { get, int, num, pct, text, shape, bytes, alphaHealth, isNum, DASH } from "../fmt.js";
import { spark } from "../charts.js";

export function healthCell(alpha) {
  const health = alphaHealth(alpha);
  return h("span", { class: `health ${health.cls}`, title: health.label },
    isNum(alpha) ? `${num(alpha, 3)} ` : DASH, h("span", { class: "muted" }, isNum(alpha) ? `(${health.label})` : ""));
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
      tbody.append(h("tr", { dataset: { tensorId: t.id } },
        h("td", {}, text(t.module_path), h("div", { class: "muted" }, (t.layers || []).join(", "))),
        h("td", {}, h("a", { href: `${base}/tensors/${enc(t.id)}` }, text(t.name)), h("div", { class: "muted" }, text(t.role))),
        h("td", {}, shape(t.shape)),
        ...COLUMNS.slice(3, 10).map((c) => {
          const v = c.value(t);
          if (c.key === "alpha") return h("td", { class: "num", "data-field": c.key }, healthCell(v));
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
      h("td", { class: "num" }, healthCell(get(t, "spectral.alpha"))),
      h("td", {}, eff ? h("a", { href: `${base}/tensors/${enc(eff.id)}` }, text(eff.name)) : DASH),
      h("td", {}, eff ? shape(eff.shape) : DASH),
      h("td", { class: "num" }, num(get(eff, "stats.std"))),
      h("td", { class: "num" }, num(get(eff, "stats.abs_max"))),
      h("td", { class: "num" }, healthCell(get(eff, "spectral.alpha"))),
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
  const report = await getJSON(`${modelPath(model, version)}/weights`);
  const sm = report.summary || {};
  const warnings = sm.spectral_warnings || {};
  view.append(
    h("h1", {}, `${model} · version ${version}`),
    h("nav", { class: "tabs", "aria-label": "Model views" },
      h("a", { href: base, "aria-current": "page" }, "Weights"),
      h("a", { href: `#/models/${enc(model)}/diff` }, "Diff"),
      h("a", { href: `#/models/${enc(model)}/try?version=${enc(version)}` }, "Try it")),
    h("div", { class: "cards", id: "summary" },
      card("Layers", int(sm.layers)), card("Tensors", int(sm.tensors)), card("Parameters", int(sm.parameters)),
      card("Bytes", bytes(sm.bytes)), card("Folded · transposed · shared", `${int(sm.folded)} · ${int(sm.transposed)} · ${int(sm.shared)}`),
      card("Mean alpha", num(sm.mean_alpha, 3)), card("Mean stable rank", num(sm.mean_stable_rank, 3)),
      card("Alpha < 2 · alpha > 6", `${int(warnings["over-trained"])} · ${int(warnings["under-trained"])}`),
      card("NaN · Inf", `${int(sm.nan_count)} · ${int(sm.inf_count)}`)),
    h("p", { class: "muted" }, "Alpha is the power-law exponent of each weight's eigenvalue spectrum (weightwatcher ",
      text(get(report, "ww_compat.version")), "): roughly 2–6 is well trained (●), above 6 under-trained (▲), below 2 over-fit (▼)."),
    h("h2", {}, "Layers"),
  );
  const sparks = new Map();
  const { table, redraw } = layerTable(report, base, sparks);
  view.append(h("div", { class: "scroll" }, table));
  view.append(h("h2", {}, "Trained vs effective"), trainedTable(report, base));
  // sparklines come from each tensor's own histogram; fetched after the table is on screen
  const ids = (report.tensors || []).map((t) => t.id);
  await pool(ids, 2, async (id) => {
    const detail = await getJSON(`${modelPath(model, version)}/weights/${enc(id)}?bins=24`);
    sparks.set(id, get(detail, "stats.histogram"));
    const cell = table.querySelector(`td.spark[data-tensor="${CSS.escape(id)}"]`);
    if (cell && !cell.firstChild) cell.append(spark(sparks.get(id)));
  });
  table.dataset.sparks = "done";
  void redraw;
}
