"""Spectral analysis as background jobs: off the request, at lower priority, watchable, computed once
per machine whichever process asks, and surviving a crashed analysis process."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.settings import WeightSettings
from service.weights.analysis_process import AnalysisCrashed, AnalysisProcess
from service.weights.analysis_task import AnalysisTask
from service.weights.disk_cache import DiskCache
from service.weights.report import model_report, tensor_report
from service.weights.spectral import SpectralLimits, matrix_shape, spectral_metrics
from service.weights.store import WeightStore
from service.weights.version import VersionWeights
from tests.weights.analysis_helpers import Exploding, Sleeping, mlp_weights, thread_nices, wait_done, write_mlp

SPAWN = multiprocessing.get_context("spawn")
WEIGHTS = mlp_weights()


def _background(cache: Path, **options: Any) -> WeightStore:
    """A store that sends every matrix, however small, to the background analysis."""
    return WeightStore(WeightSettings(cache_dir=cache, analysis_inline_work=0, **options))


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return write_mlp(tmp_path / "mlp" / "1", WEIGHTS, external=True)


def _version(store: WeightStore, path: Path) -> VersionWeights:
    return store.open("mlp 1", path)


def test_the_listing_answers_at_once_and_the_job_fills_it_in(mlp: Path, private_cache: Path) -> None:
    store = _background(private_cache)
    version = _version(store, mlp)
    first = model_report(store, version, "mlp", 1)
    states = {t["name"]: t["spectral"]["analysis"] for t in first["tensors"]}
    assert set(states.values()) <= {"queued", "running", "done"}
    assert [layer["analysis"] for layer in first["layers"]] == [states[f"w{i}"] for i in range(3)]
    assert first["analysis"]["layers"]["total"] == 3
    assert first["analysis"]["url"] == "/v2/models/mlp/versions/1/weights/analysis"
    status = wait_done(lambda: store.analysis(version))
    assert status["layers"] == {"done": 3, "running": 0, "queued": 0, "failed": 0, "total": 3}
    assert status["work"]["done"] == status["work"]["total"] == sum(
        matrix_shape(w.shape, False).work for w in WEIGHTS)  # type: ignore[union-attr]
    assert (status["progress"], status["eta_s"]) == (1.0, 0.0)
    assert status["finished_at"] >= status["started_at"]
    assert status["elapsed_s"] == pytest.approx(status["finished_at"] - status["started_at"])
    assert all(m["state"] == "done" and m["computed_here"] and m["seconds"] is not None for m in status["matrices"])
    done = model_report(store, version, "mlp", 1)
    for i, weight in enumerate(WEIGHTS):
        spectral = next(t["spectral"] for t in done["tensors"] if t["name"] == f"w{i}")
        want = spectral_metrics(weight, conv=False)
        assert spectral["analysis"] == "done"
        for key in ("alpha", "D", "xmin", "log_norm", "stable_rank", "entropy", "matrix_rank", "num_pl_spikes"):
            assert spectral[key] == pytest.approx(want[key], rel=1e-12), key
    assert done["summary"]["spectral_pending"] == 0
    assert store.disk.counters.get("spectral", "computed") == 3
    store.close()


def test_a_watcher_never_sees_a_matrix_done_before_its_timing(tmp_path: Path, private_cache: Path) -> None:
    """Polled without pause while the job runs: whenever a matrix computed here reads done, its time and
    the computed count are already there (they went in before the entry became visible)."""
    weights = mlp_weights(seed=3, shapes=((160, 120),) * 10)
    store = _background(private_cache)
    version = store.open("mlp 1", write_mlp(tmp_path / "mlp" / "1", weights, external=True))
    polls, deadline = 0, time.monotonic() + 120
    while True:
        status = store.analysis(version)
        polls += 1
        done = [m for m in status["matrices"] if m["state"] == "done"]
        for matrix in done:
            assert matrix["computed_here"], (polls, matrix)
            assert matrix["seconds"] is not None, (polls, matrix)
        assert store.disk.counters.get("spectral", "computed") >= len(done)
        if status["state"] == "done":
            break
        assert time.monotonic() < deadline, status
    assert len(done) == len(weights)
    store.close()


def test_the_tensor_document_carries_its_eigenvalues(mlp: Path, private_cache: Path) -> None:
    store = _background(private_cache, spectral_listed_eigenvalues=50)
    version = _version(store, mlp)
    wait_done(lambda: store.analysis(version))
    tensor = version.graph.tensor_by_name("w0")
    assert tensor is not None
    body = tensor_report(store, version, tensor.id, 64, "minmax")
    listing = body["spectral"]["eigenvalues"]
    want = np.sort(np.linalg.svd(WEIGHTS[0].astype(np.float64), compute_uv=False) ** 2)
    assert listing["count"] == body["spectral"]["num_evals"] == 64
    assert listing["sum"] == pytest.approx(body["spectral"]["norm"], rel=1e-12)
    assert listing["truncated"]
    np.testing.assert_allclose(listing["values"], want[-50:], rtol=1e-9)
    assert sum(listing["log10_histogram"]["counts"]) == 64
    store.close()


def test_the_analysis_process_runs_niced_with_bounded_threads(mlp: Path, private_cache: Path) -> None:
    store = WeightStore(WeightSettings(cache_dir=private_cache))
    version = _version(store, mlp)
    task = store.spectral_task(version, version.graph.tensors[next(iter(version.graph.tensors))])
    assert isinstance(task, AnalysisTask)
    process = AnalysisProcess(threads=1, nice=7)
    try:
        result = process.run(task, SpectralLimits())
        assert result.doc["status"] == "success"
        assert process.pid is not None
        assert min(thread_nices(process.pid)) >= 7
        with open(f"/proc/{process.pid}/environ", "rb") as handle:
            environ = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
        assert environ[b"OPENBLAS_NUM_THREADS"] == b"1"
    finally:
        process.close()
    store.close()


def test_a_crashed_analysis_process_fails_that_matrix_only(mlp: Path, private_cache: Path) -> None:
    store = _background(private_cache)
    version = _version(store, mlp)
    tasks = [store.spectral_task(version, t) for t in version.graph.tensors.values()]
    assert all(isinstance(t, AnalysisTask) for t in tasks)
    real = [t for t in tasks if isinstance(t, AnalysisTask)]
    crashing = AnalysisTask("crash-key", Exploding(), real[0].directory, None, False, real[0].shape)  # type: ignore[arg-type]
    store.analyzer.submit("job-with-a-crash", "mlp 1", [real[0], crashing, *real[1:]])
    status = wait_done(lambda: store.analyzer.job_status("job-with-a-crash", [real[0], crashing, *real[1:]], set()))
    assert status["layers"] == {"done": 3, "running": 0, "queued": 0, "failed": 1, "total": 4}
    state, info = store.analyzer.state("crash-key")
    assert state == "failed"
    assert info is not None
    assert "exited" in info["reason"]
    process = AnalysisProcess(threads=1, nice=0)
    try:
        with pytest.raises(AnalysisCrashed, match="exited"):
            process.run(crashing, SpectralLimits())
        assert process.run(real[0], SpectralLimits()).doc["status"] == "success"  # a new process
    finally:
        process.close()
    store.close()


def test_a_matrix_held_elsewhere_is_reported_running_and_left_to_its_holder(mlp: Path, private_cache: Path) -> None:
    store = _background(private_cache)
    version = _version(store, mlp)
    held = store.spectral_task(version, next(t for t in version.graph.tensors.values() if t.name == "w1"))
    assert isinstance(held, AnalysisTask)
    elsewhere = DiskCache(private_cache, 1 << 30)  # another process's view of the folder
    with elsewhere.lock(held.key) as got:
        assert got
        status = wait_done(lambda: _done_but(store.analysis(version), held.key))
        assert status["layers"]["running"] == 1
        entry = next(m for m in status["matrices"] if m["tensors"][0]["name"] == "w1")
        assert entry["state"] == "running"
        assert store.disk.counters.get("spectral", "computed") == 2
    wait_done(lambda: store.analysis(version))
    assert store.disk.counters.get("spectral", "computed") == 3
    store.close()


def _done_but(status: dict[str, Any], key: str) -> dict[str, Any]:
    """Done apart from one matrix that is running elsewhere."""
    others_done = status["layers"]["done"] == status["layers"]["total"] - 1 and status["layers"]["running"] == 1
    return status | {"state": "done" if others_done else status["state"]}


def _analyse_in_a_process(path: str, cache: str, queue: Any) -> None:
    store = WeightStore(WeightSettings(cache_dir=Path(cache), analysis_inline_work=0))
    version = store.open("mlp 1", Path(path))
    status = wait_done(lambda: store.analysis(version))
    report = model_report(store, version, "mlp", 1)
    queue.put((os.getpid(), store.disk.counters.get("spectral", "computed"), status, report["tensors"]))
    store.close()


def test_two_processes_share_one_job_and_compute_each_matrix_once(tmp_path: Path, private_cache: Path) -> None:
    weights = mlp_weights(1, ((300, 200), (200, 240), (240, 160), (160, 120), (120, 100), (100, 90)))
    path = write_mlp(tmp_path / "wide" / "1", weights, external=True)
    queue = SPAWN.Queue()
    workers = [SPAWN.Process(target=_analyse_in_a_process, args=(str(path), str(private_cache), queue))
               for _ in range(2)]
    for process in workers:
        process.start()
    results = [queue.get(timeout=180) for _ in workers]
    for process in workers:
        process.join(60)
    assert sum(computed for _, computed, _, _ in results) == len(weights)
    (_, _, first, tensors_a), (_, _, second, tensors_b) = results
    assert tensors_a == tensors_b
    for key in ("id", "started_at", "finished_at", "layers", "work"):
        assert first[key] == second[key], key


def test_job_state_reads_the_same_from_a_fresh_process(mlp: Path, private_cache: Path) -> None:
    store = _background(private_cache)
    done = wait_done(lambda: store.analysis(_version(store, mlp)))
    store.close()
    fresh = _background(private_cache)
    again = fresh.analysis(_version(fresh, mlp), start=False)
    for key in ("id", "state", "layers", "work", "started_at", "finished_at", "elapsed_s"):
        assert again[key] == done[key], key
    assert fresh.disk.counters.get("spectral", "computed") == 0
    assert all(not m["computed_here"] for m in again["matrices"])
    fresh.close()


def test_inline_analysis_of_tiny_matrices_is_still_once_per_machine(mlp: Path, private_cache: Path) -> None:
    store = WeightStore(WeightSettings(cache_dir=private_cache))  # default: these matrices are tiny
    version = _version(store, mlp)
    report = model_report(store, version, "mlp", 1)
    assert report["analysis"]["state"] == "done"
    assert all(t["spectral"]["analysis"] == "done" for t in report["tensors"])
    assert store.disk.counters.get("spectral", "computed") == 3
    other = WeightStore(WeightSettings(cache_dir=private_cache))
    model_report(other, _version(other, mlp), "mlp", 1)
    assert other.disk.counters.get("spectral", "computed") == 0
    store.close()
    other.close()


def _start_analysis_process(path: str, cache: str, queue: Any) -> None:
    import time

    store = WeightStore(WeightSettings(cache_dir=Path(cache)))
    version = store.open("mlp 1", Path(path))
    task = store.spectral_task(version, next(iter(version.graph.tensors.values())))
    assert isinstance(task, AnalysisTask)
    process = AnalysisProcess(threads=1, nice=0)
    process.run(task, SpectralLimits())
    queue.put(process.pid)
    # an analysis that never ends: the process is busy, not reading its stdin, when we die
    endless = AnalysisTask("endless", Sleeping(), task.directory, None, False, task.shape)  # type: ignore[arg-type]
    process.run(endless, SpectralLimits())
    time.sleep(120)


def test_the_analysis_process_goes_with_its_parent_even_mid_analysis(mlp: Path, private_cache: Path) -> None:
    import signal
    import time

    queue = SPAWN.Queue()
    parent = SPAWN.Process(target=_start_analysis_process, args=(str(mlp), str(private_cache), queue))
    parent.start()
    try:
        child = queue.get(timeout=120)
        os.kill(child, 0)  # alive
        parent.kill()
        parent.join(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break  # dead, waiting for its reaper
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the analysis process outlived its parent")
    finally:
        parent.kill()
        parent.join(30)


def test_eigenvalues_whose_entry_went_away_are_computed_again(mlp: Path, private_cache: Path) -> None:
    import shutil

    store = WeightStore(WeightSettings(cache_dir=private_cache))  # small matrices: analysed in the request
    version = _version(store, mlp)
    tensor = version.graph.tensor_by_name("w0")
    assert tensor is not None
    first = tensor_report(store, version, tensor.id, 64, "minmax")["spectral"]["eigenvalues"]
    shutil.rmtree(private_cache / "v1" / "entries")  # evicted, or a cleaned cache folder
    (private_cache / "v1" / "entries").mkdir()
    again = tensor_report(store, version, tensor.id, 64, "minmax")["spectral"]["eigenvalues"]
    assert again == first
    assert store.disk.counters.get("spectral", "computed") == 2  # once, then once more
    store.close()
