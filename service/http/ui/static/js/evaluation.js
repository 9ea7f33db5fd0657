// What /evaluate answers, shown: the task's metrics (accuracy and cross-entropy; MAE, RMSE, R²;
// MAE, PSNR, SSIM), a classifier's confusion matrix, a regressor's figures per target.
import { h, kv } from "./dom.js";
import { num, pct, text, isNum } from "./fmt.js";

const METRICS = [
  ["accuracy", "Accuracy", (v) => pct(v, 1)],
  ["cross_entropy", "Cross-entropy", (v) => num(v, 4)],
  ["mae", "MAE", (v) => num(v, 4)],
  ["rmse", "RMSE", (v) => num(v, 4)],
  ["r2", "R²", (v) => num(v, 4)],
  ["psnr", "PSNR", (v) => `${num(v, 4)} dB`],
  ["ssim", "SSIM", (v) => num(v, 4)],
  ["ssim_window", "SSIM window", (v) => text(v)],
  ["data_range", "Data range", (v) => num(v, 4)],
];

function confusion(matrix, labels) {
  const name = (i) => (Array.isArray(labels) && labels[i] !== undefined ? String(labels[i]) : String(i));
  return h("div", { class: "scroll" }, h("table", { id: "confusion", class: "confusion" },
    h("caption", {}, "Confusion matrix: rows are the true classes, columns the predicted ones"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "true \\ predicted"),
      matrix.map((_, j) => h("th", { scope: "col", class: "num" }, name(j))))),
    h("tbody", {}, matrix.map((row, i) => h("tr", {}, h("th", { scope: "row" }, name(i)),
      row.map((c, j) => h("td", { class: `num${i === j ? " diagonal" : ""}${c && i !== j ? " miss" : ""}` }, String(c))))))));
}

function perTarget(rows) {
  return h("table", { id: "per-target" },
    h("caption", { class: "sr-only" }, "Metrics per target"),
    h("thead", {}, h("tr", {}, ["Target", "MAE", "RMSE", "R²"].map((t, i) => h("th", { scope: "col", class: i ? "num" : null }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("th", { scope: "row" }, text(r.name)),
      ["mae", "rmse", "r2"].map((k) => h("td", { class: "num" }, num(r[k], 4)))))));
}

/** The metrics panel; `figures` (elements) go beside the numbers, e.g. input, target and output images. */
export function metricsPanel(evaluated, figures = []) {
  const pairs = [["Task", text(evaluated.task)], ["Scored output", text(evaluated.output)], ["Samples", text(evaluated.samples)]];
  const data = {};
  for (const [key, label, format] of METRICS) {
    const v = evaluated[key];
    if (v === undefined || v === null) continue;
    pairs.push([label, format(v)]);
    if (isNum(v)) data[key] = String(v);
  }
  const matrix = Array.isArray(evaluated.confusion_matrix) ? evaluated.confusion_matrix : null;
  const targets = Array.isArray(evaluated.per_target) && evaluated.per_target.length > 1 ? evaluated.per_target : null;
  return h("section", { class: "panel", id: "metrics", dataset: data },
    h("h3", {}, "Evaluation (/evaluate: the example's targets against the outputs)"),
    h("div", { class: "row" }, kv(pairs), figures.length ? h("div", { class: "row" }, figures) : null),
    matrix ? confusion(matrix, evaluated.labels) : null,
    targets ? perTarget(targets) : null);
}
