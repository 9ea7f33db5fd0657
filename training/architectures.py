"""The networks the job trains, and how to rebuild a trained one from its version folder.

Every module takes the raw data as the data set stores it and does its own normalisation, so the
exported ONNX graph is what a client calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

PIXEL_MAX = 16.0
"""Digit pixels range over 0..16 in scikit-learn's data set."""


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU blocks, global average pooling and one linear head.

    `features(image)` is the post-ReLU map that feeds the pool, and `head` is the only layer after
    it, so class-activation maps are `head.weight[c] @ features(image)` over channels.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 64), classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for width in channels:
            layers += [
                nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        maps = self.features(image / PIXEL_MAX)
        return self.head(maps.mean(dim=(2, 3)))  # type: ignore[no-any-return]


class DiabetesMLP(nn.Module):
    """MLP regressor with input standardisation and target de-standardisation in the graph.

    The scaling statistics are buffers fitted on the train split (`fit_scaling`), so they travel
    with the weights and the exported model takes raw features and returns raw targets.
    """

    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(self, features: int = 10, hidden: Sequence[int] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = features
        for width in hidden:
            layers += [nn.Linear(previous, width), nn.ReLU(), nn.Dropout(dropout)]
            previous = width
        layers.append(nn.Linear(previous, 1))
        self.body = nn.Sequential(*layers)
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.register_buffer("target_mean", torch.zeros(1))
        self.register_buffer("target_std", torch.ones(1))

    def fit_scaling(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            self.feature_mean.copy_(x.mean(dim=0))
            self.feature_std.copy_(x.std(dim=0, correction=0).clamp_min(1e-6))
            self.target_mean.copy_(y.mean(dim=0))
            self.target_std.copy_(y.std(dim=0, correction=0).clamp_min(1e-6))

    def standardised(self, features: torch.Tensor) -> torch.Tensor:
        """The network's output before de-standardisation (what the loss is computed on)."""
        return self.body((features - self.feature_mean) / self.feature_std)  # type: ignore[no-any-return]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.standardised(features) * self.target_std + self.target_mean


class DigitsAutoencoder(nn.Module):
    """Convolutional denoising autoencoder: 8x8 -> 4x4 code -> 8x8, on the 0-16 pixel scale."""

    def __init__(self, channels: Sequence[int] = (32, 64), code: int = 32) -> None:
        super().__init__()
        first, second = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, first, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(first, second, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(second, code, kernel_size=1),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(code, second, kernel_size=2, stride=2),
            nn.ReLU(),
            nn.Conv2d(second, first, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(first, 1, kernel_size=3, padding=1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        unit = self.decoder(self.encoder(image / PIXEL_MAX))
        return torch.sigmoid(unit) * PIXEL_MAX


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "diabetes_mlp": DiabetesMLP,
    "digits_autoencoder": DigitsAutoencoder,
}


def build(name: str, architecture: Mapping[str, Any]) -> nn.Module:
    """A fresh module of model `name` with the manifest's `hyperparameters.architecture`."""
    return ARCHITECTURES[name](**architecture)


def load_trained(version_dir: Path) -> nn.Module:
    """Rebuild the trained module of a version folder (manifest + weights.safetensors), in eval mode."""
    manifest = json.loads((version_dir / "manifest.json").read_text())
    module = build(manifest["model"], manifest["hyperparameters"]["architecture"])
    module.load_state_dict(load_file(version_dir / "weights.safetensors"))
    return module.eval()
