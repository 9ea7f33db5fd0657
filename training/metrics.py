"""Held-out metrics, computed in float64 on numpy arrays.

SSIM is scikit-image's `structural_similarity` with the standard Gaussian definition
(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, K1=0.01, K2=0.03) and win_size 7,
the largest odd window that fits an 8x8 image; images are compared one by one and averaged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from skimage.metrics import structural_similarity

SSIM_WIN_SIZE = 7
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
    p = pred.astype(np.float64).ravel()
    t = target.astype(np.float64).ravel()
    residual = t - p
    ss_res = float(np.sum(residual**2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return {
        "r2": 1.0 - ss_res / ss_tot,
        "mae": float(np.mean(np.abs(residual))),
        "rmse": float(np.sqrt(np.mean(residual**2))),
    }


def psnr(images: NDArray[np.floating], reference: NDArray[np.floating], data_range: float) -> float:
    """PSNR over the whole set: 10·log10(range² / MSE), the MSE taken over every pixel."""
    mse = float(np.mean((images.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(images: NDArray[np.floating], reference: NDArray[np.floating], data_range: float) -> float:
    """Mean SSIM of [N, 1, H, W] images against their references (definition in the module doc)."""
    scores = [
        structural_similarity(  # type: ignore[no-untyped-call]
            reference[i, 0].astype(np.float64),
            images[i, 0].astype(np.float64),
            data_range=data_range,
            win_size=SSIM_WIN_SIZE,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for i in range(len(images))
    ]
    return float(np.mean(scores))


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
