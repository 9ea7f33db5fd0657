// Small SVG charts drawn here, with no library: histograms, bars, lines, log-log spectra.
import { s } from "./dom.js";
import { isNum, num } from "./fmt.js";

export const COLORS = { blue: "#0072B2", orange: "#E69F00", green: "#009E73", vermillion: "#D55E00",
  sky: "#56B4E9", purple: "#CC79A7", grey: "#8a94a3" };

function linear(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (x) => r0 + ((x - d0) / span) * (r1 - r0);
}

export function niceTicks(lo, hi, count = 5) {
  if (!isNum(lo) || !isNum(hi)) return [];
  if (lo === hi) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => (hi - lo) / st <= count) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

function svgRoot(width, height, label) {
  return s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label },
    s("title", { text: label }));
}

function axes(g, x, y, xTicks, yTicks, m, width, height, fmtX = num, fmtY = num) {
  const grid = s("g", { class: "grid" });
  const axis = s("g", { class: "axis" });
  for (const t of yTicks) {
    grid.append(s("line", { x1: m.l, x2: width - m.r, y1: y(t), y2: y(t) }));
    axis.append(s("text", { x: m.l - 4, y: y(t) + 4, "text-anchor": "end", text: fmtY(t) }));
  }
  for (const t of xTicks) {
    axis.append(s("line", { x1: x(t), x2: x(t), y1: height - m.b, y2: height - m.b + 4 }));
    axis.append(s("text", { x: x(t), y: height - m.b + 15, "text-anchor": "middle", text: fmtX(t) }));
  }
  axis.append(s("line", { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b }));
  axis.append(s("line", { x1: m.l, x2: m.l, y1: m.t, y2: height - m.b }));
  g.append(grid, axis);
}

function validHistogram(h) {
  return h && Array.isArray(h.edges) && Array.isArray(h.counts) && h.counts.length > 0 &&
    h.edges.length === h.counts.length + 1 && h.edges.every(isNum);
}

/** Histograms on their own edges; several series overlay (same edges expected for a fair comparison). */
export function histogram(series, { width = 460, height = 200, label = "histogram", logY = false,
  xFormat = num, xLabel = "" } = {}) {
  const list = (Array.isArray(series) ? series : [series]).filter((sr) => validHistogram(sr.hist || sr));
  const svg = svgRoot(width, height, label);
  if (!list.length) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", text: "no histogram" }));
    return svg;
  }
  const m = { l: 48, r: 10, t: 8, b: xLabel ? 34 : 22 };
  const lo = Math.min(...list.map((sr) => (sr.hist || sr).edges[0]));
  const hi = Math.max(...list.map((sr) => (sr.hist || sr).edges.at(-1)));
  const tr = (c) => (logY ? Math.log10(1 + c) : c);
  const top = Math.max(1, ...list.flatMap((sr) => (sr.hist || sr).counts.map(tr)));
  const x = linear(lo, hi, m.l, width - m.r);
  const y = linear(0, top, height - m.b, m.t);
  const g = s("g");
  axes(g, x, y, niceTicks(lo, hi, 5), niceTicks(0, top, 4), m, width, height, xFormat,
    logY ? (t) => num(10 ** t - 1, 2) : (t) => num(t, 3));
  svg.append(g); // axes and grid first, so the bars sit on top of the grid lines
  list.forEach((sr, i) => {
    const h = sr.hist || sr;
    const color = sr.color || COLORS.blue;
    const outline = i > 0;
    const group = s("g", { fill: outline ? "none" : color, "fill-opacity": 0.85, stroke: outline ? color : "none",
      "stroke-width": outline ? 2 : 0, "data-series": sr.name || i });
    if (outline) {
      // a step line: the second version's outline over the first version's bars
      let d = `M${x(h.edges[0]).toFixed(1)},${y(0).toFixed(1)}`;
      h.counts.forEach((c, k) => {
        d += `V${y(tr(c)).toFixed(1)}H${x(h.edges[k + 1]).toFixed(1)}`;
      });
      d += `V${y(0).toFixed(1)}`;
      group.append(s("path", { d }));
    }
    h.counts.forEach((c, k) => {
      if (outline) return;
      if (!c) return;
      const x0 = x(h.edges[k]);
      const x1 = x(h.edges[k + 1]);
      group.append(s("rect", { x: x0, y: y(tr(c)), width: Math.max(x1 - x0 - 0.5, 0.8), height: y(0) - y(tr(c)) },
        s("title", { text: `${sr.name ? sr.name + ": " : ""}[${num(h.edges[k])}, ${num(h.edges[k + 1])}) ${c}` })));
    });
    svg.append(group);
  });
  if (xLabel) g.append(s("text", { x: (m.l + width - m.r) / 2, y: height - 4, "text-anchor": "middle", text: xLabel }));
  return svg;
}

