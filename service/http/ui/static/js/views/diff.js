// Two versions side by side: the verdict with its evidence, per-layer change bars, and the
// overlaid histograms of one tensor on edges shared by both versions.
import { getJSON, postJSON, enc } from "../api.js";
import { h, kv, clear } from "../dom.js";
import { get, int, num, pct, text, shape, isNum, DASH } from "../fmt.js";
import { histogram, hbars, COLORS } from "../charts.js";

function tensorRows(tensors, onPick) {
  return tensors.map((t, i) => {
    const button = h("button", { type: "button", "data-index": i, "aria-label": `show histograms of ${t.name}` }, "Histograms");
    button.addEventListener("click", () => onPick(t));
    const mismatch = t.shape_mismatch ? `shape ${shape(t.shape_mismatch.base)} → ${shape(t.shape_mismatch.target)}` : null;
    return h("tr", { dataset: { name: t.name } },
      h("td", {}, text(t.name), t.base_name && t.base_name !== t.name ? h("div", { class: "muted" }, `was ${t.base_name}`) : null),
      h("td", {}, text(t.matched_by)),
      h("td", {}, mismatch || (t.identical ? "identical" : "changed")),
      h("td", { class: "num", "data-field": "rel_l2" }, num(t.rel_l2)),
      h("td", { class: "num", "data-field": "cosine" }, num(t.cosine, 6)),
      h("td", { class: "num" }, num(t.max_abs_diff)),
      h("td", { class: "num" }, pct(t.changed_fraction, 1)),
      h("td", { class: "num" }, pct(t.sign_flip_fraction, 2)),
      h("td", { class: "num" }, num(get(t, "histograms.js_distance"), 3)),
      h("td", { class: "num" }, num(get(t, "spectral_delta.alpha"), 3)),
      h("td", {}, t.histograms ? button : DASH));
  });
}

function verdictBlock(body, id) {
  const ev = body.evidence || {};
  const th = ev.thresholds || {};
  return [
    h("p", { class: "verdict", id }, `Verdict: ${text(body.verdict)}`),
    kv([
      ["overall relative L2 change", num(ev.overall_rel_l2)],
      ["lowest cosine similarity", num(ev.min_cosine, 6)],
      ["median relative L2 of changed tensors", num(ev.median_rel_l2)],
      ["tensors compared · identical · changed", `${int(ev.tensors_compared)} · ${int(ev.tensors_identical)} · ${int(ev.tensors_changed)}`],
      ["shape mismatches · only in base · only in target", `${int(ev.shape_mismatches)} · ${int(ev.only_in_base)} · ${int(ev.only_in_target)}`],
      ["small fine-tune when", `relative L2 ≤ ${num(th.fine_tune_rel_l2)} and every cosine ≥ ${num(th.fine_tune_min_cosine)}`],
    ]),
  ];
}

function tensorTable(tensors, onPick, id) {
  return h("div", { class: "scroll" }, h("table", { id },
    h("thead", {}, h("tr", {}, ["Tensor", "Matched by", "Change", "Rel. L2", "Cosine", "Max |Δ|", "Changed", "Sign flips",
      "JS distance", "Δ alpha", ""].map((l, i) => h("th", { scope: "col", class: i >= 3 && i <= 9 ? "num" : null }, l)))),
    h("tbody", {}, tensorRows(tensors, onPick))));
}

