"""Spectral metrics of a weight matrix, compatible with weightwatcher 0.7.7's defaults.

The empirical spectral density is the pooled eigenvalues of WᵀW (not divided by N). A convolution
weight [out, in, *kernel] gives one matrix per kernel position, each scaled by √½ as weightwatcher's
default ``conv2d_norm`` does, so conv eigenvalues are halved; ``raw`` repeats the norm metrics
without that scaling. The power law is weightwatcher's own fit (``pl_package='ww'``): the
continuous Clauset MLE for every candidate xmin, the one with the smallest KS distance wins, and
below 20 eigenvalues the small-N estimator with its 8-point minimum tail.

Eigenvalues take the cheapest exact route: the Gram matrix of the smaller side, accumulated in
float64 from blocks of rows (or columns) of the stored weight with a symmetric rank-k update, then a
symmetric eigensolver on it, in place. Its eigenvalues carry an absolute error of about
(N + M)·ε·λmax, far below anything the metrics look at, except when the matrix is (nearly)
rank-deficient: singular values at noise level are exactly what the Gram matrix cannot resolve, and
the rank metrics count them. So a matrix whose smallest eigenvalue lies within a thousand times that
error of zero (or of one of the absolute thresholds below) is decomposed again by an SVD of the
matrix itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dsyrk

from service.weights.values import TensorValues

WW_COMPAT = {"version": "0.7.7", "conv2d_norm": True}
MIN_EVALS = 8
MAX_EVALS = 15000
FIT_THRESHOLD = 1e-5
WEAK_RANK_THRESHOLD = 1e-6
SMALL_N = 20
SMALL_N_MIN_TAIL = 8
CONV_SCALE = 0.5  # eigenvalue factor of the √½ slice scaling
GRAM_GUARD = 1e3
"""Safety factor over the Gram route's error bound below which a matrix is decomposed by SVD."""
GRAM_BLOCK = 1 << 22
"""float64 values per block of rows or columns added into the Gram matrix (32 MiB)."""
LISTED_HISTOGRAM_BINS = 64
_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True, slots=True)
class SpectralLimits:
    """Which matrices are analysed: weightwatcher's min_evals (8) and max_evals (15000 pooled
    eigenvalues) stand, its max_N does not (``max_n`` instead), and the smaller side may be up to
    ``max_m`` (its Gram matrix takes max_m² x 8 bytes)."""

    max_m: int = 8192
    max_n: int = 65536


@dataclass(frozen=True, slots=True)
class MatrixShape:
    n: int
    m: int
    rf: int
    conv: bool

    @property
    def num_evals(self) -> int:
        return self.m * self.rf

    @property
    def work(self) -> float:
        """Multiply-adds, roughly: the Gram matrices (N·M² each) and their eigensolver (M³ each)."""
        return float(self.rf) * float(self.m) ** 2 * float(self.n + self.m)


def matrix_shape(shape: tuple[int, ...], conv: bool) -> MatrixShape | None:
    """How weightwatcher sees a weight: 2-D as is, conv as kernel-position slices; else None."""
    if conv and len(shape) >= 3:
        rf = int(np.prod(shape[2:], dtype=np.int64))
        return MatrixShape(max(shape[0], shape[1]), min(shape[0], shape[1]), rf, True)
    if len(shape) == 2:
        return MatrixShape(max(shape), min(shape), 1, False)
    return None


def skip_reason(shape: MatrixShape, limits: SpectralLimits) -> str | None:
    max_evals = max(MAX_EVALS, limits.max_m)
    if shape.num_evals < MIN_EVALS:
        return f"too few eigenvalues: M·rf = {shape.num_evals} < {MIN_EVALS} (weightwatcher min_evals)"
    if shape.m > limits.max_m:
        return f"M = {shape.m} > {limits.max_m} (WEIGHTSERVE_WEIGHTS_SPECTRAL_MAX_M)"
    if shape.num_evals > max_evals:
        return f"too many eigenvalues: M·rf = {shape.num_evals} > {max_evals} (weightwatcher max_evals)"
    if shape.n > limits.max_n:
        return f"N = {shape.n} > {limits.max_n} (WEIGHTSERVE_WEIGHTS_SPECTRAL_MAX_N)"
    return None


