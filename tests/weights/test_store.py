"""The weight store: each figure computed once per machine, shown by its own counters."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings, WeightSettings
from service.weights.report import model_report
from service.weights.store import WeightStore
from service.weights.version import VersionWeights

SPAWN = multiprocessing.get_context("spawn")


def _open(store: WeightStore, repository: Path, version: int) -> VersionWeights:
    folder = repository / "clf" / str(version)
    weights = folder / "weights.safetensors"
    return store.open(f"clf {version}", folder / "model.onnx", weights if weights.is_file() else None)


def _computed(store: WeightStore, kind: str) -> int:
    return store.disk.counters.get(kind, "computed")


def test_statistics_are_computed_once_per_content(repository: Path, private_cache: Path) -> None:
    store = WeightStore(WeightSettings(cache_dir=private_cache))
    v1 = _open(store, repository, 1)
    first = model_report(store, v1, "clf", 1)
    tensors = len(first["tensors"]) + len(first["trained"])
    # the sidecar's tensors identical to the ONNX ones (all but the transposed one) share their figures
    assert _computed(store, "stats") == tensors - (len(first["trained"]) - 1)
    after_first = store.disk.counters.snapshot()
    assert model_report(store, v1, "clf", 1) == first
    assert store.disk.counters.snapshot() == after_first
    # Version 4 holds the same tensors (without a sidecar): nothing new is computed for it.
    model_report(store, _open(store, repository, 4), "clf", 4)
    assert _computed(store, "stats") == after_first["stats"]["computed"]
    assert _computed(store, "spectral") == after_first["spectral"]["computed"]
    store.close()


def test_memory_caches_are_bounded(repository: Path, private_cache: Path) -> None:
    store = WeightStore(WeightSettings(cache_entries=3, cached_versions=1, cache_dir=private_cache))
    for version in (1, 2, 3):
        model_report(store, _open(store, repository, version), "clf", version)
    assert all(size <= 3 for size in store.cache_sizes().values())
    assert store.cache_sizes()["versions"] == 1
    store.close()


def test_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_SPECTRAL_MAX_M", "1000")
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_VALUES_MAX_BYTES", "10")
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_CACHE_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_CACHE_MAX_BYTES", "5000000")
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_ANALYSIS_WORKERS", "2")
    options = Settings().weights
    assert (options.spectral_max_m, options.values_max_bytes) == (1000, 10)
    assert (options.cache_dir, options.cache_max_bytes, options.analysis_workers) == (tmp_path / "shared", 5000000, 2)


def _report_in_a_process(repository: str, cache: str, queue: Any) -> None:
    """Another worker process: its own store on the same folder; what it had to compute."""
    store = WeightStore(WeightSettings(cache_dir=Path(cache)))
    folder = Path(repository) / "clf" / "1"
    version = store.open("clf 1", folder / "model.onnx", folder / "weights.safetensors")
    report = model_report(store, version, "clf", 1)
    queue.put((store.disk.counters.snapshot(), report["tensors"]))
    store.close()


def test_a_second_process_and_a_restart_compute_nothing(repository: Path, private_cache: Path) -> None:
    queue = SPAWN.Queue()
    runs = []
    for _ in range(2):  # the second process starts after the first one has gone: a restart
        process = SPAWN.Process(target=_report_in_a_process, args=(str(repository), str(private_cache), queue))
        process.start()
        runs.append(queue.get(timeout=120))
        process.join(60)
        assert process.exitcode == 0
    (first, tensors), (second, again) = runs
    assert first["stats"]["computed"] > 0
    assert first["spectral"]["computed"] > 0
    for kind in ("stats", "spectral", "hashes"):
        assert second.get(kind, {}).get("computed", 0) == 0, kind
        assert second[kind]["hits"] > 0, kind
    assert again == tensors


def test_a_corrupt_entry_is_recomputed_not_served(repository: Path, private_cache: Path) -> None:
    store = WeightStore(WeightSettings(cache_dir=private_cache))
    before = model_report(store, _open(store, repository, 1), "clf", 1)
    store.close()
    entries = sorted((private_cache / "v1" / "entries").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    files = [p for p in entries if p.is_file()]
    for path in files[-3:]:  # the largest entries: statistics with histograms
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fresh = WeightStore(WeightSettings(cache_dir=private_cache))
    after = model_report(fresh, _open(fresh, repository, 1), "clf", 1)
    events = fresh.disk.counters.snapshot()
    assert sum(kind.get("corrupt", 0) for kind in events.values()) == 3
    assert sum(kind.get("computed", 0) for kind in events.values()) == 3
    assert after["tensors"] == before["tensors"]
    fresh.close()
