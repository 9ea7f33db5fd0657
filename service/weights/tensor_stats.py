"""Per-tensor statistics in float64 over dequantized values, computed block by block.

Definitions (the API documents the same): ``std`` is the population standard deviation (ddof=0);
skewness and excess kurtosis use population central moments and are null when the variance is 0;
quantiles use numpy's default ('linear', Hyndman-Fan type 7). NaN and Inf are counted, and every
other statistic is taken over the finite values only. Histograms use equal-width bins with numpy's
edges rule (last bin closed); when all values are equal there is one bin [c - 0.5, c + 0.5], and
one bin [min, max] when the range is too narrow (or too wide) for the bins to be distinct. The
log-magnitude histogram is computed in float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from service.errors import InvalidRequest
from service.weights.quantiles import QuantileLocator
from service.weights.values import TensorValues

DEFAULT_BINS = 64
MAX_BINS = 1024
RANGES = ("minmax", "symmetric")
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
INT8_LEVELS = 127


def finite(value: float) -> float | None:
    """JSON has no NaN or Inf: they become null."""
    value = float(value)
    return value if np.isfinite(value) else None


def finite_list(values: np.ndarray) -> list[float | None]:
    return [finite(v) for v in values.tolist()]


@dataclass(frozen=True, slots=True)
class HistogramSpec:
    """Equal-width bins on [low, high]; values outside are counted, not binned."""

    bins: int
    low: float
    high: float

    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)


def check_histogram_request(bins: int, range_name: str) -> None:
    if not 1 <= bins <= MAX_BINS:
        raise InvalidRequest(f"bins must be between 1 and {MAX_BINS}, got {bins}")
    if range_name not in RANGES:
        raise InvalidRequest(f"range must be one of {', '.join(RANGES)}, got {range_name!r}")


def histogram_spec(bins: int, range_name: str, low: float, high: float, abs_max: float) -> HistogramSpec:
    """The bins for a value range: min..max, or symmetric around 0 (TensorBoard rule when empty-width)."""
    check_histogram_request(bins, range_name)
    if range_name == "symmetric":
        low, high = -abs_max, abs_max
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = 0.0, 0.0
    if low == high:
        below, above = low - 0.5, high + 0.5
        if not below < above:  # |c| beyond 2**53: the half-unit margin vanishes
            below, above = np.nextafter(low, -np.inf), np.nextafter(high, np.inf)
        return HistogramSpec(1 if range_name == "minmax" else bins, float(below), float(above))
    edges = np.linspace(low, high, bins + 1)
    if not np.isfinite(high - low) or np.any(edges[:-1] >= edges[1:]):
        return HistogramSpec(1, low, high)  # too narrow, or too wide for float64: one bin
    return HistogramSpec(bins, low, high)


@dataclass(slots=True)
class _FirstPass:
    channels: int
    count: int = 0
    nan: int = 0
    inf: int = 0
    zeros: int = 0
    low: float = np.inf
    high: float = -np.inf
    min_nonzero_abs: float = np.inf
    fp16_overflow: int = 0
    fp16_subnormal: int = 0
    sums: np.ndarray = field(init=False)
    sq_sums: np.ndarray = field(init=False)
    abs_sums: np.ndarray = field(init=False)
    abs_max: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sums = np.zeros(self.channels)
        self.sq_sums = np.zeros(self.channels)
        self.abs_sums = np.zeros(self.channels)
        self.abs_max = np.zeros(self.channels)
        self.counts = np.zeros(self.channels, dtype=np.int64)

    def add(self, channels: slice, x: np.ndarray) -> None:
        ok = np.isfinite(x)
        xs = x
        present = np.full(x.shape[1], x.shape[0] * x.shape[2], dtype=np.int64)
        masked = 0
        if not ok.all():
            self.nan += int(np.isnan(x).sum())
            self.inf += int(np.isinf(x).sum())
            xs = x[ok]
            x = np.where(ok, x, 0.0)  # a zero adds nothing to sums, norms or abs maxima
            present = ok.sum(axis=(0, 2))
            masked = int(ok.size - xs.size)
        a = np.abs(x)
        self.count += int(present.sum())
        self.counts[channels] += present
        zeros = int(np.count_nonzero(x == 0.0))  # masked entries included
        self.zeros += zeros - masked
        if xs.size:
            self.low = min(self.low, float(xs.min()))
            self.high = max(self.high, float(xs.max()))
        smallest = float(a.min()) if not zeros else float(np.where(a > 0, a, np.inf).min())
        self.min_nonzero_abs = min(self.min_nonzero_abs, smallest)
        self.fp16_overflow += int(np.count_nonzero(a > FP16_MAX))
        self.fp16_subnormal += int(np.count_nonzero(a < FP16_MIN_NORMAL)) - zeros
        self.sums[channels] += x.sum(axis=(0, 2))
        self.sq_sums[channels] += np.einsum("ocj,ocj->c", x, x)
        self.abs_sums[channels] += a.sum(axis=(0, 2))
        np.maximum(self.abs_max[channels], a.max(axis=(0, 2)), out=self.abs_max[channels])


@dataclass(slots=True)
class _SecondPass:
    mean: float
    channel_means: np.ndarray
    threshold: float
    histogram: HistogramSpec
    log_histogram: HistogramSpec | None
    scale: float
    channel_scales: np.ndarray | None
    locator: QuantileLocator
    m2: float = 0.0
    m3: float = 0.0
    m4: float = 0.0
    out3: int = 0
    out6: int = 0
    err_tensor: float = 0.0
    err_channel: float = 0.0
    channel_m2: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)
    log_counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.channel_m2 = np.zeros(self.channel_means.size)
        self.counts = np.zeros(self.histogram.bins, dtype=np.int64)
        self.log_counts = np.zeros(self.log_histogram.bins if self.log_histogram else 0, dtype=np.int64)

    def add(self, channels: slice, x: np.ndarray) -> None:
        ok = np.isfinite(x)
        clean = bool(ok.all())
        xs = (x if clean else x[ok]).reshape(-1)  # tensor-wide figures: finite values only
        d = xs - self.mean
        d2 = d * d
        self.m2 += float(d2.sum())
        self.m3 += float(np.vdot(d2, d))
        self.m4 += float(np.vdot(d2, d2))
        if self.channel_scales is not None:
            xc = x if clean else np.where(ok, x, self.channel_means[None, channels, None])
            dc = xc - self.channel_means[channels, None]
            self.channel_m2[channels] += np.einsum("ocj,ocj->c", dc, dc)
        # |d| > k·t compared as d² > k²·t², reusing d².
        t2 = self.threshold * self.threshold
        self.out3 += int(np.count_nonzero(d2 > 9 * t2))
        self.out6 += int(np.count_nonzero(d2 > 36 * t2))
        del d, d2
        self.locator.add(xs)
        self.counts += bin_counts(xs, self.histogram)
        if self.log_histogram is not None and xs.size:
            with np.errstate(over="ignore", divide="ignore"):  # float64 extremes leave float32's range
                logs = xs.astype(np.float32)  # plenty for a log scale, and half the traffic
                np.abs(logs, out=logs)
                if not logs.min() > 0:
                    logs = logs[logs > 0]
                np.log10(logs, out=logs)
            self.log_counts += bin_counts(logs, self.log_histogram)
        self.err_tensor += _int8_error(xs, self.scale)
        if self.channel_scales is not None:
            xz = x if clean else np.where(ok, x, 0.0)
            self.err_channel += _int8_error(xz, self.channel_scales[channels, None])


def bin_counts(x: np.ndarray, spec: HistogramSpec) -> np.ndarray:
    if spec.bins == 1:  # also covers ranges too wide for numpy's bin arithmetic
        return np.array([np.count_nonzero((x >= spec.low) & (x <= spec.high))])
    counts, _ = np.histogram(x, bins=spec.bins, range=(spec.low, spec.high))
    return counts


def _int8_error(x: np.ndarray, scale: float | np.ndarray) -> float:
    """Σ (x - s·clip(round(x/s), -127, 127))² on one temporary. With s = abs_max/127, |x/s| <= 127
    (up to rounding that round() absorbs), so the clip never acts and is left out."""
    s = np.where(np.asarray(scale) > 0, scale, 1.0)
    r = x / s
    np.round(r, out=r)
    r *= s
    np.subtract(x, r, out=r)
    flat = r.reshape(-1)
    return float(np.vdot(flat, flat))


def histogram_counts(values: TensorValues, spec: HistogramSpec) -> dict[str, Any]:
    """A histogram on given bins; values outside them are counted below / above."""
    counts = np.zeros(spec.bins, dtype=np.int64)
    below = above = 0
    for block in values.blocks():
        x = block.values[np.isfinite(block.values)]
        counts += bin_counts(x, spec)
        below += int(np.count_nonzero(x < spec.low))
        above += int(np.count_nonzero(x > spec.high))
    return histogram_json(spec, counts) | {"below": below, "above": above}


def histogram_json(spec: HistogramSpec, counts: np.ndarray) -> dict[str, Any]:
    return {"bins": spec.bins, "edges": [float(e) for e in spec.edges()], "counts": [int(c) for c in counts]}


def value_histogram(finite_values: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The histogram of a flat float64 array of finite values on [min, max], by the module's rules
    (one bin when all values are equal or the range is too narrow for distinct bins). Shared by the
    weight statistics and the activation statistics."""
    if finite_values.size == 0:
        return {"bins": 0, "edges": [], "counts": []}
    low, high = float(finite_values.min()), float(finite_values.max())
    spec = histogram_spec(bins, "minmax", low, high, max(abs(low), abs(high)))
    return histogram_json(spec, bin_counts(finite_values, spec))


