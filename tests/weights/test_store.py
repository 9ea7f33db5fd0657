from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings, WeightSettings
from service.weights.report import model_report
from service.weights.store import WeightStore
from service.weights.version import VersionWeights


def _open(store: WeightStore, repository: Path, version: int) -> VersionWeights:
    folder = repository / "clf" / str(version)
    weights = folder / "weights.safetensors"
    return store.open(f"clf {version}", folder / "model.onnx", weights if weights.is_file() else None)


def test_statistics_are_computed_once_per_content(repository: Path) -> None:
    store = WeightStore(WeightSettings())
    v1 = _open(store, repository, 1)
    first = model_report(store, v1, "clf", 1)
    after_first = store.cache_sizes()
    assert model_report(store, v1, "clf", 1) == first
    assert store.cache_sizes() == after_first
    # Version 4 holds the same tensors (without a sidecar): nothing new is computed for it.
    model_report(store, _open(store, repository, 4), "clf", 4)
    assert store.cache_sizes()["stats"] == after_first["stats"]
    assert store.cache_sizes()["spectral"] == after_first["spectral"]


def test_caches_are_bounded(repository: Path) -> None:
    store = WeightStore(WeightSettings(cache_entries=3, cached_versions=1))
    for version in (1, 2, 3):
        model_report(store, _open(store, repository, version), "clf", version)
    assert all(size <= 3 for size in store.cache_sizes().values())
    assert store.cache_sizes()["versions"] == 1


def test_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_SPECTRAL_BUDGET", "1000")
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_VALUES_MAX_BYTES", "10")
    options = Settings().weights
    assert (options.spectral_budget, options.values_max_bytes) == (1000.0, 10)
