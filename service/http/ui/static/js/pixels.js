// Images on canvases: a drawing pad for 8x8 digits, grey, RGB or colour-mapped images, heat-map overlays.
const VIRIDIS = [[68, 1, 84], [65, 68, 135], [42, 120, 142], [34, 168, 132], [122, 209, 81], [253, 231, 37]];

export function viridis(t) {
  const x = Math.min(Math.max(Number.isFinite(t) ? t : 0, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + (VIRIDIS[i + 1][k] - c) * f));
}

const clamp01 = (x) => Math.min(Math.max(Number.isFinite(x) ? x : 0, 0), 1);

/**
 * An image of `values` (row-major; several channels planar, as in [C, H, W]) drawn over the whole
 * canvas: one channel in grey (`gray_r`: low white, high black, as scikit-learn shows its digits;
 * `gray`: the other way) or the viridis colour map, three channels as RGB; `min`..`max` is the
 * value range. An optional heat overlay in [0, 1] has the image's height and width.
 */
export function paint(canvas, values, { side = 8, height = side, width = side, channels = 1, min = 0, max = 16,
  heat = null, heatAlpha = 0.6, colormap = "gray_r" } = {}) {
  const plane = height * width;
  const span = max - min || 1;
  const level = (v) => clamp01((Number(v) - min) / span);
  const image = new ImageData(Math.max(width, 1), Math.max(height, 1));
  for (let p = 0; p < plane; p += 1) {
    let rgb;
    if (channels === 3) rgb = [0, 1, 2].map((c) => Math.round(255 * level(values[c * plane + p])));
    else if (colormap === "viridis") rgb = viridis(level(values[p]));
    else {
      const g = Math.round(255 * (colormap === "gray" ? level(values[p]) : 1 - level(values[p])));
      rgb = [g, g, g];
    }
    if (heat) {
      const hc = viridis(Number(heat[p]));
      rgb = rgb.map((x, k) => Math.round(x * (1 - heatAlpha) + hc[k] * heatAlpha));
    }
    image.data.set([rgb[0], rgb[1], rgb[2], 255], p * 4);
  }
  const scratch = document.createElement("canvas");
  scratch.width = image.width;
  scratch.height = image.height;
  scratch.getContext("2d").putImageData(image, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false; // each value stays a crisp block
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(scratch, 0, 0, canvas.width, canvas.height);
}

/** A canvas showing an image (see `paint`); its longer side is `size` pixels (default 160, more for large images). */
export function imageCanvas(values, label, opts = {}) {
  const height = opts.height || opts.side || 8;
  const width = opts.width || opts.side || 8;
  const longest = Math.max(height, width, 1);
  const size = opts.size || (longest <= 160 ? 160 : Math.min(longest, 320));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round((size * width) / longest));
  canvas.height = Math.max(1, Math.round((size * height) / longest));
  canvas.className = "pixels";
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  paint(canvas, values, { ...opts, height, width });
  return canvas;
}

/** A drawing pad: pointer strokes or the keyboard (arrows move, Space paints, Delete erases). */
export class DrawingPad {
  constructor({ side = 8, size = 256, min = 0, max = 16, id = "pad", label = "", onChange = () => {} } = {}) {
    this.side = side;
    this.min = min;
    this.max = max;
    this.values = new Float32Array(side * side).fill(min);
    this.cursor = [3, 3];
    this.focused = false;
    this.onChange = onChange;
    const canvas = document.createElement("canvas");
    canvas.width = size;
    canvas.height = size;
    canvas.className = "pad";
    canvas.id = id;
    canvas.tabIndex = 0;
    canvas.setAttribute("role", "application");
    canvas.setAttribute("aria-label",
      `${label}${side} by ${side} drawing pad: draw with the mouse, or move with the arrow keys, Space to paint, Delete to erase`);
    this.canvas = canvas;
    let drawing = false;
    const cellAt = (ev) => {
      const rect = canvas.getBoundingClientRect();
      const c = Math.floor(((ev.clientX - rect.left) / rect.width) * side);
      const r = Math.floor(((ev.clientY - rect.top) / rect.height) * side);
      return r >= 0 && r < side && c >= 0 && c < side ? [r, c] : null;
    };
    canvas.addEventListener("pointerdown", (ev) => {
      drawing = true;
      canvas.setPointerCapture?.(ev.pointerId);
      const cell = cellAt(ev);
      if (cell) this.stroke(...cell);
      ev.preventDefault();
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (!drawing) return;
      const cell = cellAt(ev);
      if (cell) this.stroke(...cell);
    });
    const end = () => {
      if (drawing) { drawing = false; this.changed(); }
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("focus", () => { this.focused = true; this.draw(); });
    canvas.addEventListener("blur", () => { this.focused = false; this.draw(); });
    canvas.addEventListener("keydown", (ev) => this.key(ev));
    this.draw();
  }

  stroke(r, c) {
    // the pen leaves full ink where it passes and a lighter edge around it, like the data set's strokes
    const s = this.side;
    this.values[r * s + c] = this.max;
    for (const [dr, dc] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      const rr = r + dr;
      const cc = c + dc;
      if (rr >= 0 && rr < s && cc >= 0 && cc < s) this.values[rr * s + cc] = Math.max(this.values[rr * s + cc], (this.min + this.max) / 2);
    }
    this.draw();
  }

  key(ev) {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (moves[ev.key]) {
      const [dr, dc] = moves[ev.key];
      this.cursor = [Math.min(Math.max(this.cursor[0] + dr, 0), this.side - 1), Math.min(Math.max(this.cursor[1] + dc, 0), this.side - 1)];
      if (ev.shiftKey) this.stroke(...this.cursor);
      this.draw();
    } else if (ev.key === " " || ev.key === "Enter") {
      this.stroke(...this.cursor);
      this.changed();
    } else if (ev.key === "Delete" || ev.key === "Backspace") {
      this.values[this.cursor[0] * this.side + this.cursor[1]] = this.min;
      this.draw();
      this.changed();
    } else return;
    ev.preventDefault();
  }

  /** New pixels; `quiet` leaves onChange uncalled (the caller runs the model itself). */
  set(values, { quiet = false } = {}) {
    this.values = Float32Array.from(values);
    this.draw();
    if (!quiet) this.changed();
  }

  clear() {
    this.values.fill(this.min);
    this.draw();
    this.changed();
  }

  changed() {
    this.canvas.dataset.pixels = JSON.stringify(Array.from(this.values));
    this.onChange(Array.from(this.values));
  }

  draw() {
    paint(this.canvas, this.values, { side: this.side, min: this.min, max: this.max });
    const ctx = this.canvas.getContext("2d");
    const cell = this.canvas.width / this.side;
    ctx.strokeStyle = "rgba(0,0,0,0.12)";
    ctx.lineWidth = 1;
    for (let i = 1; i < this.side; i += 1) {
      ctx.beginPath(); ctx.moveTo(i * cell, 0); ctx.lineTo(i * cell, this.canvas.height); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, i * cell); ctx.lineTo(this.canvas.width, i * cell); ctx.stroke();
    }
    if (this.focused) {
      ctx.strokeStyle = "#D55E00";
      ctx.lineWidth = 3;
      ctx.strokeRect(this.cursor[1] * cell + 1.5, this.cursor[0] * cell + 1.5, cell - 3, cell - 3);
    }
    this.canvas.dataset.pixels = JSON.stringify(Array.from(this.values));
  }
}
