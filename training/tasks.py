"""What differs between the three models: data, loss, metrics, tensor names, manifest task entry, examples."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional as F

from training import data, metrics
from training.architectures import PIXEL_MAX, DiabetesMLP, build
from training.examples import Example
from training.loop import LossFn

Outputs = NDArray[np.float32]
EXAMPLE_ROWS = 20
"""Held-out rows in each model's evaluation example (`examples/labelled-20.json`)."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A split made ready for one task: training rows and the held-out inputs and targets."""

    split: data.Split
    eval_inputs: NDArray[np.float32]
    eval_targets: NDArray[np.float32] | NDArray[np.int64]


class Task(ABC):
    name: str
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    defaults: Mapping[str, Any]
    """Default hyperparameters: `architecture` (constructor kwargs) plus the schedule."""

    @abstractmethod
    def prepare(self, seed: int, hyperparameters: Mapping[str, Any]) -> Prepared: ...

    @abstractmethod
    def loss(self, module: nn.Module, hyperparameters: Mapping[str, Any]) -> LossFn:
        """The loss for `module` (unwrapped; the returned function is called with the DDP wrapper)."""

    @abstractmethod
    def evaluate(self, outputs: Outputs, prepared: Prepared) -> dict[str, float]: ...

    @abstractmethod
    def manifest_task(self) -> dict[str, Any]: ...

    @abstractmethod
    def examples(self, prepared: Prepared, seed: int) -> dict[str, Example]:
        """A few real held-out samples as example requests (`models/<name>/examples/`)."""

    def describe_dataset(self, prepared: Prepared, seed: int, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest's `dataset` entry."""
        return dict(prepared.split.dataset)

    def build(self, hyperparameters: Mapping[str, Any], prepared: Prepared) -> nn.Module:
        return build(self.name, hyperparameters["architecture"])


class DigitsClassifier(Task):
    name = "digits_cnn"
    input_name = "image"
    output_name = "logits"
    input_shape = (-1, 1, 8, 8)
    output_shape = (-1, 10)
    defaults: Mapping[str, Any] = {
        "architecture": {"channels": [32, 64, 64]},
        "epochs": 30,
        "batch_size": 64,
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "optimizer": "AdamW",
        "lr_schedule": "cosine",
    }
    labels: tuple[str, ...] = tuple(str(d) for d in range(10))

    def prepare(self, seed: int, hyperparameters: Mapping[str, Any]) -> Prepared:
        split = data.digits(seed)
        return Prepared(split, split.x_test, split.y_test)

    def loss(self, module: nn.Module, hyperparameters: Mapping[str, Any]) -> LossFn:
        def cross_entropy(
            model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
        ) -> torch.Tensor:
            return F.cross_entropy(model(x), y)

        return cross_entropy

    def evaluate(self, outputs: Outputs, prepared: Prepared) -> dict[str, float]:
        labels = np.asarray(prepared.eval_targets, dtype=np.int64)
        return {"accuracy": metrics.accuracy(outputs, labels)}

    def manifest_task(self) -> dict[str, Any]:
        return {"kind": "classification", "labels": list(self.labels)}

    def examples(self, prepared: Prepared, seed: int) -> dict[str, Example]:
        images, labels = prepared.eval_inputs, np.asarray(prepared.eval_targets)
        found: dict[str, Example] = {}
        for digit in (3, 7):
            row = int(np.flatnonzero(labels == digit)[0])
            about = f"a held-out {digit}: row {row} of the test split (seed {seed}), pixels 0-16"
            found[f"digit-{digit}"] = Example({self.input_name: images[row : row + 1]}, description=about)
        about = f"the first {EXAMPLE_ROWS} held-out digits (seed {seed}) with their labels, for /evaluate"
        found[f"labelled-{EXAMPLE_ROWS}"] = Example(
            {self.input_name: images[:EXAMPLE_ROWS]}, targets=labels[:EXAMPLE_ROWS], description=about
        )
        return found


class DiabetesRegressor(Task):
    name = "diabetes_mlp"
    input_name = "features"
    output_name = "prediction"
    input_shape = (-1, 10)
    output_shape = (-1, 1)
    defaults: Mapping[str, Any] = {
        "architecture": {"features": 10, "hidden": [16], "dropout": 0.0},
        "epochs": 100,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 1e-2,
        "optimizer": "AdamW",
        "lr_schedule": "cosine",
    }

    def prepare(self, seed: int, hyperparameters: Mapping[str, Any]) -> Prepared:
        split = data.diabetes(seed)
        return Prepared(split, split.x_test, split.y_test)

    def build(self, hyperparameters: Mapping[str, Any], prepared: Prepared) -> nn.Module:
        module = build(self.name, hyperparameters["architecture"])
        assert isinstance(module, DiabetesMLP)
        x = torch.from_numpy(prepared.split.x_train)
        y = torch.from_numpy(np.asarray(prepared.split.y_train, dtype=np.float32))
        module.fit_scaling(x, y)
        return module

    def loss(self, module: nn.Module, hyperparameters: Mapping[str, Any]) -> LossFn:
        assert isinstance(module, DiabetesMLP)
        target_std = module.target_std

        def standardised_mse(
            model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
        ) -> torch.Tensor:
            # MSE in target standard deviations: the scale the network itself works in.
            return F.mse_loss(model(x) / target_std, y / target_std)

        return standardised_mse

    def evaluate(self, outputs: Outputs, prepared: Prepared) -> dict[str, float]:
        return metrics.regression(outputs, np.asarray(prepared.eval_targets, dtype=np.float32))

    def manifest_task(self) -> dict[str, Any]:
        return {"kind": "regression", "targets": ["disease_progression"]}

    def examples(self, prepared: Prepared, seed: int) -> dict[str, Example]:
        features, targets = prepared.eval_inputs, np.asarray(prepared.eval_targets, dtype=np.float32)
        about = f"a held-out patient's raw features: row 0 of the test split (seed {seed})"
        rows = f"the first {EXAMPLE_ROWS} held-out patients (seed {seed}) with their disease progression, for /evaluate"
        return {
            "patient-0": Example({self.input_name: features[:1]}, description=about),
            f"labelled-{EXAMPLE_ROWS}": Example(
                {self.input_name: features[:EXAMPLE_ROWS]}, targets=targets[:EXAMPLE_ROWS], description=rows
            ),
        }


class DigitsDenoiser(Task):
    name = "digits_autoencoder"
    input_name = "image"
    output_name = "reconstruction"
    input_shape = (-1, 1, 8, 8)
    output_shape = (-1, 1, 8, 8)
    defaults: Mapping[str, Any] = {
        "architecture": {"channels": [32, 64], "code": 32},
        "noise_std": 4.0,
        "epochs": 60,
        "batch_size": 64,
        "lr": 3e-3,
        "weight_decay": 1e-5,
        "optimizer": "AdamW",
        "lr_schedule": "cosine",
    }

    def prepare(self, seed: int, hyperparameters: Mapping[str, Any]) -> Prepared:
        split = data.digits(seed)
        # The held-out noise is fixed by the seed so every evaluation sees the same noisy images.
        noisy = data.add_noise(split.x_test, hyperparameters["noise_std"], np.random.default_rng([seed, 1]))
        return Prepared(split, noisy, split.x_test)

    def loss(self, module: nn.Module, hyperparameters: Mapping[str, Any]) -> LossFn:
        std = float(hyperparameters["noise_std"])

        def denoising_mse(
            model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
        ) -> torch.Tensor:
            # Fresh noise every batch; the clean image is the target (the labels `y` are unused).
            noise = torch.randn(x.shape, generator=generator) * std
            noisy = (x + noise).clamp(0.0, PIXEL_MAX)
            return F.mse_loss(model(noisy) / PIXEL_MAX, x / PIXEL_MAX)

        return denoising_mse

    def evaluate(self, outputs: Outputs, prepared: Prepared) -> dict[str, float]:
        clean = np.asarray(prepared.eval_targets, dtype=np.float32)
        return metrics.image_to_image(outputs, prepared.eval_inputs, clean, PIXEL_MAX)

    def manifest_task(self) -> dict[str, Any]:
        return {"kind": "image_to_image", "data_range": PIXEL_MAX}

    def examples(self, prepared: Prepared, seed: int) -> dict[str, Example]:
        noisy, clean = prepared.eval_inputs, np.asarray(prepared.eval_targets, dtype=np.float32)
        row = int(np.flatnonzero(prepared.split.y_test == 3)[0])
        about = f"a held-out 3 with the fixed test noise: row {row} of the test split (seed {seed})"
        rows = f"the first {EXAMPLE_ROWS} held-out digits (seed {seed}), noisy, with the clean images as targets"
        return {
            "noisy-digit-3": Example({self.input_name: noisy[row : row + 1]}, description=about),
            f"labelled-{EXAMPLE_ROWS}": Example(
                {self.input_name: noisy[:EXAMPLE_ROWS]}, targets=clean[:EXAMPLE_ROWS], description=rows
            ),
        }

    def describe_dataset(self, prepared: Prepared, seed: int, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        noise = {
            "kind": "gaussian",
            "std": hyperparameters["noise_std"],
            "clip": [0.0, PIXEL_MAX],
            "test_noise_rng": "numpy.random.default_rng([seed, 1])",
        }
        return dict(prepared.split.dataset) | {"noise": noise, "ssim": metrics.SSIM_DEFINITION}


TASKS: dict[str, Callable[[], Task]] = {
    "digits_cnn": DigitsClassifier,
    "diabetes_mlp": DiabetesRegressor,
    "digits_autoencoder": DigitsDenoiser,
}