/** A tiny histogram for a table cell. */
export function spark(hist, { width = 90, height = 22, color = COLORS.blue } = {}) {
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "histogram" });
  if (!validHistogram(hist)) return svg;
  const top = Math.max(1, ...hist.counts);
  const w = width / hist.counts.length;
  hist.counts.forEach((c, k) => {
    const bh = (c / top) * (height - 1);
    if (bh > 0) svg.append(s("rect", { x: k * w, y: height - bh, width: Math.max(w - 0.3, 0.6), height: bh, fill: color }));
  });
  return svg;
}

/** Vertical bars, one per value (per-channel figures). */
export function bars(values, { width = 460, height = 180, label = "bars", color = COLORS.blue, xLabel = "" } = {}) {
  const svg = svgRoot(width, height, label);
  const vals = (values || []).map((v) => (isNum(v) ? v : 0));
  if (!vals.length) return svg;
  const m = { l: 48, r: 10, t: 8, b: xLabel ? 34 : 22 };
  const lo = Math.min(0, ...vals);
  const hi = Math.max(0, ...vals) || 1;
  const x = linear(0, vals.length, m.l, width - m.r);
  const y = linear(lo, hi, height - m.b, m.t);
  const g = s("g");
  const step = Math.max(1, Math.ceil(vals.length / 10));
  const xt = [];
  for (let i = 0; i < vals.length; i += step) xt.push(i + 0.5);
  axes(g, x, y, xt, niceTicks(lo, hi, 4), m, width, height, (t) => String(Math.floor(t)));
  const group = s("g", { fill: color });
  vals.forEach((v, i) => {
    const y0 = y(Math.max(v, 0));
    const y1 = y(Math.min(v, 0));
    group.append(s("rect", { x: x(i) + 0.5, y: y0, width: Math.max(x(i + 1) - x(i) - 1, 0.8), height: Math.max(y1 - y0, 0.5) },
      s("title", { text: `channel ${i}: ${num(v)}` })));
  });
  if (xLabel) g.append(s("text", { x: (m.l + width - m.r) / 2, y: height - 4, "text-anchor": "middle", text: xLabel }));
  svg.append(g, group);
  return svg;
}

/** Horizontal labelled bars (class scores, per-layer change); `highlight` marks one row. */
export function hbars(rows, { width = 460, label = "bars", color = COLORS.blue, highlight = -1, rowHeight = 20,
  labelWidth = 150, valueFormat = num } = {}) {
  const height = rows.length * rowHeight + 8;
  const svg = svgRoot(width, height, label);
  const vals = rows.map((r) => (isNum(r.value) ? r.value : 0));
  const lo = Math.min(0, ...vals);
  const hi = Math.max(0, ...vals) || 1;
  const x = linear(lo, hi, labelWidth, width - 70);
  rows.forEach((r, i) => {
    const yy = 4 + i * rowHeight;
    const v = vals[i];
    svg.append(s("text", { x: labelWidth - 6, y: yy + rowHeight * 0.68, "text-anchor": "end", text: r.label }));
    svg.append(s("rect", { x: Math.min(x(0), x(v)), y: yy + 3, width: Math.max(Math.abs(x(v) - x(0)), 0.8),
      height: rowHeight - 6, fill: i === highlight ? COLORS.orange : (r.color || color) },
      s("title", { text: `${r.label}: ${valueFormat(r.value)}` })));
    svg.append(s("text", { x: Math.max(x(v), x(0)) + 4, y: yy + rowHeight * 0.68, text: valueFormat(r.value) }));
  });
  return svg;
}

/**
 * A line through values by index (long 1-D outputs: a signal, a spectrum, a sequence of scores).
 * With more points than pixel columns, each column is drawn as the span of its values (min to max),
 * so no peak disappears; non-finite values leave a gap.
 */
