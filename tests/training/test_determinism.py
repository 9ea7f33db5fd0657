"""Same seed, same numbers: a run on CPU is reproducible bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import read_manifest, train

pytestmark = pytest.mark.torch


def _weights_sha(version_dir: Path) -> str:
    return str(read_manifest(version_dir)["files"]["weights.safetensors"]["sha256"])


@pytest.mark.parametrize(("name", "epochs"), [("diabetes_mlp", 3), ("digits_autoencoder", 1)])
def test_two_runs_with_one_seed_give_identical_weights(tmp_path: Path, name: str, epochs: int) -> None:
    first = train(tmp_path, name, seed=11, epochs=epochs)
    second = train(tmp_path, name, seed=11, epochs=epochs)
    assert (first.version, second.version) == (1, 2)
    assert (first.directory / "weights.safetensors").read_bytes() == (
        second.directory / "weights.safetensors"
    ).read_bytes()
    assert first.metrics == second.metrics


def test_another_seed_gives_other_weights(tmp_path: Path) -> None:
    first = train(tmp_path, "diabetes_mlp", seed=11, epochs=3)
    other = train(tmp_path, "diabetes_mlp", seed=12, epochs=3)
    assert _weights_sha(first.directory) != _weights_sha(other.directory)
    assert read_manifest(other.directory)["split"]["seed"] == 12
