"""Retraining a shipped model from its manifest's seed and hyperparameters reproduces its metrics.

On the machine that trained it the numbers are equal; another CPU may round differently inside
the same kernels, so the comparison allows small differences (stated per metric below).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import REPOSITORY, read_manifest, train

TOLERANCE = {
    "r2": 0.01,
    "mae": 0.5,
    "rmse": 0.5,
    "psnr": 0.1,
    "ssim": 0.005,
    "noisy_mae": 1e-9,
    "noisy_psnr": 1e-9,
    "noisy_ssim": 1e-9,
    "train_loss": 0.01,
}

pytestmark = pytest.mark.torch
"""Absolute tolerance per metric (diabetes targets span 25-346, pixels 0-16)."""


@pytest.mark.parametrize("name", ["diabetes_mlp", "digits_autoencoder"])
def test_retraining_from_the_manifest_reproduces_the_metrics(tmp_path: Path, name: str) -> None:
    shipped = read_manifest(REPOSITORY / name / "1")
    hyperparameters = {k: v for k, v in shipped["hyperparameters"].items() if k != "processes"}
    result = train(tmp_path, name, seed=shipped["seed"], hyperparameters=hyperparameters)
    assert set(result.metrics) == set(shipped["metrics"])
    for key, expected in shipped["metrics"].items():
        assert result.metrics[key] == pytest.approx(expected, abs=TOLERANCE[key]), key


def test_shipped_models_meet_their_quality_bars() -> None:
    cnn = [read_manifest(REPOSITORY / "digits_cnn" / v)["metrics"] for v in ("1", "2")]
    mlp = read_manifest(REPOSITORY / "diabetes_mlp" / "1")["metrics"]
    ae = read_manifest(REPOSITORY / "digits_autoencoder" / "1")["metrics"]
    assert all(m["accuracy"] >= 0.97 for m in cnn)
    assert mlp["r2"] >= 0.40
    assert ae["psnr"] >= ae["noisy_psnr"] + 3.0
    assert ae["ssim"] > ae["noisy_ssim"]
