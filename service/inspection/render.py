"""Heat maps drawn over their inputs as one PNG (Pillow only, no plotting library)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Anchor colours of a dark-to-bright map (black, purple, red, orange, pale yellow): heat reads as
# brightness even in greyscale print.
_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
    dtype=np.float64,
)
# Heat weight grows with the heat, so cold areas still show the input underneath.
_HEAT_FLOOR = 0.2
_HEAT_SPAN = 0.7
_GAP = 4


def colormap(heat: np.ndarray) -> np.ndarray:
    """[H, W] values in [0, 1] -> [H, W, 3] uint8 colours (NaN as 0: its floor would index nothing)."""
    position = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.minimum(np.floor(position).astype(np.int64), len(_ANCHORS) - 2)
    frac = (position - low)[..., None]
    colours: np.ndarray = np.rint(_ANCHORS[low] * (1.0 - frac) + _ANCHORS[low + 1] * frac)
    return colours.astype(np.uint8)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """One [C, H, W] input scaled to [0, 1] as RGB (three channels as colour, else their mean as grey)."""
    data = np.asarray(image, np.float64)
    planes = data if data.shape[0] == 3 else np.repeat(data.mean(axis=0, keepdims=True), 3, axis=0)
    low, high = float(planes.min()), float(planes.max())
    scaled = (planes - low) / (high - low) if high > low else np.zeros_like(planes)
    return np.moveaxis(scaled, 0, -1)


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """One [C, H, W] input with its [H, W] heat map blended over it, as [H, W, 3] uint8."""
    weight: np.ndarray = (_HEAT_FLOOR + _HEAT_SPAN * np.clip(heat, 0.0, 1.0))[..., None]
    blended: np.ndarray = np.rint(
        np.clip((1.0 - weight) * _as_rgb(image) * 255.0 + weight * colormap(heat), 0, 255)
    )
    return blended.astype(np.uint8)


def heatmap_png(images: np.ndarray, heatmaps: np.ndarray, size: int = 256) -> bytes:
    """PNG with one column per [N, C, H, W] input: the input on top, its heat map over it below;
    each picture about `size` pixels on its longer side (whole-pixel nearest-neighbour scaling)."""
    height, width = heatmaps.shape[-2:]
    scale = max(1, size // max(height, width))
    step_x, step_y = width * scale + _GAP, height * scale + _GAP
    sheet = Image.new("RGB", (len(images) * step_x - _GAP, 2 * step_y - _GAP), "white")
    for i, (image, heat) in enumerate(zip(images, heatmaps, strict=True)):
        plain = np.rint(_as_rgb(image) * 255.0).astype(np.uint8)
        for row, picture in enumerate((plain, overlay(image, heat))):
            tile = Image.fromarray(picture).resize((width * scale, height * scale), Image.Resampling.NEAREST)
            sheet.paste(tile, (i * step_x, row * step_y))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
