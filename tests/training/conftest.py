"""Tiny real training runs (one epoch) shared by the training tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the training tests need the 'train' extra")

from training import job
from training.distributed import World

MODELS = ("digits_cnn", "diabetes_mlp", "digits_autoencoder")
REPOSITORY = Path(__file__).resolve().parents[2] / "models"
"""The model repository shipped in git."""

Train = Callable[..., job.Result]


def train(repository: Path, name: str, **request: Any) -> job.Result:
    """Run one job in this process (single rank) and return what it published."""
    result = job.run(job.plan(job.Request(name, repository, **request)), World(rank=0, size=1))
    assert result is not None
    return result


def read_manifest(version_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((version_dir / "manifest.json").read_text())
    return manifest


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 of each model after a single epoch, plus digits_cnn 2 fine-tuned from 1 for one epoch."""
    root = tmp_path_factory.mktemp("tiny-models")
    for name in MODELS:
        train(root, name, seed=5, epochs=1)
    train(root, "digits_cnn", seed=5, epochs=1, finetune_from=1)
    return root