def _finite_blocks(values: TensorValues, filter_nonfinite: bool) -> Iterator[np.ndarray]:
    for block in values.blocks():
        x = block.values.reshape(-1)
        yield x[np.isfinite(x)] if filter_nonfinite else x


MAX_CHANNELS = 1 << 16
"""Per-channel figures stop here: an embedding of millions of rows would hold several arrays of that
length during the passes and a JSON list of each in the answer, larger than the tensor itself."""


def tensor_stats(values: TensorValues) -> dict[str, Any]:
    """Every statistic of one tensor, as JSON-ready values (an overflow gives null, never an error)."""
    channels = values.channels
    if channels > MAX_CHANNELS and values.quant_axis is None:
        with np.errstate(all="ignore"):
            stats = _tensor_stats(replace(values, out_axis=None))
        stats["per_channel"] = {
            "axis": values.out_axis,
            "channels": channels,
            "skipped": f"{channels} channels: per-channel figures are computed up to {MAX_CHANNELS}",
        }
        return stats
    with np.errstate(all="ignore"):
        return _tensor_stats(values)


def _tensor_stats(values: TensorValues) -> dict[str, Any]:
    first = _FirstPass(values.channels)
    for block in values.blocks():
        first.add(block.channels, block.values)
    n = first.count
    mean = float(first.sums.sum() / n) if n else float("nan")
    channel_means = np.divide(first.sums, first.counts, out=np.zeros_like(first.sums), where=first.counts > 0)
    sq = float(first.sq_sums.sum())
    abs_max = float(first.abs_max.max()) if n else float("nan")
    hist = histogram_spec(DEFAULT_BINS, "minmax", first.low, first.high, abs_max)
    log_hist = None
    if np.isfinite(first.min_nonzero_abs):
        with np.errstate(over="ignore", divide="ignore"):
            low, high = (float(np.log10(np.float32(v))) for v in (first.min_nonzero_abs, abs_max))
        log_hist = histogram_spec(DEFAULT_BINS, "minmax", low, high, 0.0)
    rough_std = float(np.sqrt(max(sq / n - mean * mean, 0.0))) if n else 0.0
    per_channel = values.out_axis is not None and values.stored.ndim > 0
    second = _SecondPass(
        mean=mean if n else 0.0,
        channel_means=channel_means,
        threshold=rough_std,
        histogram=hist,
        log_histogram=log_hist,
        scale=abs_max / INT8_LEVELS if n else 1.0,
        channel_scales=first.abs_max / INT8_LEVELS if per_channel else None,
        locator=QuantileLocator(first.low, first.high),
    )
    for block in values.blocks():
        second.add(block.channels, block.values)
    nonfinite = first.nan + first.inf
    stats = _summary(values, first, second, mean, abs_max)
    stats["quantiles"] = second.locator.quantiles(_finite_blocks(values, nonfinite > 0))
    stats["histogram"] = histogram_json(hist, second.counts)
    stats["log_abs_histogram"] = histogram_json(log_hist, second.log_counts) if log_hist else None
    stats["per_channel"] = _per_channel(values, first, second) if per_channel else None
    stats["quant_readiness"] = _readiness(values, first, second, sq, per_channel)
    return stats


