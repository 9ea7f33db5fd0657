"""End to end on a real ``weightserve serve`` process with the shipped models: held-out metrics from
/evaluate reproduce the ones the training job wrote into each manifest, and /explain and
/activations answer over the wire (binary tensors in, PNG or JSON out)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.server import RunningServer, serve

data = pytest.importorskip("training.data")

MODELS = Path(__file__).resolve().parents[2] / "models"
pytestmark = pytest.mark.skipif(not (MODELS / "digits_cnn").is_dir(), reason="no shipped model repository")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(MODELS, tmp_path_factory.mktemp("logs")) as running:
        yield running


def _binary_body(
    tensors: dict[str, np.ndarray], parameters: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    types = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "datatype": types[array.dtype],
                "shape": list(array.shape),
                "parameters": {"binary_data_size": array.nbytes},
            }
            for name, array in tensors.items()
        ]
    }
    if parameters:
        header["parameters"] = parameters
    head = json.dumps(header).encode()
    body = head + b"".join(np.ascontiguousarray(a).tobytes() for a in tensors.values())
    return body, {"Inference-Header-Content-Length": str(len(head))}


def _post(server: RunningServer, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", content=body, headers=headers, timeout=60)


def _manifest(name: str, version: int = 1) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((MODELS / name / str(version) / "manifest.json").read_text())
    return manifest


@pytest.mark.parametrize("version", [1, 2])
def test_evaluate_reproduces_the_digits_cnn_manifest(server: RunningServer, version: int) -> None:
    manifest = _manifest("digits_cnn", version)
    split = data.digits(manifest["split"]["seed"])

    body, headers = _binary_body({"image": split.x_test, "targets": split.y_test.astype(np.int64)})
    response = _post(server, f"/v2/models/digits_cnn/versions/{version}/evaluate", body, headers)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["samples"] == manifest["split"]["test"]
    assert result["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"], abs=1e-12)
    assert np.trace(np.array(result["confusion_matrix"])) == round(result["accuracy"] * result["samples"])


def test_evaluate_reproduces_the_diabetes_mlp_manifest(server: RunningServer) -> None:
    manifest = _manifest("diabetes_mlp")
    split = data.diabetes(manifest["split"]["seed"])

    body, headers = _binary_body({"features": split.x_test, "targets": split.y_test.astype(np.float32)})
    response = _post(server, "/v2/models/diabetes_mlp/evaluate", body, headers)

    assert response.status_code == 200, response.text
    for key in ("mae", "rmse", "r2"):
        assert response.json()[key] == pytest.approx(manifest["metrics"][key], rel=1e-4)


def test_evaluate_reproduces_the_autoencoder_manifest(server: RunningServer) -> None:
    manifest = _manifest("digits_autoencoder")
    seed = manifest["split"]["seed"]
    split = data.digits(seed)
    noise_std = manifest["hyperparameters"]["noise_std"]
    noisy = data.add_noise(split.x_test, noise_std, np.random.default_rng([seed, 1]))

    body, headers = _binary_body({"image": noisy, "targets": split.x_test})
    response = _post(server, "/v2/models/digits_autoencoder/evaluate", body, headers)

    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["data_range"], result["ssim_window"]) == (16.0, 7)
    for key in ("mae", "psnr", "ssim"):
        assert result[key] == pytest.approx(manifest["metrics"][key], rel=1e-4)


def test_explain_a_few_digits_as_png_and_json(server: RunningServer) -> None:
    images = data.digits(0).x_test[:4]
    body, headers = _binary_body({"image": images})

    png = _post(server, "/v2/models/digits_cnn/explain", body, headers | {"Accept": "image/png"})
    as_json = _post(server, "/v2/models/digits_cnn/explain", body, headers)

    assert png.status_code == 200
    assert Image.open(io.BytesIO(png.content)).size == (4 * 256 + 3 * 4, 2 * 256 + 4)
    result = as_json.json()
    assert result["method"] == "cam"
    assert np.array(result["heatmaps"]).shape == (4, 8, 8)
    assert result["predicted"] == np.array(result["scores"]).argmax(axis=1).tolist()


def test_activations_of_the_digits_cnn(server: RunningServer) -> None:
    body, headers = _binary_body({"image": data.digits(0).x_test[:8]})

    response = _post(server, "/v2/models/digits_cnn/activations", body, headers)

    assert response.status_code == 200, response.text
    values = response.json()["values"]
    relus = [v for v in values if v["op_type"] == "Relu"]
    assert len(relus) == len(_manifest("digits_cnn")["hyperparameters"]["architecture"]["channels"])
    assert all(v["min"] >= 0.0 and v["shape"][0] == 8 for v in relus)


def test_bad_requests_leave_the_server_serving(server: RunningServer) -> None:
    body, headers = _binary_body({"features": np.zeros((2, 10), np.float32)})

    heat = _post(server, "/v2/models/diabetes_mlp/explain", body, headers)
    garbage = _post(server, "/v2/models/digits_cnn/evaluate", b"{not json", {})

    assert heat.status_code == 400
    assert "image input" in heat.json()["error"]
    assert garbage.status_code == 400
    assert "error" in garbage.json()
    assert httpx.get(f"{server.base_url}/v2/health/ready", timeout=5).status_code == 200
