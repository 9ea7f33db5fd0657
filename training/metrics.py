"""Held-out metrics of the training job, in float64 on numpy arrays.

R², PSNR and SSIM are the service's own definitions (`service.inspection.evaluation`), so the
numbers a manifest records and the numbers `/evaluate` answers for the same samples are one
computation, not two that agree by luck:

* R²: per target, then the plain mean over targets (scikit-learn's default, ``uniform_average``):
  each target's R² measures the model against that target's own spread; pooling the targets into
  one vector would measure the spread *between* targets (their different means and scales), which
  says nothing about the model. With one target, as for diabetes, both are the same number.
* PSNR: 10·log10(range² / MSE), the MSE over every pixel of the set.
* SSIM: Wang et al. 2004, Gaussian window σ 1.5, K1 0.01, K2 0.03, population covariances; the
  window cut to 7 on 8x8 images; the mean over images. `SSIM_DEFINITION` is what manifests record:
  the scikit-image call that computes the same number (checked in the tests).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from service.inspection.evaluation import psnr as _psnr
from service.inspection.evaluation import regression_metrics, ssim_window
from service.inspection.evaluation import ssim as _ssim

SSIM_WIN_SIZE = ssim_window(8, 8)
SSIM_DEFINITION = {
    "function": "skimage.metrics.structural_similarity",
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "win_size": SSIM_WIN_SIZE,
    "data_range": 16.0,
    "reduction": "mean over images",
}


def accuracy(logits: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def regression(pred: NDArray[np.floating], target: NDArray[np.floating]) -> dict[str, float]:
    """R² (NaN where the targets do not vary), MAE and RMSE."""
    found = regression_metrics(np.asarray(pred), np.asarray(target))
    r2 = found["r2"]
    return {"r2": float("nan") if r2 is None else float(r2), "mae": found["mae"], "rmse": found["rmse"]}


def psnr(images: NDArray[np.floating], reference: NDArray[np.floating], data_range: float) -> float:
    """PSNR over the whole set (infinite when the images equal their references)."""
    value = _psnr(reference, images, data_range)
    return float("inf") if value is None else value


def ssim(images: NDArray[np.floating], reference: NDArray[np.floating], data_range: float) -> float:
    """Mean SSIM of [N, 1, H, W] images against their references."""
    return _ssim(reference, images, data_range)


def image_to_image(
    output: NDArray[np.floating], noisy: NDArray[np.floating], clean: NDArray[np.floating], data_range: float
) -> dict[str, float]:
    """Reconstruction quality next to the noisy input's own, both against the clean images."""
    return {
        "mae": float(np.mean(np.abs(output.astype(np.float64) - clean))),
        "psnr": psnr(output, clean, data_range),
        "ssim": ssim(output, clean, data_range),
        "noisy_mae": float(np.mean(np.abs(noisy.astype(np.float64) - clean))),
        "noisy_psnr": psnr(noisy, clean, data_range),
        "noisy_ssim": ssim(noisy, clean, data_range),
    }