export function line(values, { width = 460, height = 180, label = "line", color = COLORS.blue, xLabel = "index" } = {}) {
  const svg = svgRoot(width, height, label);
  const vals = Array.from(values || [], Number);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of vals) if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (vals.length < 2 || !isNum(lo)) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", text: "no values to draw" }));
    return svg;
  }
  if (hi === lo) { lo -= 0.5; hi += 0.5; }
  const m = { l: 48, r: 10, t: 8, b: xLabel ? 34 : 22 };
  const x = linear(0, vals.length - 1, m.l, width - m.r);
  const y = linear(lo, hi, height - m.b, m.t);
  const g = s("g");
  axes(g, x, y, niceTicks(0, vals.length - 1, 5).filter(Number.isInteger), niceTicks(lo, hi, 4), m, width, height,
    (t) => String(t));
  if (xLabel) g.append(s("text", { x: (m.l + width - m.r) / 2, y: height - 4, "text-anchor": "middle", text: xLabel }));
  const columns = Math.max(1, Math.floor(width - m.l - m.r));
  let d = "";
  if (vals.length <= columns * 2) {
    let pen = false;
    vals.forEach((v, i) => {
      if (!isNum(v)) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
  } else {
    const per = vals.length / columns;
    for (let c = 0; c < columns; c += 1) {
      let cmin = Infinity;
      let cmax = -Infinity;
      for (let i = Math.floor(c * per); i < Math.min(vals.length, Math.floor((c + 1) * per)); i += 1) {
        if (isNum(vals[i])) { cmin = Math.min(cmin, vals[i]); cmax = Math.max(cmax, vals[i]); }
      }
      if (!isNum(cmin)) continue;
      const px = (m.l + c + 0.5).toFixed(1);
      d += `${d ? "L" : "M"}${px},${y(cmax).toFixed(1)}L${px},${y(cmin).toFixed(1)}`;
    }
  }
  svg.append(g, s("path", { d, fill: "none", stroke: color, "stroke-width": 1.5, "data-series": "values",
    "data-points": vals.length }));
  return svg;
}

/**
 * The empirical spectral density on log-log axes: eigenvalues binned on log-spaced bins
 * (`esd` = {edges: log10 λ, counts, total}), drawn as a density per unit λ, and the fitted power
 * law p(λ) = (α-1)/xmin · (λ/xmin)^-α over the tail λ ≥ xmin, scaled by the tail's share of the
 * eigenvalues (num_pl_spikes / total) so both curves are densities of the same sample.
 */
export function spectrum(esd, fit, { width = 460, height = 220, label = "eigenvalue spectrum" } = {}) {
  const svg = svgRoot(width, height, label);
  if (!esd || !esd.total || esd.counts.length < 1) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", text: "no eigenvalues" }));
    return svg;
  }
  const m = { l: 48, r: 10, t: 8, b: 34 };
  const edges = esd.edges;
  const counts = esd.counts;
  const lo = edges[0];
  const hi = edges.at(-1);
  const dens = counts.map((c, k) => c / esd.total / (10 ** edges[k + 1] - 10 ** edges[k]));
  const curve = [];
  const alpha = fit && fit.alpha;
  const xmin = fit && fit.xmin;
  if (isNum(alpha) && isNum(xmin) && xmin > 0 && alpha > 1 && isNum(fit.num_pl_spikes)) {
    const share = fit.num_pl_spikes / esd.total;
    for (let i = 0; i <= 40; i += 1) {
      const lv = Math.log10(xmin) + ((hi - Math.log10(xmin)) * i) / 40;
      const lam = 10 ** lv;
      curve.push([lv, share * ((alpha - 1) / xmin) * (lam / xmin) ** -alpha]);
    }
  }
  const ys = [...dens.filter((d) => d > 0), ...curve.map((c) => c[1]).filter((d) => d > 0)].map(Math.log10);
  const ylo = Math.floor(Math.min(...ys));
  const yhi = Math.ceil(Math.max(...ys));
  const x = linear(lo, hi, m.l, width - m.r);
  const y = linear(ylo, yhi === ylo ? ylo + 1 : yhi, height - m.b, m.t);
  const g = s("g");
  const exp = (t) => `1e${Math.round(t)}`;
  let xTicks = [];
  for (let t = Math.ceil(lo); t <= Math.floor(hi); t += 1) xTicks.push(t);
  if (xTicks.length < 2) xTicks = [lo, hi];
  axes(g, x, y, xTicks, niceTicks(ylo, yhi, 4).filter((t) => Number.isInteger(t)),
    m, width, height, (t) => (Number.isInteger(t) ? exp(t) : num(10 ** t, 2)), exp);
  g.append(s("text", { x: (m.l + width - m.r) / 2, y: height - 4, "text-anchor": "middle", text: "eigenvalue λ (log)" }));
  const group = s("g", { fill: COLORS.blue, "fill-opacity": 0.75, "data-series": "esd" });
  dens.forEach((d, k) => {
    if (d <= 0) return;
    const x0 = x(edges[k]);
    group.append(s("rect", { x: x0, y: y(Math.log10(d)), width: Math.max(x(edges[k + 1]) - x0 - 0.5, 0.8),
      height: Math.max(y(ylo) - y(Math.log10(d)), 0) }, s("title", { text: `${counts[k]} eigenvalues` })));
  });
  svg.append(g, group);
  if (curve.length) {
    const d = curve.map(([lv, p], i) => `${i ? "L" : "M"}${x(lv).toFixed(1)},${y(Math.log10(p)).toFixed(1)}`).join("");
    svg.append(s("path", { d, fill: "none", stroke: COLORS.vermillion, "stroke-width": 2.5, "stroke-dasharray": "6 3",
      "data-series": "fit" }, s("title", { text: `power law α = ${num(alpha, 3)}, xmin = ${num(xmin)}` })));
    svg.append(s("line", { x1: x(Math.log10(xmin)), x2: x(Math.log10(xmin)), y1: m.t, y2: height - m.b,
      stroke: COLORS.green, "stroke-width": 1.5 }, s("title", { text: `xmin = ${num(xmin)}` })));
  }
  return svg;
}