def base_document(shape: MatrixShape) -> dict[str, Any]:
    """What is known of a matrix before its eigenvalues are."""
    return {
        "ww_compat": WW_COMPAT,
        "layer_type": "conv2d" if shape.conv else "dense",
        "N": shape.n,
        "M": shape.m,
        "rf": shape.rf,
        "Q": shape.n / shape.m if shape.m else None,
        "num_evals": shape.num_evals,
    }


@dataclass(frozen=True, slots=True)
class Eigenvalues:
    """Pooled eigenvalues (ascending, conv scaling applied) and each slice's singular values."""

    evals: np.ndarray
    slice_svals: list[np.ndarray]
    routes: tuple[str, ...]

    @property
    def route(self) -> str:
        kinds = set(self.routes)
        return kinds.pop() if len(kinds) == 1 else "gram+svd"


class NonFinite(ValueError):
    """The weight holds NaN or Inf, or its eigenvalues overflow float64."""


def _quant_along(array: np.ndarray | None, axis: int | None, rows: slice, cols: slice) -> Any:
    if array is None:
        return None
    flat = np.asarray(array, dtype=np.float64).reshape(-1)
    if flat.size == 1 or axis is None:
        return flat[0]
    return flat[rows][:, None] if axis == 0 else flat[cols][None, :]


def _matrix_block(values: TensorValues, rows: slice, cols: slice) -> np.ndarray:
    """Rows × columns of a 2-D weight, dequantized, in float64."""
    block = np.array(values.stored[rows, cols], dtype=np.float64, order="C")
    if values.quantized:
        zero = _quant_along(values.zero_point, values.quant_axis, rows, cols)
        scale = _quant_along(values.scale, values.quant_axis, rows, cols)
        if zero is not None:
            block -= zero
        if scale is not None:
            block *= scale
    if not np.isfinite(block).all():
        raise NonFinite("the weight holds NaN or Inf")
    return block


