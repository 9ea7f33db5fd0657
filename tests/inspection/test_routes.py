"""The inspection endpoints through the app, in process (Litestar's TestClient runs the lifespan)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from litestar.testing import TestClient
from PIL import Image

from service.app import create_app
from service.inspection.evaluation import classification_metrics, image_metrics
from service.inspection.explain import ExplainOptions, explain
from service.inspection.heatmap import normalise
from service.inspection.render import colormap
from service.inspection.session import InspectionSession
from service.settings import InspectionSettings, Settings

from .conftest import DEAD_UNITS, dead_mlp


@pytest.fixture
def client(repository: Path) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(Settings(repository=repository))) as client:
        yield client


def _tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": array.reshape(-1).tolist(),
    }


def _split(response: Any) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_activations_report_every_value_and_the_dead_units(client: TestClient[Any]) -> None:
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32) * 4

    response = client.post("/v2/models/mlp/activations", json={"inputs": [_tensor("x", x)]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["batch_size"]) == ("mlp", "1", 16)
    assert [(v["name"], v["kind"]) for v in body["values"]] == [
        ("hidden", "layer"),
        ("act", "activation"),
        ("y", "layer"),
    ]
    act = body["values"][1]
    assert act["never_active_channels"] == list(DEAD_UNITS)
    assert act["shape"] == [16, 6]
    assert len(act["histogram"]["counts"]) == 64
    assert "outputs" not in body


def test_raw_values_come_back_as_binary_tensors(client: TestClient[Any], tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    reference = ort.InferenceSession(str(dead_mlp(tmp_path / "ref.onnx", promote=True)))
    expected = reference.run(["act"], {"x": x})[0]
    request = {
        "inputs": [_tensor("x", x)],
        "outputs": [{"name": "act", "parameters": {"binary_data": True}}, {"name": "hidden"}],
        "parameters": {"values": "act", "bins": 8},
    }

    response = client.post("/v2/models/mlp/versions/1/activations", json=request)

    assert response.status_code == 200, response.text
    header, chunks = _split(response)
    assert [v["name"] for v in header["values"]] == ["act"]
    assert len(header["values"][0]["histogram"]["counts"]) == 8
    act, hidden = header["outputs"]
    assert act["parameters"]["binary_data_size"] == expected.nbytes == len(chunks)
    np.testing.assert_array_equal(np.frombuffer(chunks, np.float32).reshape(act["shape"]), expected)
    assert len(hidden["data"]) == 4 * 6


def test_binary_request_bodies_are_accepted(client: TestClient[Any]) -> None:
    x = np.ones((2, 3), np.float32)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}
            ]
        }
    ).encode()

    response = client.post(
        "/v2/models/mlp/activations",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )

    assert response.status_code == 200, response.text
    assert response.json()["batch_size"] == 2


def test_inspection_sessions_are_built_only_for_models_asked_about(client: TestClient[Any]) -> None:
    assert client.app.state.inspector.cached() == []
    client.post("/v2/models/mlp/activations", json={"inputs": [_tensor("x", np.ones((1, 3), np.float32))]})

    assert client.app.state.inspector.cached() == [("mlp", 1)]


def test_a_request_over_the_memory_cap_is_a_400(repository: Path) -> None:
    # hidden, act and y hold 24 + 24 + 8 bytes per sample: 36 samples fit, 37 do not.
    settings = Settings(repository=repository, inspection=InspectionSettings(max_bytes=2048))
    with TestClient(app=create_app(settings)) as client:
        fits = client.post(
            "/v2/models/mlp/activations", json={"inputs": [_tensor("x", np.ones((36, 3), np.float32))]}
        )
        over = client.post(
            "/v2/models/mlp/activations", json={"inputs": [_tensor("x", np.ones((37, 3), np.float32))]}
        )
        after = client.post(
            "/v2/models/mlp/activations", json={"inputs": [_tensor("x", np.ones((1, 3), np.float32))]}
        )

    assert fits.status_code == 200
    assert over.status_code == 400
    assert "over the inspection cap" in over.json()["error"]
    assert after.status_code == 200


def test_cam_heat_maps_match_the_library_and_render_as_png(client: TestClient[Any], repository: Path) -> None:
    images = np.random.default_rng(2).uniform(0, 1, size=(3, 1, 6, 6)).astype(np.float32)
    expected = explain(
        InspectionSession(repository / "cls" / "1" / "model.onnx"), {"image": images}, ExplainOptions()
    )

    response = client.post("/v2/models/cls/explain", json={"inputs": [_tensor("image", images)]})
    png = client.post(
        "/v2/models/cls/explain",
        json={"inputs": [_tensor("image", images)], "parameters": {"method": "cam", "target": "b"}},
        headers={"Accept": "image/png"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "cam"
    assert body["labels"] == ["a", "b", "c"]
    assert (body["feature_map"]["name"], body["feature_map"]["shape"]) == ("relu_out", [3, 4, 6, 6])
    np.testing.assert_allclose(body["feature_map"]["heatmaps"], expected.coarse, atol=1e-12)
    assert body["head"] == ["GlobalAveragePool", "Flatten", "Gemm"]
    assert body["targets"] == body["predicted"] == expected.predicted.tolist()
    np.testing.assert_allclose(body["heatmaps"], expected.heatmaps, atol=1e-12)
    np.testing.assert_allclose(body["scores"], expected.scores, rtol=1e-6)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(png.content))
    assert picture.format == "PNG"
    assert picture.size == (3 * 6 * (256 // 6) + 2 * 4, 2 * 6 * (256 // 6) + 4)


def test_occlusion_over_http_lights_only_the_scored_region(client: TestClient[Any]) -> None:
    images = np.ones((1, 1, 8, 8), np.float32)
    params = {"method": "occlusion", "target": 0, "window": 2, "stride": 2, "baseline": 0}

    response = client.post(
        "/v2/models/region/explain", json={"inputs": [_tensor("image", images)], "parameters": params}
    )

    assert response.status_code == 200, response.text
    heat = np.array(response.json()["heatmaps"][0])
    assert (heat[2:4, 4:6] == 1.0).all()
    heat[2:4, 4:6] = 0.0
    assert (heat == 0.0).all()


@pytest.mark.parametrize(
    ("model", "inputs", "parameters", "message"),
    [
        ("mlp", [_tensor("x", np.ones((1, 3), np.float32))], {}, "image input"),
        (
            "cls",
            [_tensor("image", np.ones((1, 1, 6, 6), np.float32))],
            {"method": "saliency"},
            "unknown explain method",
        ),
        ("cls", [_tensor("image", np.ones((1, 1, 6, 6), np.float32))], {"target": 7}, "unknown class 7"),
        (
            "cls",
            [_tensor("image", np.ones((1, 1, 6, 6), np.float32))],
            {"target": "zebra"},
            "unknown class 'zebra'",
        ),
        (
            "region",
            [_tensor("image", np.ones((1, 1, 8, 8), np.float32))],
            {"method": "cam"},
            "no global average pooling",
        ),
        (
            "region",
            [_tensor("image", np.ones((1, 1, 8, 8), np.float32))],
            {"method": "occlusion", "window": 20},
            "window",
        ),
        ("cls", [_tensor("image", np.ones((1, 1, 5, 5), np.float32))], {}, "expects"),
        ("cls", [_tensor("image", np.ones((0, 1, 6, 6), np.float32))], {}, "at least one image"),
        (
            "region",
            [_tensor("image", np.ones((0, 1, 8, 8), np.float32))],
            {"method": "occlusion"},
            "at least one image",
        ),
    ],
)
def test_bad_explain_requests_are_clear_400s(
    client: TestClient[Any],
    model: str,
    inputs: list[dict[str, Any]],
    parameters: dict[str, Any],
    message: str,
) -> None:
    response = client.post(f"/v2/models/{model}/explain", json={"inputs": inputs, "parameters": parameters})

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200


def test_evaluate_classifier(client: TestClient[Any], repository: Path) -> None:
    images = np.random.default_rng(3).uniform(0, 1, size=(10, 1, 6, 6)).astype(np.float32)
    targets = np.random.default_rng(4).integers(0, 3, size=10)
    logits = ort.InferenceSession(str(repository / "cls" / "1" / "model.onnx")).run(None, {"image": images})[
        0
    ]
    request = {"inputs": [_tensor("image", images), _tensor("targets", targets, "INT64")]}

    response = client.post("/v2/models/cls/evaluate", json=request)

    assert response.status_code == 200, response.text
    body = response.json()
    expected = classification_metrics(logits, targets, ["a", "b", "c"])
    assert body["task"] == "classification"
    assert body["accuracy"] == pytest.approx(expected["accuracy"])
    assert body["cross_entropy"] == pytest.approx(expected["cross_entropy"], rel=1e-6)
    assert body["confusion_matrix"] == expected["confusion_matrix"]
    assert body["labels"] == ["a", "b", "c"]


def test_evaluate_regressor_and_image_model(client: TestClient[Any]) -> None:
    x = np.random.default_rng(5).normal(size=(12, 3)).astype(np.float32)
    regression = client.post(
        "/v2/models/mlp/evaluate",
        json={"inputs": [_tensor("x", x), _tensor("targets", np.zeros((12, 2), np.float32))]},
    )
    clean = np.random.default_rng(6).uniform(0, 16, size=(4, 1, 8, 8)).astype(np.float32)
    image = client.post(
        "/v2/models/ae/evaluate",
        json={"inputs": [_tensor("image", clean), _tensor("targets", clean)]},
    )

    assert regression.status_code == 200, regression.text
    assert regression.json()["task"] == "regression"
    assert [t["name"] for t in regression.json()["per_target"]] == ["first", "second"]
    assert regression.json()["r2"] is None  # constant targets: R² is undefined
    assert image.status_code == 200, image.text
    expected = image_metrics(clean * np.float32(0.9), clean, 16.0)
    for key in ("mae", "psnr", "ssim"):
        assert image.json()[key] == pytest.approx(expected[key], rel=1e-6)
    assert image.json()["ssim_window"] == 7


@pytest.mark.parametrize(
    ("model", "inputs", "message"),
    [
        ("cls", [_tensor("image", np.ones((2, 1, 6, 6), np.float32))], "named 'targets'"),
        (
            "cls",
            [_tensor("image", np.ones((2, 1, 6, 6), np.float32)), _tensor("targets", np.zeros(3), "INT64")],
            "do not fit",
        ),
        (
            "cls",
            [
                _tensor("image", np.ones((2, 1, 6, 6), np.float32)),
                _tensor("targets", np.array([0, 5]), "INT64"),
            ],
            "class indices",
        ),
        (
            "mlp",
            [_tensor("x", np.ones((2, 3), np.float32)), _tensor("targets", np.zeros((2, 3)))],
            "do not fit",
        ),
        (
            "region",
            [_tensor("image", np.ones((1, 1, 8, 8), np.float32)), _tensor("targets", np.zeros(1))],
            "task",
        ),
        (
            "cls",
            [_tensor("image", np.ones((0, 1, 6, 6), np.float32)), _tensor("targets", np.zeros(0), "INT64")],
            "at least one sample",
        ),
        (
            "mlp",
            [_tensor("x", np.ones((0, 3), np.float32)), _tensor("targets", np.zeros((0, 2), np.float32))],
            "at least one sample",
        ),
    ],
)
def test_bad_evaluate_requests_are_clear_400s(
    client: TestClient[Any], model: str, inputs: list[dict[str, Any]], message: str
) -> None:
    response = client.post(f"/v2/models/{model}/evaluate", json={"inputs": inputs})

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_unknown_models_and_versions_are_404(client: TestClient[Any]) -> None:
    body = {"inputs": [_tensor("x", np.ones((1, 3), np.float32))]}
    assert client.post("/v2/models/nope/activations", json=body).status_code == 404
    assert client.post("/v2/models/mlp/versions/9/activations", json=body).status_code == 404


def test_occlusion_over_the_window_cap_is_a_400(repository: Path) -> None:
    settings = Settings(repository=repository, inspection=InspectionSettings(max_occlusion_windows=100))
    params = {"method": "occlusion", "window": 1, "stride": 1}  # 64 windows per 8x8 image

    def post(app_client: TestClient[Any], images: int) -> Any:
        inputs = [_tensor("image", np.ones((images, 1, 8, 8), np.float32))]
        return app_client.post("/v2/models/region/explain", json={"inputs": inputs, "parameters": params})

    with TestClient(app=create_app(settings)) as app_client:
        one, two = post(app_client, 1), post(app_client, 2)

    assert one.status_code == 200
    assert two.status_code == 400
    assert "128 occluded copies" in two.json()["error"]


@pytest.mark.parametrize("method", ["cam", "occlusion"])
@pytest.mark.parametrize("accept", ["application/json", "image/png"])
def test_an_image_whose_scores_are_not_finite_is_a_clear_400(client: TestClient[Any], method: str, accept: str) -> None:
    images = np.ones((2, 1, 6, 6), np.float32)
    images[1, 0, 2, 3] = np.nan  # one pixel: JSON cannot carry it, binary tensor data can
    raw = images.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": [2, 1, 6, 6], "parameters": {"binary_data_size": len(raw)}}
            ],
            "parameters": {"method": method},
        }
    ).encode()

    response = client.post(
        "/v2/models/cls/explain",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header)), "Accept": accept},
    )

    assert response.status_code == 400, response.text
    assert "not finite" in response.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200


def test_heat_maps_stay_in_range_and_render_whatever_values_reach_them() -> None:
    maps = np.array([[[1.0, np.inf], [np.nan, 0.5]], [[np.nan, np.nan], [0.0, 0.0]]])
    scaled = normalise(maps)
    np.testing.assert_allclose(scaled, [[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], atol=1e-300)
    # Infinity is the most evidence (1), NaN none (0); the finite 1.0 and 0.5 are nothing beside it.
    colours = colormap(np.array([[np.nan, 0.0], [0.5, 1.0]]))
    assert colours.dtype == np.uint8
    assert colours.shape == (2, 2, 3)
    np.testing.assert_array_equal(colours[0, 0], colours[0, 1])  # NaN is drawn as 0
