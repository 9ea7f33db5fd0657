"""Spectral metrics of a weight matrix, compatible with weightwatcher 0.7.7's defaults.

The empirical spectral density is the pooled eigenvalues of WᵀW (not divided by N). A convolution
weight [out, in, *kernel] gives one matrix per kernel position, each scaled by √½ as weightwatcher's
default ``conv2d_norm`` does, so conv eigenvalues are halved; ``raw`` repeats the norm metrics
without that scaling. The power law is weightwatcher's own fit (``pl_package='ww'``): the
continuous Clauset MLE for every candidate xmin, the one with the smallest KS distance wins, and
below 20 eigenvalues the small-N estimator with its 8-point minimum tail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

WW_COMPAT = {"version": "0.7.7", "conv2d_norm": True}
MIN_EVALS = 8
MAX_EVALS = 15000
MAX_N = 50000
FIT_THRESHOLD = 1e-5
SMALL_N = 20
SMALL_N_MIN_TAIL = 8
CONV_SCALE = 0.5  # eigenvalue factor of the √½ slice scaling
DEFAULT_BUDGET = 5e9
"""Default work budget: N·M²·rf multiply-adds, about a second or two of SVD on one core."""


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
        return float(self.n) * float(self.m) ** 2 * self.rf


def matrix_shape(shape: tuple[int, ...], conv: bool) -> MatrixShape | None:
    """How weightwatcher sees a weight: 2-D as is, conv as kernel-position slices; else None."""
    if conv and len(shape) >= 3:
        rf = int(np.prod(shape[2:], dtype=np.int64))
        return MatrixShape(max(shape[0], shape[1]), min(shape[0], shape[1]), rf, True)
    if len(shape) == 2:
        return MatrixShape(max(shape), min(shape), 1, False)
    return None


def skip_reason(shape: MatrixShape, budget: float) -> str | None:
    if shape.num_evals < MIN_EVALS:
        return f"too few eigenvalues: M·rf = {shape.num_evals} < {MIN_EVALS} (weightwatcher min_evals)"
    if shape.num_evals > MAX_EVALS:
        return f"too many eigenvalues: M·rf = {shape.num_evals} > {MAX_EVALS} (weightwatcher max_evals)"
    if shape.n > MAX_N:
        return f"N = {shape.n} > {MAX_N} (weightwatcher max_N)"
    if shape.work > budget:
        return f"over the work budget: N·M²·rf = {shape.work:.3g} > {budget:.3g}"
    return None


def _slices(weight: np.ndarray, conv: bool) -> list[np.ndarray]:
    if not conv:
        return [weight]
    flat = weight.reshape(weight.shape[0], weight.shape[1], -1)
    return [flat[:, :, k] for k in range(flat.shape[2])]


def singular_values(weight: np.ndarray, conv: bool) -> list[np.ndarray]:
    """Singular values of each slice, float64, conv slices already scaled by √½."""
    factor = np.sqrt(CONV_SCALE) if conv else 1.0
    return [
        scipy.linalg.svdvals(np.asarray(s, dtype=np.float64) * factor, check_finite=False)
        for s in _slices(weight, conv)
    ]


def spectral_metrics(weight: np.ndarray, conv: bool, budget: float = DEFAULT_BUDGET) -> dict[str, Any]:
    """Every metric, or ``status: skipped`` with the reason."""
    shape = matrix_shape(tuple(int(d) for d in weight.shape), conv)
    if shape is None:
        return {"status": "skipped", "skipped_reason": "not a 2-D or convolution weight"}
    base: dict[str, Any] = {
        "ww_compat": WW_COMPAT,
        "layer_type": "conv2d" if conv else "dense",
        "N": shape.n,
        "M": shape.m,
        "rf": shape.rf,
        "Q": shape.n / shape.m if shape.m else None,
        "num_evals": shape.num_evals,
    }
    reason = skip_reason(shape, budget)
    if reason is None and not np.isfinite(weight).all():
        reason = "the weight holds NaN or Inf"
    if reason is not None:
        return base | {"status": "skipped", "skipped_reason": reason}
    with np.errstate(all="ignore"):
        try:
            svals = singular_values(weight, conv)
        except (np.linalg.LinAlgError, ValueError) as exc:  # scipy's LinAlgError is numpy's
            return base | {"status": "failed", "skipped_reason": f"SVD did not converge: {exc}"}
        evals = np.sort(np.concatenate([s * s for s in svals]))
        if not np.isfinite(evals).all() or not evals.max() > 0:
            return base | {"status": "skipped", "skipped_reason": "eigenvalues are zero or overflow float64"}
        return base | norm_metrics(evals, svals, shape.n, conv) | powerlaw_fit(evals)


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
