"""Every statistic on every tensor of the shipped repository (models/), through the HTTP API,
against numpy on values read independently (onnx's own loader, the safetensors package)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from litestar.testing import AsyncTestClient
from onnx import numpy_helper

from service.app import create_app
from service.settings import Settings
from tests.weights.reference import assert_stats_match

MODELS = Path(__file__).resolve().parents[2] / "models"
VERSIONS = sorted(MODELS.glob("*/*/model.onnx")) if MODELS.is_dir() else []

pytestmark = pytest.mark.skipif(not VERSIONS, reason="the shipped model repository is not there")


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    async with AsyncTestClient(app=create_app(Settings(repository=MODELS, warmup=False))) as test_client:
        yield test_client


def _onnx_arrays(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("model_path", VERSIONS, ids=[f"{p.parent.parent.name}-{p.parent.name}" for p in VERSIONS])
async def test_every_statistic_on_every_tensor(client: Any, model_path: Path) -> None:
    name, version = model_path.parent.parent.name, model_path.parent.name
    base = f"/v2/models/{name}/versions/{version}/weights"
    listing = (await client.get(base)).json()
    arrays = _onnx_arrays(model_path)
    assert listing["tensors"], "a shipped model has weights"
    for tensor in listing["tensors"]:
        body = (await client.get(f"{base}/{tensor['id']}")).json()
        expected = arrays[tensor["name"]]
        assert list(expected.shape) == tensor["shape"]
        assert_stats_match(body["stats"], expected, tensor["out_axis"], f"{name}/{version} {tensor['name']}")
        assert _summary_in_listing(tensor["stats"], body["stats"])
    sidecar = model_path.parent / "weights.safetensors"
    if not sidecar.is_file():
        return
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    trained_arrays = safetensors_numpy.load_file(str(sidecar))
    for tensor in listing["trained"]:
        body = (await client.get(f"{base}/{tensor['id']}")).json()
        expected = trained_arrays[tensor["state_dict_key"]]
        label = f"{name}/{version} trained {tensor['state_dict_key']}"
        assert_stats_match(body["stats"], expected, tensor["out_axis"], label)
        if tensor["relation"] == "identical":
            assert body["counterpart"]["same_values"], label


def _summary_in_listing(listed: dict[str, Any], full: dict[str, Any]) -> bool:
    """The listing's summary numbers are the very numbers of the full tensor body."""
    return all(full[key] == value for key, value in listed.items())


async def test_folded_tensors_are_flagged_with_their_trained_counterparts(client: Any) -> None:
    listing = (await client.get("/v2/models/digits_cnn/versions/1/weights")).json()
    folded = [t for t in listing["tensors"] if t["folded"]]
    assert folded, "digits_cnn has BatchNorm folded into its convolutions"
    trained = {t["id"]: t for t in listing["trained"]}
    for tensor in folded:
        if tensor["trained_id"] is None:
            continue  # a bias the exporter created for a bias-free conv
        counterpart = trained[tensor["trained_id"]]
        assert counterpart["relation"] == "folded"
        assert counterpart["folded_from"]
        assert counterpart["sha256"] != tensor["sha256"]


async def test_digits_cnn_fine_tune_diff(client: Any) -> None:
    response = await client.get("/v2/models/digits_cnn/weights/diff?base=1&target=2")
    body = response.json()
    assert response.status_code == 200
    assert body["verdict"] == "small fine-tune"
    evidence = body["evidence"]
    assert evidence["shape_mismatches"] == evidence["only_in_base"] == evidence["only_in_target"] == 0
    assert 0 < evidence["overall_rel_l2"] < 0.25
    assert body["trained"]["verdict"] == "small fine-tune"