export async function renderDiff(view, ctx, { model }, query) {
  ctx.crumbs([["Models", "#/"], [`${model} diff`, `#/models/${enc(model)}/diff`]]);
  const index = await postJSON("/v2/repository/index", {});
  const versions = [...new Set((Array.isArray(index) ? index : []).filter((e) => e.name === model && e.version !== undefined)
    .map((e) => Number(e.version)))].sort((a, b) => a - b);
  view.append(h("h1", {}, `${model} · weight diff`));
  if (versions.length < 2) {
    view.append(h("p", { class: "muted" }, `${model} has ${versions.length} version(s) on disk; a diff needs two.`));
    return;
  }
  const base = query.get("base") || String(versions.at(-2));
  const target = query.get("target") || String(versions.at(-1));
  const pick = (name, value) => h("select", { name, id: `pick-${name}` },
    versions.map((v) => h("option", { value: v, selected: String(v) === value }, `version ${v}`)));
  const form = h("form", { class: "controls" },
    h("label", { for: "pick-base" }, "Base"), pick("base", base),
    h("label", { for: "pick-target" }, "Target"), pick("target", target),
    h("button", { type: "submit", class: "primary" }, "Compare"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    location.hash = `#/models/${enc(model)}/diff?base=${enc(f.get("base"))}&target=${enc(f.get("target"))}`;
  });
  view.append(form);
  const diff = await getJSON(`/v2/models/${enc(model)}/weights/diff?base=${enc(base)}&target=${enc(target)}`);
  const overlay = h("section", { class: "panel", id: "overlay", "aria-live": "polite" },
    h("h2", {}, "Histograms on shared edges"), h("p", { class: "muted" }, "Pick a tensor below."));
  const showOverlay = (t) => {
    const hs = t.histograms;
    clear(overlay).append(h("h2", {}, `Histograms on shared edges: ${t.name}`),
      h("div", { class: "legend" }, h("span", { class: "sw-blue" }, `version ${diff.base} (bars)`), h("span", { class: "sw-orange" }, `version ${diff.target} (outline)`)),
      histogram([{ name: `v${diff.base}`, hist: { edges: hs.edges, counts: hs.base }, color: COLORS.blue },
        { name: `v${diff.target}`, hist: { edges: hs.edges, counts: hs.target }, color: COLORS.orange }],
      { label: `overlaid histograms of ${t.name}`, width: 620, height: 230, xLabel: "value" }),
      kv([["Jensen–Shannon distance", num(hs.js_distance, 4)], ["Wasserstein distance", num(hs.wasserstein, 4)],
        ["relative L2", num(t.rel_l2)], ["cosine", num(t.cosine, 6)]]));
  };
  const layers = (diff.layers || []).filter((l) => isNum(l.rel_l2));
  view.append(
    h("div", { class: "grid2" },
      h("section", { class: "panel" }, h("h2", {}, `Version ${text(diff.base)} → ${text(diff.target)}`), verdictBlock(diff, "verdict")),
      h("section", { class: "panel" }, h("h2", {}, "Change per layer (relative L2)"),
        layers.length ? hbars(layers.map((l) => ({ label: `${l.module_path || l.layer} (${l.op_type})`, value: l.rel_l2 })),
          { label: "relative L2 change per layer", width: 480, labelWidth: 190, rowHeight: 24 }) : h("p", { class: "muted" }, DASH))),
    overlay,
    h("h2", {}, "Tensors (effective, as served)"),
    tensorTable(diff.tensors || [], showOverlay, "diff-table"),
  );
  const firstChanged = (diff.tensors || []).find((t) => t.histograms);
  if (firstChanged) showOverlay(firstChanged);
  if (diff.trained) {
    view.append(h("h2", {}, "Trained state_dict"), h("div", { class: "panel" }, verdictBlock(diff.trained, "trained-verdict")),
      tensorTable(diff.trained.tensors || [], showOverlay, "diff-trained-table"));
  }
  const arch = diff.architecture || {};
  if (arch.same_layers === false || (diff.only_in_base || []).length || (diff.only_in_target || []).length) {
    view.append(h("h2", {}, "Architecture"), kv([
      ["base layers", (arch.base_layers || []).join(", ")], ["target layers", (arch.target_layers || []).join(", ")],
      ["only in base", (diff.only_in_base || []).map((t) => t.name).join(", ") || DASH],
      ["only in target", (diff.only_in_target || []).map((t) => t.name).join(", ") || DASH]]));
  }
}
