// The heat map /explain returns, over the input image it explains. The page sends no method: the
// server picks CAM where it is exact, Grad-CAM through the head where it can be differentiated,
// occlusion otherwise, and the panel says which it used.
import { h, kv } from "./dom.js";
import { text, shape as shapeText } from "./fmt.js";
import { imageCanvas } from "./pixels.js";

const METHOD_NAMES = { cam: "CAM", "grad-cam": "Grad-CAM", occlusion: "Occlusion" };

export function methodName(method) {
  return METHOD_NAMES[method] || text(method);
}

/** images: the explained input's first sample ({ data, channels, height, width, range }); labels: the manifest's. */
export function heatmapPanel(explained, images, labels) {
  const method = methodName(explained.method);
  const target = Array.isArray(explained.targets) ? explained.targets[0] : undefined;
  const names = Array.isArray(explained.labels) ? explained.labels : labels;
  const label = names && names[target] !== undefined ? String(names[target]) : text(target);
  const grid = Array.isArray(explained.heatmaps) ? explained.heatmaps[0] : null;
  const heat = Array.isArray(grid) ? grid.flat() : [];
  const height = Array.isArray(grid) ? grid.length : 0;
  const width = height ? grid[0].length : 0;
  const title = `${method} heat map for class ${label}`;
  let picture;
  if (images && images.height === height && images.width === width && heat.length === height * width) {
    const plane = images.channels * height * width;
    picture = imageCanvas(images.data.slice(0, plane), title, { height, width, channels: images.channels,
      min: images.range[0], max: images.range[1], heat, heatAlpha: 0.8, size: 176 });
  } else if (heat.length) {
    picture = imageCanvas(heat, title, { height, width, min: 0, max: 1, colormap: "viridis", size: 176 });
  } else {
    picture = h("p", { class: "muted" }, "no heat map in the answer");
  }
  const feature = explained.feature_map || {};
  const head = Array.isArray(explained.head) ? explained.head.join(" → ") : null;
  return h("section", { class: "panel", id: "heatmap", dataset: { method: text(explained.method), target: text(target) } },
    h("h3", {}, "Heat map (/explain)"),
    h("div", { class: "row" },
      h("figure", { class: "figure" }, picture, h("figcaption", {}, `${title} (viridis: yellow = most evidence)`)),
      kv([
        ["Method", `${method} (chosen by the server)`],
        ["Scored output", text(explained.scores_output)],
        ["Head", text(head)],
        ["Feature map", feature.name ? `${feature.name} ${shapeText(feature.shape)}` : "—"],
      ])));
}
