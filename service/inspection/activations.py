"""Statistics of one intermediate value over a batch, computed in float64.

Definitions: ``std`` is the population standard deviation (ddof = 0); ``zero_fraction`` counts
exact zeros (a dead ReLU unit outputs exactly 0); the channel axis is axis 1 ([N, C, ...] maps and
[N, features] vectors alike); a channel is *never active* when none of its values over the whole
batch is > 0. The histogram has equal-width bins on [min, max], the last bin closed, and one bin
[c - 0.5, c + 0.5] when every value equals c (the TensorBoard rule). NaN and ±inf are counted and
left out of every other statistic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_BINS = 64
MAX_BINS = 1024


def histogram(finite: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, list[float] | list[int]]:
    """Equal-width histogram of a flat float64 array of finite values."""
    if finite.size == 0:
        return {"edges": [], "counts": []}
    low, high = float(finite.min()), float(finite.max())
    if low == high:
        return {"edges": [low - 0.5, low + 0.5], "counts": [int(finite.size)]}
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def value_stats(value: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The statistics block for one promoted value of shape [N, ...]."""
    data = np.asarray(value, dtype=np.float64)
    finite_mask = np.isfinite(data)
    finite = data[finite_mask]
    stats: dict[str, Any] = {
        "shape": list(data.shape),
        "numel": int(data.size),
        "nan_count": int(np.isnan(data).sum()),
        "inf_count": int(np.isinf(data).sum()),
    }
    if finite.size:
        stats |= {
            "mean": float(finite.mean()),
            "std": float(finite.std()),
            "min": float(finite.min()),
            "max": float(finite.max()),
            "zero_fraction": float(np.count_nonzero(finite == 0.0) / finite.size),
        }
    else:
        stats |= dict.fromkeys(("mean", "std", "min", "max", "zero_fraction"))
    stats["histogram"] = histogram(finite, bins)
    stats |= _per_channel(np.where(finite_mask, data, np.nan))
    return stats


def _per_channel(data: np.ndarray) -> dict[str, Any]:
    if data.ndim < 2 or data.shape[0] == 0:
        return {
            "channel_axis": None,
            "per_channel_mean": None,
            "never_active_channels": None,
            "never_active_fraction": None,
        }
    per_channel = np.moveaxis(data, 1, 0).reshape(data.shape[1], -1)
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(per_channel)
        counts = valid.sum(axis=1)
        sums = np.where(valid, per_channel, 0.0).sum(axis=1)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        active = np.where(valid, per_channel > 0.0, False).any(axis=1)
    never_active = np.flatnonzero(~active)
    return {
        "channel_axis": 1,
        "per_channel_mean": [None if np.isnan(m) else float(m) for m in means],
        "never_active_channels": never_active.tolist(),
        "never_active_fraction": float(never_active.size / per_channel.shape[0]),
    }
