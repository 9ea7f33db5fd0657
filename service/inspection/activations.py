"""Statistics of one intermediate value over a batch, computed in float64.

Definitions: ``std`` is the population standard deviation (ddof = 0); ``zero_fraction`` counts
exact zeros (a dead ReLU unit outputs exactly 0); the channel axis is the one after the value's batch
axis (axis 1 of [N, C, ...] maps and [N, features] vectors; axis 2 of a [layers, N, hidden] recurrent
state); a channel is *never active* when none of its values over the whole batch is > 0. The
histogram is the weight statistics' one (`service.weights.tensor_stats.value_histogram`): equal-width
bins on [min, max], the last bin closed, one bin [c - 0.5, c + 0.5] when every value equals c, and one
bin [min, max] when the range is too narrow for distinct bins. NaN and ±inf are counted and left out
of every other statistic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.weights.tensor_stats import DEFAULT_BINS, MAX_BINS, value_histogram

__all__ = ["DEFAULT_BINS", "MAX_BINS", "value_stats"]


def value_stats(value: np.ndarray, bins: int = DEFAULT_BINS, batch_axis: int | None = 0) -> dict[str, Any]:
    """The statistics block for one promoted value whose samples lie along `batch_axis` (None: the
    value has no batch axis, and its axis 1 counts as the channel axis as in [1, C, ...])."""
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
    stats["histogram"] = value_histogram(finite, bins)
    stats["batch_axis"] = batch_axis if batch_axis is not None and batch_axis < data.ndim else None
    channel_axis = 1 if batch_axis is None else batch_axis + 1
    stats |= _per_channel(np.where(finite_mask, data, np.nan), channel_axis)
    return stats


def _per_channel(data: np.ndarray, axis: int) -> dict[str, Any]:
    if data.ndim <= axis or data.size == 0:
        return {
            "channel_axis": None,
            "per_channel_mean": None,
            "never_active_channels": None,
            "never_active_fraction": None,
        }
    per_channel = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(per_channel)
        counts = valid.sum(axis=1)
        sums = np.where(valid, per_channel, 0.0).sum(axis=1)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        active = np.where(valid, per_channel > 0.0, False).any(axis=1)
    never_active = np.flatnonzero(~active)
    return {
        "channel_axis": axis,
        "per_channel_mean": [None if np.isnan(m) else float(m) for m in means],
        "never_active_channels": never_active.tolist(),
        "never_active_fraction": float(never_active.size / per_channel.shape[0]),
    }
