"""Execution providers: per-model and global lists, fallback reported, strict mode refuses to fall back."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests import model_factory as mf

GPU_FIRST = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def repository(root: Path, config: dict[str, object] | None) -> Path:
    mf.save(mf.dense(seed=1), root, "dense")
    if config is not None:
        (root / "dense" / "config.json").write_text(json.dumps(config))
    return root


async def fetch(settings: Settings, *paths: str) -> list[httpx.Response]:
    app = create_app(settings)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.request("POST" if "index" in path else "GET", path) for path in paths]


async def test_model_config_falls_back_and_reports_what_runs(tmp_path: Path) -> None:
    settings = Settings(repository=repository(tmp_path, {"providers": GPU_FIRST}))
    config, metadata = await fetch(settings, "/v2/models/dense/config", "/v2/models/dense")
    parameters = config.json()["parameters"]
    assert parameters["requested_execution_providers"]["string_value"] == "CPUExecutionProvider"
    assert parameters["execution_providers"]["string_value"] == "CPUExecutionProvider"
    assert config.json()["instance_group"][0]["kind"] == "KIND_CPU"
    assert metadata.json()["parameters"]["execution_providers"] == "CPUExecutionProvider"


@pytest.mark.parametrize("where", ["model", "global"])
async def test_strict_providers_refuse_to_fall_back(tmp_path: Path, where: str) -> None:
    if where == "model":
        settings = Settings(repository=repository(tmp_path, {"providers": GPU_FIRST, "strict_providers": True}))
    else:
        settings = Settings(repository=repository(tmp_path, None), providers=tuple(GPU_FIRST), strict_providers=True)
    ready, index = await fetch(settings, "/v2/models/dense/ready", "/v2/repository/index")
    assert ready.status_code == 404  # refused versions are not served; the index says why
    [entry] = [e for e in index.json() if e["name"] == "dense"]
    assert entry["state"] == "UNAVAILABLE"
    assert "CUDAExecutionProvider" in entry["reason"]
    assert "strict" in entry["reason"]


async def test_session_options_from_config(tmp_path: Path) -> None:
    config = {
        "intra_op_threads": 1,
        "inter_op_threads": 1,
        "graph_optimization": "basic",
        "batching": {"enabled": False},
    }
    settings = Settings(repository=repository(tmp_path, config))
    [response] = await fetch(settings, "/v2/models/dense/config")
    assert response.status_code == 200
    assert response.json()["max_batch_size"] == 0
    assert "dynamic_batching" not in response.json()


async def test_invalid_config_is_reported_not_fatal(tmp_path: Path) -> None:
    settings = Settings(repository=repository(tmp_path, {"providers": "CPU", "nonsense": 1}))
    mf.save(mf.dense(seed=2), tmp_path, "other")
    live, index, other = await fetch(settings, "/v2/health/ready", "/v2/repository/index", "/v2/models/other/ready")
    assert live.status_code == 200
    assert other.status_code == 200
    [entry] = [e for e in index.json() if e["name"] == "dense"]
    assert entry["state"] == "UNAVAILABLE"
    assert "config.json" in entry["reason"]


async def test_onnxruntime_threads_do_not_spin_between_runs(tmp_path: Path) -> None:
    # A spinning pool thread would burn a core the event loop and the other workers need.
    app = create_app(Settings(repository=repository(tmp_path, None), intra_op_threads=2))
    async with app.lifespan():
        model = app.state.registry.get("dense").model
        assert model.session_config == {
            "session.intra_op.allow_spinning": "0",
            "session.inter_op.allow_spinning": "0",
        }
