"""One weights cache per machine, through real servers: several worker processes compute each figure
once, a restarted server computes nothing, a corrupt entry is recomputed, and predictions keep being
answered while an analysis runs. The evidence is the servers' own computation counters (the job
resource reports each process's), never timing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.weights.disk_cache import DiskCache
from tests.server import RunningServer, serve
from tests.weights.analysis_helpers import mlp_weights, write_mlp

JOB = "/v2/models/mlp/versions/1/weights/analysis"
LISTING = "/v2/models/mlp/versions/1/weights"
BACKGROUND = {"WEIGHTSERVE_WEIGHTS_ANALYSIS_INLINE_WORK": "0"}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_mlp(root / "mlp" / "1", mlp_weights(0), external=True)
    return root


def _get(server: RunningServer, path: str) -> Any:
    """A fresh connection per call, so the kernel spreads the calls over the worker processes."""
    response = httpx.get(server.base_url + path, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _events(job: dict[str, Any], kind: str, event: str) -> int:
    return int(job["cache"]["events"].get(kind, {}).get(event, 0))


def _every_worker(server: RunningServer, workers: int) -> dict[int, dict[str, Any]]:
    """The job resource as each worker process answers it, once the job is done everywhere."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(400):
        job = _get(server, JOB)
        if job["state"] == "done":
            seen[job["cache"]["process"]] = job
            if len(seen) == workers:
                return seen
        time.sleep(0.02)
    raise AssertionError(f"saw {sorted(seen)} of {workers} workers")


@pytest.fixture
def first_run(repository: Path, tmp_path: Path) -> Iterator[tuple[dict[int, dict[str, Any]], dict[str, Any]]]:
    with serve(repository, tmp_path, env={"WEIGHTSERVE_WORKERS": "2", **BACKGROUND}) as server:
        listings = [_get(server, LISTING) for _ in range(6)]  # both workers get asked, most likely
        workers = _every_worker(server, 2)
        yield workers, listings[-1] | {"tensors": _get(server, LISTING)["tensors"]}


def test_worker_processes_compute_each_figure_once(
    first_run: tuple[dict[int, dict[str, Any]], dict[str, Any]],
) -> None:
    workers, listing = first_run
    matrices = len(listing["tensors"])
    assert matrices == 3
    for kind, expected in (("spectral", matrices), ("stats", matrices), ("hashes", matrices)):
        assert sum(_events(job, kind, "computed") for job in workers.values()) == expected, kind
    jobs = list(workers.values())
    for key in ("id", "state", "layers", "work", "started_at", "finished_at"):
        assert jobs[0][key] == jobs[1][key], key  # the same answer from either process
    assert [m["state"] for m in jobs[0]["matrices"]] == ["done"] * 3


def test_a_restarted_server_computes_nothing_and_corrupt_entries_are_recomputed(
    first_run: tuple[dict[int, dict[str, Any]], dict[str, Any]], repository: Path, tmp_path: Path,
    private_cache: Path,
) -> None:
    _, before = first_run
    with serve(repository, tmp_path, env={"WEIGHTSERVE_WORKERS": "1", **BACKGROUND}) as server:
        listing = _get(server, LISTING)
        job = _get(server, JOB)
    assert listing["tensors"] == before["tensors"]
    assert listing["analysis"]["state"] == job["state"] == "done"
    for kind in ("spectral", "stats", "hashes"):
        assert _events(job, kind, "computed") == 0, kind
        assert _events(job, kind, "hits") > 0, kind

    cache = DiskCache(private_cache, 1 << 30)
    damaged = {"spectral": 0, "stats": 0}
    for path in sorted((private_cache / "v1" / "entries").rglob("*")):
        entry = cache.get("probe", path.name) if path.is_file() else None
        kind = "spectral" if entry and "alpha" in entry.doc else "stats" if entry and "numel" in entry.doc else None
        if kind is not None and not damaged[kind]:
            path.write_bytes(path.read_bytes()[:-100])  # truncated, as by a crash or a full disk
            damaged[kind] += 1
    assert damaged == {"spectral": 1, "stats": 1}
    with serve(repository, tmp_path, env={"WEIGHTSERVE_WORKERS": "1", **BACKGROUND}) as server:
        _get(server, LISTING)
        for _ in range(1200):
            job = _get(server, JOB)
            if job["state"] == "done":
                break
            time.sleep(0.05)
        again = _get(server, LISTING)
    assert job["state"] == "done"
    assert _events(job, "spectral", "computed") == 1
    assert _events(job, "stats", "computed") == 1
    assert _events(job, "spectral", "corrupt") + _events(job, "stats", "corrupt") == 2
    assert again["tensors"] == before["tensors"]


def test_predictions_are_answered_while_an_analysis_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    weights = [(rng.normal(size=(1536, 1536)) * 0.03).astype(np.float32) for _ in range(4)]
    root = tmp_path / "models"
    write_mlp(root / "mlp" / "1", weights, external=True)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1536], "data": [0.1] * 1536}]}
    expected = np.full((1, 1536), 0.1, np.float32)
    for i, weight in enumerate(weights):
        expected = expected @ weight
        if i < len(weights) - 1:
            expected = np.maximum(expected, 0)
    with serve(root, tmp_path, env={"WEIGHTSERVE_WORKERS": "1"}) as server, httpx.Client(
        base_url=server.base_url, timeout=60
    ) as client:
        assert client.get(LISTING).json()["analysis"]["state"] != "done"
        answered_while_running = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            # paced: the analysis runs niced, so a client that kept both cores busy would starve it
            time.sleep(0.05)
            response = client.post("/v2/models/mlp/versions/1/infer", json=body)
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected.reshape(-1), rtol=1e-3,
                                       atol=1e-4)
            state = client.get(JOB).json()["state"]
            if state == "done":
                break
            answered_while_running += 1
        assert state == "done"
    assert answered_while_running > 0
