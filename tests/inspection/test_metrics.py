from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from skimage import metrics as skimage_metrics
from sklearn.metrics import confusion_matrix, log_loss, mean_absolute_error, r2_score

from service.errors import InvalidInput
from service.inspection.evaluation import (
    classification_metrics,
    image_metrics,
    regression_metrics,
    ssim,
    ssim_window,
)

# scikit-image ships no annotations; typed aliases keep the calls checked on our side.
structural_similarity: Callable[..., float] = skimage_metrics.structural_similarity
peak_signal_noise_ratio: Callable[..., float] = skimage_metrics.peak_signal_noise_ratio
SKIMAGE_SSIM = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0, 16, size=shape)
    return clean, np.clip(clean + rng.normal(0, 2, size=shape), 0, 16)


@pytest.mark.parametrize("side", [11, 16, 32])
def test_ssim_and_psnr_equal_scikit_image(side: int) -> None:
    clean, noisy = _pair((side, side + 3))

    assert ssim(clean, noisy, 16.0) == pytest.approx(
        structural_similarity(clean, noisy, data_range=16.0, **SKIMAGE_SSIM), abs=1e-12
    )
    assert image_metrics(noisy, clean, 16.0)["psnr"] == pytest.approx(
        peak_signal_noise_ratio(clean, noisy, data_range=16.0), abs=1e-12
    )


def test_small_images_clip_the_window_as_scikit_image_does_with_that_win_size() -> None:
    clean, noisy = _pair((8, 8), seed=1)

    assert ssim_window(8, 8) == 7
    assert ssim(clean, noisy, 16.0) == pytest.approx(
        structural_similarity(clean, noisy, data_range=16.0, win_size=7, **SKIMAGE_SSIM), abs=1e-12
    )


def test_batch_ssim_is_the_mean_over_images_and_channels() -> None:
    clean, noisy = _pair((3, 2, 12, 12), seed=2)
    per_plane = [
        structural_similarity(clean[n, c], noisy[n, c], data_range=16.0, **SKIMAGE_SSIM)
        for n in range(3)
        for c in range(2)
    ]

    metrics = image_metrics(noisy, clean, 16.0)

    assert metrics["ssim"] == pytest.approx(np.mean(per_plane), abs=1e-12)
    assert metrics["mae"] == pytest.approx(np.abs(noisy - clean).mean())
    assert ssim(clean, clean, 16.0) == pytest.approx(1.0)
    assert image_metrics(clean, clean, 16.0)["psnr"] is None


def test_classification_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 4))
    truth = rng.integers(0, 4, size=40)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    metrics = classification_metrics(logits, truth, labels=["a", "b", "c", "d"])

    assert metrics["accuracy"] == pytest.approx((logits.argmax(axis=1) == truth).mean())
    assert metrics["cross_entropy"] == pytest.approx(log_loss(truth, probabilities, labels=range(4)))
    assert (
        metrics["confusion_matrix"]
        == confusion_matrix(truth, logits.argmax(axis=1), labels=range(4)).tolist()
    )
    assert classification_metrics(probabilities, truth[:, None])["cross_entropy"] == pytest.approx(
        metrics["cross_entropy"]
    )


def test_regression_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    truth = rng.normal(size=(50, 2))
    pred = truth + rng.normal(0, 0.3, size=(50, 2))

    metrics = regression_metrics(pred, truth, names=["a", "b"])

    assert metrics["mae"] == pytest.approx(mean_absolute_error(truth, pred))
    assert metrics["rmse"] == pytest.approx(np.sqrt(((truth - pred) ** 2).mean()))
    assert metrics["r2"] == pytest.approx(r2_score(truth, pred))
    assert [t["name"] for t in metrics["per_target"]] == ["a", "b"]
    assert regression_metrics(pred[:, :1], truth[:, 0])["r2"] == pytest.approx(
        r2_score(truth[:, 0], pred[:, 0])
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: classification_metrics(np.zeros((4, 3)), np.zeros((5,))),
        lambda: classification_metrics(np.zeros((4, 3)), np.array([0, 1, 2, 3])),
        lambda: classification_metrics(np.zeros((2, 3)), np.array([0.5, 1])),
        lambda: regression_metrics(np.zeros((4, 1)), np.zeros((4, 2))),
        lambda: image_metrics(np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 7)), 16.0),
    ],
)
def test_targets_that_do_not_fit_are_invalid_input(call: object) -> None:
    with pytest.raises(InvalidInput):
        call()  # type: ignore[operator]
