"""Held-out metrics for the three task kinds a manifest names, computed in float64.

* classification: accuracy, cross-entropy (natural log, mean over samples; from logits, or from
  probabilities when every output row is already a distribution), confusion matrix (rows = true class,
  columns = predicted class).
* regression: MAE, RMSE, R² (per target, then their plain mean, as scikit-learn's
  ``r2_score(multioutput="uniform_average")``; null where the targets do not vary).
* image_to_image: MAE; PSNR = 10·log10(R² / MSE) over the whole batch (null when MSE = 0); SSIM as
  Wang et al. 2004: an 11×11 Gaussian window (σ = 1.5, truncated at 3.5σ, borders reflected),
  K1 = 0.01, K2 = 0.03, population covariances, data range R from the manifest, the map's border of
  half a window left out, averaged over every [H, W] plane of the batch. Equal to scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=R)``. Images with a side under 11 clip the window: ``win_size`` becomes the largest odd
  number not over the shorter side (7 for 8×8 digits), so only a border of (win_size - 1) / 2 is left
  out while the Gaussian weights stay the same — what scikit-image computes when given that
  ``win_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from service.errors import InvalidInput

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_WINDOW = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def classification_metrics(
    outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str] | None = None
) -> dict[str, Any]:
    scores = np.asarray(outputs, dtype=np.float64).reshape(outputs.shape[0], -1)
    classes = scores.shape[1]
    truth = _class_targets(targets, scores.shape[0], classes)
    predicted = scores.argmax(axis=1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    return {
        "task": "classification",
        "samples": int(truth.size),
        "accuracy": float((predicted == truth).mean()),
        "cross_entropy": _cross_entropy(scores, truth),
        "confusion_matrix": confusion.tolist(),
        "labels": list(labels) if labels is not None else [str(c) for c in range(classes)],
    }


def _class_targets(targets: np.ndarray, samples: int, classes: int) -> np.ndarray:
    flat = np.asarray(targets)
    if flat.ndim == 2 and flat.shape[1] == 1:
        flat = flat[:, 0]
    if flat.shape != (samples,):
        raise InvalidInput(
            f"targets of shape {list(np.shape(targets))} do not fit {samples} predictions; "
            f"expected class indices of shape [{samples}] or [{samples}, 1]"
        )
    as_int = flat.astype(np.int64)
    if not np.array_equal(as_int, flat) or as_int.min(initial=0) < 0 or as_int.max(initial=0) >= classes:
        raise InvalidInput(f"targets must be class indices between 0 and {classes - 1}")
    return as_int


def _cross_entropy(scores: np.ndarray, truth: np.ndarray) -> float:
    rows = np.arange(truth.size)
    is_distribution = bool(np.all(scores >= 0.0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4))
    if is_distribution:
        return float(-np.log(np.clip(scores[rows, truth], 1e-12, None)).mean())
    peak = scores.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scores - peak).sum(axis=1)) + peak[:, 0]
    return float((log_norm - scores[rows, truth]).mean())


def regression_metrics(
    outputs: np.ndarray, targets: np.ndarray, names: Sequence[str] | None = None
) -> dict[str, Any]:
    pred = np.asarray(outputs, dtype=np.float64)
    pred = pred.reshape(pred.shape[0], -1)
    truth = _same_shape(targets, outputs).reshape(pred.shape)
    error = pred - truth
    per_target: list[dict[str, Any]] = []
    r2s: list[float | None] = []
    for j in range(pred.shape[1]):
        spread = float(((truth[:, j] - truth[:, j].mean()) ** 2).sum())
        residual = float((error[:, j] ** 2).sum())
        r2s.append(1.0 - residual / spread if spread > 0.0 else None)
        per_target.append(
            {
                "name": names[j] if names is not None and j < len(names) else str(j),
                "mae": float(np.abs(error[:, j]).mean()),
                "rmse": float(np.sqrt((error[:, j] ** 2).mean())),
                "r2": r2s[-1],
            }
        )
    known = [r for r in r2s if r is not None]
    return {
        "task": "regression",
        "samples": int(pred.shape[0]),
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": float(np.mean(known)) if len(known) == len(r2s) else None,
        "per_target": per_target,
    }


def image_metrics(outputs: np.ndarray, targets: np.ndarray, data_range: float) -> dict[str, Any]:
    if not data_range > 0.0:
        raise InvalidInput(f"data range must be positive, got {data_range}")
    pred = np.asarray(outputs, dtype=np.float64)
    truth = _same_shape(targets, outputs)
    if pred.ndim < 2:
        raise InvalidInput(f"image outputs need at least 2 dimensions, got shape {list(pred.shape)}")
    return {
        "task": "image_to_image",
        "samples": int(pred.shape[0]),
        "data_range": data_range,
        "mae": float(np.abs(pred - truth).mean()),
        "psnr": psnr(truth, pred, data_range),
        "ssim": ssim(truth, pred, data_range),
        "ssim_window": ssim_window(*pred.shape[-2:]),
    }


def _same_shape(targets: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    truth = np.asarray(targets, dtype=np.float64)
    squeezable = outputs.ndim == 2 and outputs.shape[1] == 1 and truth.shape == outputs.shape[:1]
    if truth.shape != outputs.shape and not squeezable:
        raise InvalidInput(
            f"targets of shape {list(truth.shape)} do not fit outputs of shape {list(outputs.shape)}"
        )
    return truth.reshape(outputs.shape)


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float) -> float | None:
    mse = float(((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2).mean())
    return None if mse == 0.0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim_window(height: int, width: int) -> int:
    """The window side: 11, or the largest odd number not over the shorter image side."""
    shorter = min(height, width, SSIM_WINDOW)
    return shorter if shorter % 2 == 1 else shorter - 1


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """Mean SSIM over every [H, W] plane of two equally shaped arrays."""
    x = np.asarray(reference, np.float64)
    y = np.asarray(test, np.float64)
    height, width = x.shape[-2:]
    x = x.reshape(-1, height, width)
    y = y.reshape(-1, height, width)

    def blur(image: np.ndarray) -> np.ndarray:
        # sigma 0 on the stacking axis: planes are filtered independently.
        blurred: np.ndarray = ndimage.gaussian_filter(
            image, sigma=(0.0, SSIM_SIGMA, SSIM_SIGMA), truncate=SSIM_TRUNCATE, mode="reflect"
        )
        return blurred

    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (ssim_window(height, width) - 1) // 2
    return float(s[:, pad : height - pad, pad : width - pad].mean())
