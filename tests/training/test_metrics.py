"""One definition of R², PSNR and SSIM: the training job's numbers are the service's (`/evaluate`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
from skimage import metrics as skimage_metrics
from sklearn.metrics import r2_score

from service.inspection.evaluation import image_metrics, regression_metrics
from tests.training.conftest import REPOSITORY, read_manifest
from training import data, metrics

pytestmark = pytest.mark.torch

structural_similarity: Callable[..., float] = skimage_metrics.structural_similarity
peak_signal_noise_ratio: Callable[..., float] = skimage_metrics.peak_signal_noise_ratio


def test_r2_is_the_mean_of_per_target_r2_not_the_pooled_one() -> None:
    rng = np.random.default_rng(0)
    # Two targets on very different scales: pooling them measures the gap between their means.
    truth = np.column_stack([rng.normal(0, 1, 200), rng.normal(1000, 50, 200)])
    pred = truth + rng.normal(0, [0.8, 40], size=truth.shape)
    found = metrics.regression(pred, truth)
    assert found["r2"] == pytest.approx(r2_score(truth, pred))
    assert found["r2"] == regression_metrics(pred, truth)["r2"]
    pooled = 1 - np.sum((truth - pred) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert pooled > 0.99
    assert found["r2"] < 0.5
    assert {k: found[k] for k in ("mae", "rmse")} == {k: regression_metrics(pred, truth)[k] for k in ("mae", "rmse")}


def test_one_target_gives_one_r2_either_way() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(150, 70, size=(89, 1))
    pred = truth + rng.normal(0, 50, size=truth.shape)
    assert metrics.regression(pred, truth)["r2"] == pytest.approx(r2_score(truth[:, 0], pred[:, 0]), abs=1e-12)


def test_ssim_is_the_definition_the_manifests_record() -> None:
    """SSIM_DEFINITION names the scikit-image call; the service's SSIM computes the same number."""
    rng = np.random.default_rng(2)
    clean = rng.uniform(0, 16, size=(12, 1, 8, 8))
    noisy = np.clip(clean + rng.normal(0, 3, size=clean.shape), 0, 16)
    definition = {k: v for k, v in metrics.SSIM_DEFINITION.items() if k not in ("function", "reduction")}
    per_image = [structural_similarity(clean[i, 0], noisy[i, 0], **definition) for i in range(len(clean))]
    assert metrics.ssim(noisy, clean, 16.0) == pytest.approx(np.mean(per_image), abs=1e-12)
    assert metrics.psnr(noisy, clean, 16.0) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=16.0))
    assert metrics.psnr(clean, clean, 16.0) == float("inf")


def test_the_shipped_autoencoders_metrics_are_what_evaluate_computes() -> None:
    """The manifest's PSNR / SSIM / MAE are the service's evaluation of the same held-out images."""
    version = REPOSITORY / "digits_autoencoder" / "1"
    manifest = read_manifest(version)
    split = data.digits(manifest["seed"])
    noise = manifest["dataset"]["noise"]["std"]
    noisy = data.add_noise(split.x_test, noise, np.random.default_rng([manifest["seed"], 1]))
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"image": noisy})
    evaluated = image_metrics(output, split.x_test, manifest["task"]["data_range"])
    # To float32's precision, not to the bit: the manifest was computed where the model was trained, and
    # onnxruntime's float32 kernels round differently on CPUs with other vector instructions (seen: MAE
    # 1.16396784592 here against 1.16396784464 recorded). Another definition of a metric differs by far more.
    for key in ("mae", "psnr", "ssim"):
        assert evaluated[key] == pytest.approx(manifest["metrics"][key], rel=1e-6), key