def _summary(
    values: TensorValues, first: _FirstPass, second: _SecondPass, mean: float, abs_max: float
) -> dict[str, Any]:
    n = first.count
    m2 = second.m2 / n if n else float("nan")
    moments_defined = n > 0 and m2 > 0
    return {
        "numel": values.size,
        "finite_count": n,
        "shape": list(values.shape),
        "std_ddof": 0,
        "min": finite(first.low) if n else None,
        "max": finite(first.high) if n else None,
        "abs_max": finite(abs_max),
        "mean": finite(mean),
        "std": finite(np.sqrt(m2)),
        "rms": finite(np.sqrt(first.sq_sums.sum() / n)) if n else None,
        "l1": finite(first.abs_sums.sum()),
        "l2": finite(np.sqrt(first.sq_sums.sum())),
        "skewness": finite((second.m3 / n) / m2**1.5) if moments_defined else None,
        "excess_kurtosis": finite((second.m4 / n) / (m2 * m2) - 3.0) if moments_defined else None,
        "zero_fraction": first.zeros / values.size if values.size else None,
        "nan_count": first.nan,
        "inf_count": first.inf,
    }


def _per_channel(values: TensorValues, first: _FirstPass, second: _SecondPass) -> dict[str, Any]:
    counts = np.maximum(first.counts, 1)
    return {
        "axis": values.out_axis,
        "channels": int(first.counts.size),
        "abs_max": finite_list(first.abs_max),
        "l2": finite_list(np.sqrt(first.sq_sums)),
        "mean": finite_list(second.channel_means),
        "std": finite_list(np.sqrt(second.channel_m2 / counts)),
    }


