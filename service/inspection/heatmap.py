"""Heat-map plumbing shared by CAM and occlusion: bilinear resizing and normalisation to [0, 1]."""

from __future__ import annotations

import numpy as np


def _axis_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Half-pixel centres, clamped at the border: torch's interpolate(mode="bilinear",
    # align_corners=False) and onnx Resize(coordinate_transformation_mode="half_pixel").
    scale = size_in / size_out
    src = np.maximum((np.arange(size_out) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, src - low


def upsample_bilinear(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [..., h, w] maps to [..., height, width] by bilinear interpolation."""
    rows_lo, rows_hi, row_frac = _axis_weights(maps.shape[-2], height)
    cols_lo, cols_hi, col_frac = _axis_weights(maps.shape[-1], width)
    top: np.ndarray = (
        maps[..., rows_lo, :] * (1.0 - row_frac)[:, None] + maps[..., rows_hi, :] * row_frac[:, None]
    )
    resized: np.ndarray = top[..., cols_lo] * (1.0 - col_frac) + top[..., cols_hi] * col_frac
    return resized


def normalise(maps: np.ndarray) -> np.ndarray:
    """Scale each [h, w] map of a [N, h, w] stack by its maximum; an all-zero map stays zero.

    Inputs are non-negative (ReLU'd CAM, positive score drops), so 0 keeps meaning "no evidence".
    """
    # Gradients of finite scores can still overflow: an infinite value is the most evidence, NaN none.
    maps = np.nan_to_num(maps, nan=0.0, posinf=np.finfo(np.float64).max, neginf=0.0)
    peaks = maps.reshape(maps.shape[0], -1).max(axis=1, initial=0.0)
    safe = np.where(peaks > 0.0, peaks, 1.0)
    return np.clip(maps / safe[:, None, None], 0.0, 1.0)
