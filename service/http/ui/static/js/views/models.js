// Every model and version: readiness, execution provider, parameters, request counts and latencies.
import { getJSON, postJSON, modelPath, enc, pool } from "../api.js";
import { h, card, errorBox } from "../dom.js";
import { get, int, msFromNs, text, num, pct, isNum } from "../fmt.js";

function heldOut(metrics) {
  if (!metrics || typeof metrics !== "object") return "—";
  const parts = [];
  for (const key of ["accuracy", "r2", "mae", "rmse", "psnr", "ssim"]) {
    const v = metrics[key];
    if (isNum(v)) parts.push(`${key} ${key === "accuracy" ? pct(v) : num(v, 4)}`);
  }
  return parts.length ? parts.join(" · ") : "—";
}

export async function renderModels(view, ctx) {
  ctx.crumbs([["Models", "#/"]]);
  const [index, stats] = await Promise.all([
    postJSON("/v2/repository/index", {}),
    getJSON("/v2/models/stats").catch(() => ({ model_stats: [] })),
  ]);
  const entries = Array.isArray(index) ? index : [];
  const statsOf = new Map((get(stats, "model_stats") || []).map((st) => [`${st.name}/${st.version}`, st]));
  const ready = entries.filter((e) => e.state === "READY" && e.version !== undefined);
  const names = [...new Set(entries.map((e) => e.name))];
  const totalRequests = [...statsOf.values()].reduce((a, st) => a + (st.inference_count || 0), 0);
  view.append(
    h("h1", {}, "Models"),
    h("div", { class: "cards" },
      card("Models", int(names.length)),
      card("Versions ready", `${int(ready.length)} of ${int(entries.length)}`),
      card("Requests served", int(totalRequests))),
  );
  if (!entries.length) {
    view.append(h("p", { class: "muted" }, "The repository holds no models."));
    return;
  }
  const headers = ["Model", "Version", "State", "Execution provider", "Parameters", "Requests", "Executions",
    "Failures", "Mean latency", "Queue", "Compute", "Held-out metrics", ""];
  const table = h("table", { id: "models-table" },
    h("caption", { class: "sr-only" }, "Models and versions"),
    h("thead", {}, h("tr", {}, headers.map((t, i) => h("th", { scope: "col", class: i >= 4 && i <= 10 ? "num" : null }, t)))));
  const body = h("tbody");
  for (const e of entries) {
    const key = `${e.name}/${e.version}`;
    const st = statsOf.get(key);
    const success = get(st, "inference_stats.success");
    const row = h("tr", { dataset: { model: e.name, version: e.version ?? "" } },
      h("th", { scope: "row" }, e.name),
      h("td", {}, text(e.version)),
      h("td", {}, h("span", { class: `state-${e.state}` }, text(e.state)), e.reason ? h("div", { class: "muted" }, e.reason) : null),
      h("td", { "data-field": "provider" }, "…"),
      h("td", { class: "num", "data-field": "parameters" }, "…"),
      h("td", { class: "num", "data-field": "inference_count" }, int(get(st, "inference_count"))),
      h("td", { class: "num", "data-field": "execution_count" }, int(get(st, "execution_count"))),
      h("td", { class: "num", "data-field": "fail" }, int(get(st, "inference_stats.fail.count"))),
      h("td", { class: "num", "data-field": "latency" }, msFromNs(get(success, "ns"), get(success, "count"))),
      h("td", { class: "num" }, msFromNs(get(st, "inference_stats.queue.ns"), get(st, "inference_stats.queue.count"))),
      h("td", { class: "num" }, msFromNs(get(st, "inference_stats.compute_infer.ns"), get(st, "inference_stats.compute_infer.count"))),
      h("td", { "data-field": "metrics" }, "…"),
      h("td", { class: "actions" }, e.state === "READY" ? [
        h("a", { href: `#/models/${enc(e.name)}/versions/${enc(e.version)}` }, "Weights"), " · ",
        h("a", { href: `#/models/${enc(e.name)}/try?version=${enc(e.version)}` }, "Try it"),
      ] : null),
    );
    body.append(row);
  }
  table.append(body);
  view.append(h("div", { class: "scroll" }, table));
  // the slower figures (weights report, config, manifest) fill in once the table is on screen
  const fill = pool(entries, 3, async (e) => {
    const row = body.querySelector(`tr[data-model="${CSS.escape(e.name)}"][data-version="${CSS.escape(e.version ?? "")}"]`);
    const put = (field, value) => { const c = row && row.querySelector(`[data-field="${field}"]`); if (c) c.textContent = value; };
    if (e.state !== "READY" || e.version === undefined) {
      for (const f of ["provider", "parameters", "metrics"]) put(f, "—");
      return;
    }
    const [config, weights, manifest] = await Promise.all([
      getJSON(`${modelPath(e.name, e.version)}/config`).catch(() => null),
      getJSON(`${modelPath(e.name, e.version)}/weights`).catch(() => null),
      getJSON(`/ui/manifest/${enc(e.name)}/${enc(e.version)}`).catch(() => null),
    ]);
    const providers = get(config, "parameters.execution_providers.string_value");
    put("provider", text(providers ? String(providers).split(",")[0] : null));
    put("parameters", int(get(weights, "summary.parameters")));
    put("metrics", heldOut(get(manifest, "metrics")));
  });
  const multi = names.filter((n) => entries.filter((e) => e.name === n).length > 1);
  if (multi.length) {
    view.append(h("h2", {}, "Compare versions"),
      h("ul", {}, multi.map((n) => h("li", {}, h("a", { href: `#/models/${enc(n)}/diff` }, `${n}: weight diff between versions`)))));
  }
  view.append(h("p", { class: "muted" }, "Latencies are means over successful requests since the server started, ",
    "across all its worker processes (statistics extension)."));
  await fill;
  table.dataset.filled = "done";
}