def _sqnr(signal: float, error: float) -> float | None:
    if signal <= 0:
        return None
    if error <= 0:
        return None  # lossless: no finite figure
    return float(10 * np.log10(signal / error))


def _readiness(
    values: TensorValues, first: _FirstPass, second: _SecondPass, signal: float, per_channel: bool
) -> dict[str, Any]:
    n = max(first.count, 1)
    ratio = None
    if per_channel:
        median = float(np.median(first.abs_max))
        ratio = float(first.abs_max.max() / median) if median > 0 else None
    readiness: dict[str, Any] = {
        "int8_sqnr_db": {
            "per_tensor": _sqnr(signal, second.err_tensor),
            "per_channel": _sqnr(signal, second.err_channel) if per_channel else None,
        },
        "channel_range_ratio": ratio,
        "outlier_fraction_3sigma": second.out3 / n,
        "outlier_fraction_6sigma": second.out6 / n,
        "fp16_overflow": first.fp16_overflow,
        "fp16_subnormal": first.fp16_subnormal,
        "fp16_subnormal_fraction": first.fp16_subnormal / n,
    }
    if values.quantized:
        readiness["integer_view"] = integer_view(values.stored)
    return readiness


def integer_view(stored: np.ndarray) -> dict[str, Any]:
    """Level occupancy of already-quantized storage."""
    info = np.iinfo(stored.dtype)
    flat = stored.reshape(-1)
    levels = np.unique(flat)
    clipped = int(np.count_nonzero((flat == info.min) | (flat == info.max)))
    span = int(info.max) - int(info.min) + 1
    return {
        "dtype": str(stored.dtype),
        "distinct_levels": int(levels.size),
        "level_occupancy": float(levels.size / span) if span <= 1 << 16 else None,
        "clip_fraction": clipped / max(flat.size, 1),
    }