def gram_matrix(values: TensorValues) -> np.ndarray:
    """The Gram matrix of the smaller side of a 2-D weight (upper triangle, Fortran order), summed
    over blocks so that no float64 copy of the whole weight is ever made."""
    rows, cols = values.shape
    by_rows = rows >= cols
    side = min(rows, cols)
    gram = np.zeros((side, side), dtype=np.float64, order="F")
    long_side, width = (rows, cols) if by_rows else (cols, rows)
    step = max(1, GRAM_BLOCK // max(width, 1))
    for start in range(0, long_side, step):
        part = slice(start, min(start + step, long_side))
        if by_rows:
            block = _matrix_block(values, part, slice(None))  # b x cols: add BᵀB
            dsyrk(1.0, block.T, beta=1.0, c=gram, trans=0, overwrite_c=1)
        else:
            block = _matrix_block(values, slice(None), part)  # rows x b: add BBᵀ
            dsyrk(1.0, block.T, beta=1.0, c=gram, trans=1, overwrite_c=1)
        del block
    return gram


def _trusted(evals: np.ndarray, rows: int, cols: int, factor: float) -> bool:
    """Whether Gram eigenvalues are as good as the SVD's for every use the metrics make of them."""
    if not evals.size:
        return True
    top = float(evals[-1])
    error = GRAM_GUARD * (rows + cols) * _EPS * top
    if not float(evals[0]) > error:
        return False  # (nearly) rank-deficient
    scaled_error = error * factor
    scaled = evals * factor
    return not any(np.any(np.abs(scaled - t) <= scaled_error) for t in (FIT_THRESHOLD, WEAK_RANK_THRESHOLD))


def _slice_eigenvalues(gram: np.ndarray) -> np.ndarray:
    return np.asarray(
        scipy.linalg.eigh(gram, lower=False, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd")
    )


def eigenvalues(values: TensorValues, conv: bool) -> Eigenvalues:
    """The ESD of a weight, exactly; raises NonFinite for NaN or Inf in it."""
    factor = CONV_SCALE if conv else 1.0
    pooled: list[np.ndarray] = []
    svals: list[np.ndarray] = []
    routes: list[str] = []
    if conv:
        weight = values.to_float64()
        if not np.isfinite(weight).all():
            raise NonFinite("the weight holds NaN or Inf")
        flat = weight.reshape(weight.shape[0], weight.shape[1], -1)
        slices = [TensorValues(np.ascontiguousarray(flat[:, :, k])) for k in range(flat.shape[2])]
    else:
        slices = [values]
    for matrix in slices:
        rows, cols = matrix.shape
        gram = gram_matrix(matrix)
        if not np.isfinite(gram).all():
            raise NonFinite("eigenvalues are zero or overflow float64")
        evals = np.sort(_slice_eigenvalues(gram))
        del gram
        if _trusted(evals, rows, cols, factor):
            route = "gram"
        else:
            dense = _matrix_block(matrix, slice(None), slice(None))
            sv = scipy.linalg.svdvals(dense, check_finite=False)
            del dense
            evals = np.sort(sv * sv)
            route = "svd"
        evals = evals * factor
        pooled.append(evals)
        svals.append(np.sqrt(np.maximum(evals, 0.0)))
        routes.append(route)
    return Eigenvalues(np.sort(np.concatenate(pooled)), svals, tuple(routes))


def metrics(eig: Eigenvalues, shape: MatrixShape) -> dict[str, Any]:
    """Every metric from the eigenvalues (the document cached per content)."""
    evals = eig.evals
    base = base_document(shape) | {"eigensolver": eig.route}
    with np.errstate(all="ignore"):
        if not np.isfinite(evals).all() or not evals.max() > 0:
            return base | {"status": "skipped", "skipped_reason": "eigenvalues are zero or overflow float64"}
        return base | norm_metrics(evals, eig.slice_svals, shape.n, shape.conv) | powerlaw_fit(evals)


def analyse(values: TensorValues, conv: bool, limits: SpectralLimits) -> tuple[dict[str, Any], np.ndarray | None]:
    """The spectral document of a weight and its eigenvalues (None when skipped or failed)."""
    shape = matrix_shape(values.shape, conv)
    if shape is None:
        return {"status": "skipped", "skipped_reason": "not a 2-D or convolution weight"}, None
    reason = skip_reason(shape, limits)
    if reason is not None:
        return base_document(shape) | {"status": "skipped", "skipped_reason": reason}, None
    try:
        eig = eigenvalues(values, conv)
    except NonFinite as exc:
        return base_document(shape) | {"status": "skipped", "skipped_reason": str(exc)}, None
    except (np.linalg.LinAlgError, ValueError) as exc:  # scipy's LinAlgError is numpy's
        reason = f"eigensolver did not converge: {exc}"
        return base_document(shape) | {"status": "failed", "skipped_reason": reason}, None
    doc = metrics(eig, shape)
    return doc, eig.evals if doc.get("status") == "success" else None


def spectral_metrics(
    weight: np.ndarray | TensorValues, conv: bool, limits: SpectralLimits | None = None
) -> dict[str, Any]:
    """Every metric of one weight, or ``status: skipped`` with the reason."""
    values = weight if isinstance(weight, TensorValues) else TensorValues(weight)
    return analyse(values, conv, limits or SpectralLimits())[0]


def eigenvalue_listing(evals: np.ndarray, limit: int) -> dict[str, Any]:
    """The eigenvalues as the tensor's spectral document lists them: every one up to ``limit``,
    beyond that the ``limit`` largest (where the power-law tail lives), and always a histogram of
    log10 λ over all of them, so a chart never needs the raw weight."""
    n = int(evals.size)
    positive = evals[evals > 0]
    listed = evals[-limit:] if limit > 0 else evals[:0]
    histogram: dict[str, Any] | None = None
    if positive.size:
        logs = np.log10(positive)
        low, high = float(logs.min()), float(logs.max())
        bins = LISTED_HISTOGRAM_BINS if high > low else 1
        if high == low:
            low, high = low - 0.5, high + 0.5
        counts, edges = np.histogram(logs, bins=bins, range=(low, high))
        histogram = {"edges": edges.tolist(), "counts": counts.tolist()}
    return {
        "count": n,
        "sum": float(evals.sum()),
        "nonpositive": int(n - positive.size),
        "truncated": n > limit,
        "values": listed.tolist(),
        "log10_histogram": histogram,
    }


def norm_metrics(evals: np.ndarray, svals: list[np.ndarray], n: int, conv: bool) -> dict[str, Any]:
    total = float(evals.sum())
    lam_max = float(evals.max())
    sv = np.sqrt(evals)
    rank = int(np.count_nonzero(sv > sv.max() * n * np.finfo(np.float64).eps))
    p = evals / total + 1e-10
    entropy = float(-np.sum(p * np.log(p)) / np.log(rank + 1e-10))
    rank_loss = sum(int(s.size) - _rank(s) for s in svals)
    raw_factor = 1 / CONV_SCALE if conv else 1.0
    return {
        "norm": total,
        "log_norm": float(np.log10(total)),
        "lambda_max": lam_max,
        "spectral_norm": lam_max,
        "log_spectral_norm": float(np.log10(lam_max)),
        "stable_rank": total / lam_max,
        "matrix_rank": rank,
        "entropy": entropy,
        "sv_max": float(np.sqrt(lam_max)),
        "sv_min": float(max(float(s.min()) for s in svals)),
        "rank_loss": rank_loss,
        "weak_rank_loss": int(np.count_nonzero(evals < 1e-6)),
        "raw": {
            "norm": total * raw_factor,
            "log_norm": float(np.log10(total * raw_factor)),
            "spectral_norm": lam_max * raw_factor,
            "log_spectral_norm": float(np.log10(lam_max * raw_factor)),
        },
    }


def _rank(svals: np.ndarray) -> int:
    if not svals.size:
        return 0
    return int(np.count_nonzero(svals > svals.max() * max(svals.size, 1) * np.finfo(np.float64).eps))


@dataclass(frozen=True, slots=True)
class _Candidate:
    d: float
    alpha: float
    sigma: float
    xmin: float


def _candidate(x: np.ndarray, i: int, small: bool) -> _Candidate | None:
    tail = x[i:]
    n = tail.size
    xmin = float(x[i])
    log_sum = float(np.sum(np.log(tail / xmin)))
    if small and (n < SMALL_N_MIN_TAIL or log_sum <= 1e-12):
        return None
    if log_sum <= 0:
        return None
    alpha = 1 + ((n - 1) if small else n) / log_sum
    sigma = (alpha - 1) / np.sqrt(n)
    if alpha <= 1:
        return _Candidate(1.0, alpha, sigma, xmin)
    cdf = 1 - (tail / xmin) ** (1 - alpha)
    d = float(np.max(np.abs(cdf - np.arange(n) / n)))
    return _Candidate(d, alpha, sigma, xmin)


def powerlaw_fit(evals: np.ndarray) -> dict[str, Any]:
    """weightwatcher's power-law fit of the ESD tail and the metrics that depend on alpha."""
    x = np.sort(evals[evals > FIT_THRESHOLD])
    small = x.size < SMALL_N
    best: _Candidate | None = None
    for i in range(x.size - 1):
        cand = _candidate(x, i, small)
        if cand is not None and (best is None or cand.d < best.d):
            best = cand
    if best is None:
        return {"status": "failed", "skipped_reason": "no power-law tail could be fitted", "alpha": None}
    lam_max = float(evals.max())
    alpha = best.alpha
    warning = "over-trained" if alpha < 2 else "under-trained" if alpha > 6 else ""
    return {
        "status": "success",
        "alpha": alpha,
        "xmin": best.xmin,
        "xmax": lam_max,
        "D": best.d,
        "sigma": best.sigma,
        "num_pl_spikes": int(np.count_nonzero(evals >= best.xmin)),
        "alpha_weighted": alpha * float(np.log10(lam_max)),
        "log_alpha_norm": float(np.log10(np.sum(evals**alpha))),
        "pl_fit": "small_n" if small else "standard",
        "warning": warning,
    }
