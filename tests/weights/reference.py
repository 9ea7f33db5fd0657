"""Independent, whole-array numpy computations of every statistic, written from the definitions."""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"p0.1": 0.001, "p1": 0.01, "p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95,
             "p99": 0.99, "p99.9": 0.999}


def _sqnr(x: np.ndarray, scale: np.ndarray | float) -> float | None:
    s = np.where(np.asarray(scale) > 0, scale, 1.0)
    q = np.clip(np.round(x / s), -127, 127) * s
    err = float(np.sum((x - q) ** 2))
    signal = float(np.sum(x**2))
    if signal <= 0 or err <= 0:
        return None
    return float(10 * np.log10(signal / err))


def reference_stats(values: np.ndarray, out_axis: int | None) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)
    flat = x.reshape(-1)
    n = flat.size
    mean = flat.mean()
    d = flat - mean
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    lo, hi = flat.min(), flat.max()
    counts, edges = np.histogram(flat, bins=64) if lo != hi else (np.array([n]), np.array([lo - 0.5, lo + 0.5]))
    a = np.abs(flat)
    std = np.sqrt(m2)
    ref: dict[str, Any] = {
        "numel": n,
        "shape": list(x.shape),
        "min": lo,
        "max": hi,
        "abs_max": a.max(),
        "mean": mean,
        "std": np.std(flat),
        "rms": np.sqrt(np.mean(flat**2)),
        "l1": a.sum(),
        "l2": np.linalg.norm(flat),
        "skewness": m3 / m2**1.5 if m2 > 0 else None,
        "excess_kurtosis": m4 / m2**2 - 3 if m2 > 0 else None,
        "zero_fraction": np.count_nonzero(flat == 0) / n,
        "nan_count": 0,
        "inf_count": 0,
        "quantiles": {k: np.quantile(flat, q) for k, q in QUANTILES.items()},
        "histogram": {"edges": edges, "counts": counts},
        "outlier_fraction_3sigma": np.count_nonzero(np.abs(d) > 3 * std) / n,
        "outlier_fraction_6sigma": np.count_nonzero(np.abs(d) > 6 * std) / n,
        "fp16_overflow": int(np.count_nonzero(a > 65504)),
        "fp16_subnormal": int(np.count_nonzero((a > 0) & (a < 2.0**-14))),
        "sqnr_per_tensor": _sqnr(flat, a.max() / 127),
    }
    if out_axis is not None and x.ndim:
        moved = np.moveaxis(x, out_axis, 0).reshape(x.shape[out_axis], -1)
        absmax = np.abs(moved).max(axis=1)
        ref["per_channel"] = {
            "abs_max": absmax,
            "l2": np.linalg.norm(moved, axis=1),
            "mean": moved.mean(axis=1),
            "std": moved.std(axis=1),
        }
        ref["sqnr_per_channel"] = _sqnr(moved, (absmax / 127)[:, None])
        median = np.median(absmax)
        ref["channel_range_ratio"] = absmax.max() / median if median > 0 else None
    return ref


def _close(got: Any, want: Any, what: str, rtol: float, atol: float) -> None:
    if want is None:
        assert got is None, what
        return
    assert got is not None, what
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                               rtol=rtol, atol=atol, err_msg=what)


def assert_stats_match(stats: dict[str, Any], values: np.ndarray, out_axis: int | None, label: str) -> None:
    """Every statistic the service reports against the reference (relative 1e-9)."""
    ref = reference_stats(values, out_axis)
    scale = max(float(ref["abs_max"]), 1e-30)
    rtol, atol = 1e-9, 1e-12 * scale
    for key in ("numel", "shape", "nan_count", "inf_count", "fp16_overflow", "fp16_subnormal"):
        got = stats[key] if key in stats else stats["quant_readiness"][key]
        assert got == ref[key], f"{label}: {key}"
    for key in ("min", "max", "abs_max", "mean", "std", "rms", "zero_fraction"):
        _close(stats[key], ref[key], f"{label}: {key}", rtol, atol)
    _close(stats["l1"], ref["l1"], f"{label}: l1", rtol, atol * ref["numel"])
    _close(stats["l2"], ref["l2"], f"{label}: l2", rtol, atol)
    for key in ("skewness", "excess_kurtosis"):
        _close(stats[key], ref[key], f"{label}: {key}", 1e-7, 1e-9)
    for key, want in ref["quantiles"].items():
        _close(stats["quantiles"][key], want, f"{label}: quantile {key}", rtol, atol)
    _close(stats["histogram"]["edges"], ref["histogram"]["edges"], f"{label}: edges", rtol, atol)
    assert stats["histogram"]["counts"] == ref["histogram"]["counts"].tolist(), f"{label}: histogram counts"
    readiness = stats["quant_readiness"]
    for key in ("outlier_fraction_3sigma", "outlier_fraction_6sigma"):
        _close(readiness[key], ref[key], f"{label}: {key}", rtol, 0)
    _close(readiness["int8_sqnr_db"]["per_tensor"], ref["sqnr_per_tensor"], f"{label}: sqnr", 1e-9, 1e-9)
    if out_axis is None or not np.ndim(values):
        assert stats["per_channel"] is None, label
        return
    for key, want in ref["per_channel"].items():
        _close(stats["per_channel"][key], want, f"{label}: per-channel {key}", rtol, atol)
    _close(readiness["int8_sqnr_db"]["per_channel"], ref["sqnr_per_channel"], f"{label}: sqnr/ch", 1e-9, 1e-9)
    _close(readiness["channel_range_ratio"], ref["channel_range_ratio"], f"{label}: range ratio", rtol, 0)
