"""Data sets bundled with scikit-learn, split into train and held-out test sets.

Arrays are returned exactly as the data set stores them (digits pixels 0-16, raw diabetes
features): any normalisation belongs inside the model so that clients send raw data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split

TEST_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class Split:
    """Train and test arrays (float32) plus what the manifest says about them."""

    x_train: NDArray[np.float32]
    y_train: NDArray[np.float32] | NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.float32] | NDArray[np.int64]
    dataset: dict[str, Any]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.x_train), "test": len(self.x_test)}


def digits(seed: int) -> Split:
    """8x8 digit images as [N, 1, 8, 8] pixel values 0-16, labels 0-9; stratified split."""
    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=seed, stratify=labels
    )
    info = {
        "name": "sklearn.datasets.load_digits",
        "samples": len(images),
        "input_range": [0.0, 16.0],
        "test_fraction": TEST_FRACTION,
        "stratified": True,
    }
    return Split(x_tr, y_tr, x_te, y_te, info)


def diabetes(seed: int) -> Split:
    """The 10 raw diabetes features (scaled=False) and the disease progression target as [N, 1]."""
    features, target = load_diabetes(return_X_y=True, scaled=False)
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(target, dtype=np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=seed)
    info = {
        "name": "sklearn.datasets.load_diabetes",
        "scaled": False,
        "samples": len(x),
        "features": list(load_diabetes().feature_names),
        "target": "disease_progression",
        "test_fraction": TEST_FRACTION,
        "stratified": False,
    }
    return Split(x_tr, y_tr, x_te, y_te, info)


def add_noise(clean: NDArray[np.float32], std: float, generator: np.random.Generator) -> NDArray[np.float32]:
    """Gaussian pixel noise on the 0-16 scale, clipped back into the valid range."""
    noisy = clean + generator.normal(0.0, std, size=clean.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 16.0).astype(np.float32)
