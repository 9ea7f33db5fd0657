"""Inspection of any model `/infer` serves, on a real server: inputs batched on axis 1, 0-d scalars,
inputs of several ranks, weights inside If / Loop bodies. /infer, /activations, /explain and /evaluate
all answer, and inside-subgraph values are reported as not inspectable instead of failing the request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from tests.server import RunningServer, serve

from .compat_models import write_repository

TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.bool_): "BOOL"}

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("compat") / "models")


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(repository, tmp_path_factory.mktemp("logs")) as running:
        yield running


def _json_body(tensors: dict[str, np.ndarray], **extra: Any) -> dict[str, Any]:
    inputs = [
        {"name": n, "datatype": TYPES[a.dtype], "shape": list(a.shape), "data": a.reshape(-1).tolist()}
        for n, a in tensors.items()
    ]
    return {"inputs": inputs, **extra}


def _binary_body(tensors: dict[str, np.ndarray], parameters: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    header: dict[str, Any] = {
        "inputs": [
            {"name": n, "datatype": TYPES[a.dtype], "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}}
            for n, a in tensors.items()
        ]
    }
    if parameters:
        header["parameters"] = parameters
    head = json.dumps(header).encode()
    return head + b"".join(np.ascontiguousarray(a).tobytes() for a in tensors.values()), {
        "Inference-Header-Content-Length": str(len(head))
    }


def _post(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=60)


def _reference(repository: Path, model: str, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Values from plain in-process onnxruntime, on a copy of the model that lists them as outputs."""
    proto = onnx.load(str(repository / model / "1" / "model.onnx"))
    present = {o.name for o in proto.graph.output}
    proto.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in present)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feeds), strict=True))


def _recurrent_feeds(batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {
        "x": rng.normal(size=(batch, 8)).astype(np.float32),
        "state": rng.normal(size=(2, batch, 16)).astype(np.float32),
        "sr": np.array(16000, np.int64),
    }


# ------------------------------------------------------------------------ recurrent state, 0-d scalar


@pytest.mark.parametrize("batch", [1, 3])
def test_a_recurrent_model_with_a_scalar_input_is_served_and_inspected(
    server: RunningServer, repository: Path, batch: int
) -> None:
    feeds = _recurrent_feeds(batch)
    expected = _reference(repository, "recurrent", feeds, ["prob", "state_out", "frame"])

    infer = _post(server, "/v2/models/recurrent/infer", _json_body(feeds))
    body, headers = _binary_body(feeds)
    activations = httpx.post(f"{server.base_url}/v2/models/recurrent/activations", content=body, headers=headers)

    assert infer.status_code == 200, infer.text
    prob = next(o for o in infer.json()["outputs"] if o["name"] == "prob")
    np.testing.assert_allclose(prob["data"], expected["prob"].reshape(-1), rtol=1e-6)
    assert activations.status_code == 200, activations.text
    result = activations.json()
    assert result["batch_size"] == batch
    assert result["not_inspectable"] == []
    values = {v["name"]: v for v in result["values"]}
    assert list(values) == ["frame", "state_out", "logit", "prob"]
    state = values["state_out"]  # [2, batch, 16]: samples on axis 1, hidden units on axis 2
    assert (state["shape"], state["batch_axis"], state["channel_axis"]) == ([2, batch, 16], 1, 2)
    np.testing.assert_allclose(
        state["per_channel_mean"], expected["state_out"].astype(np.float64).mean(axis=(0, 1)), atol=1e-6
    )
    frame = values["frame"]
    assert frame["mean"] == pytest.approx(expected["frame"].astype(np.float64).mean(), abs=1e-6)


def test_a_recurrent_model_answers_explain_with_a_clear_400_and_evaluate_with_metrics(server: RunningServer) -> None:
    feeds = _recurrent_feeds(4)
    targets = np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)

    explain = _post(server, "/v2/models/recurrent/explain", _json_body(feeds))
    evaluate = _post(server, "/v2/models/recurrent/evaluate", _json_body({**feeds, "targets": targets}))

    assert explain.status_code == 400
    assert "image input" in explain.json()["error"]
    assert evaluate.status_code == 200, evaluate.text
    assert (evaluate.json()["task"], evaluate.json()["samples"], evaluate.json()["output"]) == ("regression", 4, "prob")


def test_inputs_that_disagree_on_the_batch_are_the_same_400_in_infer_and_inspection(server: RunningServer) -> None:
    feeds = _recurrent_feeds(2) | {"state": np.zeros((2, 3, 16), np.float32)}

    answers = [_post(server, f"/v2/models/recurrent/{what}", _json_body(feeds)) for what in ("infer", "activations")]

    for answer in answers:
        assert answer.status_code == 400
        assert "disagree on the batch dimension" in answer.json()["error"]
        assert "'state' has 3" in answer.json()["error"]


# ---------------------------------------------------------------------------------- batch on axis 1


def test_a_time_major_model_counts_its_batch_on_axis_1(server: RunningServer, repository: Path) -> None:
    x = np.random.default_rng(5).normal(size=(3, 2, 4)).astype(np.float32)
    y = _reference(repository, "sequence", {"x": x}, ["y"])["y"]

    activations = _post(server, "/v2/models/sequence/activations", _json_body({"x": x}))
    evaluate = _post(server, "/v2/models/sequence/evaluate", _json_body({"x": x, "targets": np.zeros_like(y)}))
    explain = _post(server, "/v2/models/sequence/explain", _json_body({"x": x}))

    assert activations.status_code == 200, activations.text
    assert activations.json()["batch_size"] == 2
    relu = next(v for v in activations.json()["values"] if v["name"] == "y")
    assert (relu["batch_axis"], relu["channel_axis"], len(relu["per_channel_mean"])) == (1, 2, 5)
    assert evaluate.status_code == 200, evaluate.text
    assert evaluate.json()["samples"] == 2  # one sample per batch row, not per time step
    assert evaluate.json()["mae"] == pytest.approx(np.abs(y.astype(np.float64)).mean(), rel=1e-6)
    assert explain.status_code == 400
    assert "image input" in explain.json()["error"]


# ------------------------------------------------------------------------------- If / Loop subgraphs


def test_values_inside_control_flow_are_reported_not_inspectable(server: RunningServer, repository: Path) -> None:
    x = np.random.default_rng(6).normal(size=(5, 4)).astype(np.float32)
    feeds = {"x": x, "use_then": np.array(True)}
    expected = _reference(repository, "control_flow", feeds, ["h", "y"])

    everything = _post(server, "/v2/models/control_flow/activations", _json_body(feeds))
    chosen = _post(
        server,
        "/v2/models/control_flow/activations",
        _json_body(
            feeds,
            parameters={"values": "h,then_act"},
            outputs=[{"name": "h"}, {"name": "loop_act"}],
        ),
    )
    infer = _post(server, "/v2/models/control_flow/infer", _json_body(feeds))
    evaluate = _post(server, "/v2/models/control_flow/evaluate", _json_body(feeds | {"targets": expected["y"]}))

    assert everything.status_code == 200, everything.text
    body = everything.json()
    assert [v["name"] for v in body["values"]] == ["h"]
    assert body["values"][0]["mean"] == pytest.approx(expected["h"].astype(np.float64).mean(), abs=1e-6)
    skipped = {v["name"]: v for v in body["not_inspectable"]}
    assert set(skipped) == {"then_hidden", "then_act", "else_hidden", "loop_act"}
    assert skipped["then_act"]["place"] == "branch/then_branch"
    assert "main graph" in skipped["loop_act"]["reason"]
    assert chosen.status_code == 200, chosen.text
    assert [v["name"] for v in chosen.json()["values"]] == ["h"]
    assert [v["name"] for v in chosen.json()["not_inspectable"]] == ["then_act", "loop_act"]
    assert [o["name"] for o in chosen.json()["outputs"]] == ["h"]
    np.testing.assert_allclose(chosen.json()["outputs"][0]["data"], expected["h"].reshape(-1), rtol=1e-6)
    assert infer.status_code == 200
    np.testing.assert_allclose(infer.json()["outputs"][0]["data"], expected["y"].reshape(-1), rtol=1e-6)
    assert evaluate.status_code == 200, evaluate.text
    assert evaluate.json()["mae"] == pytest.approx(0.0, abs=1e-6)


def test_a_name_found_nowhere_is_still_a_400(server: RunningServer) -> None:
    feeds = {"x": np.zeros((1, 4), np.float32), "use_then": np.array(False)}

    response = _post(server, "/v2/models/control_flow/activations", _json_body(feeds, parameters={"values": "nope"}))

    assert response.status_code == 400
    assert "unknown intermediate value" in response.json()["error"]


# ----------------------------------------------------------------------- inputs of different ranks


def _multi_feeds(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {
        "image": rng.uniform(0, 1, size=(n, 1, 8, 8)).astype(np.float32),
        "features": rng.normal(size=(n, 3)).astype(np.float32),
        "temperature": np.array(0.7, np.float32),
    }


def _torch_multi_grad_cam(repository: Path, feeds: dict[str, np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Grad-CAM by autograd on the multi-input model rebuilt in torch from its initializers."""
    w = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
        for i in onnx.load(str(repository / "multi_input" / "1" / "model.onnx")).graph.initializer
    }
    maps = F.relu(F.conv2d(torch.from_numpy(feeds["image"]), w["conv_w"], w["conv_b"], padding=1))
    maps.requires_grad_(True)
    joined = torch.cat([maps.mean(dim=(2, 3)), torch.from_numpy(feeds["features"])], dim=1)
    logits = (joined @ w["fc_w"].T + w["fc_b"]) / torch.from_numpy(feeds["temperature"])
    (gradient,) = torch.autograd.grad(logits[torch.arange(len(targets)), torch.from_numpy(targets)].sum(), maps)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * maps).sum(dim=1))
    return cam.detach().double().numpy()


def test_a_model_with_inputs_of_three_ranks_is_explained_by_gradients_and_occlusion(
    server: RunningServer, repository: Path
) -> None:
    feeds = _multi_feeds(3)

    default = _post(server, "/v2/models/multi_input/explain", _json_body(feeds))
    chosen = _post(server, "/v2/models/multi_input/explain", _json_body(feeds, parameters={"target": "c"}))
    occlusion = _post(
        server, "/v2/models/multi_input/explain", _json_body(feeds, parameters={"method": "occlusion", "window": 2})
    )
    cam = _post(server, "/v2/models/multi_input/explain", _json_body(feeds, parameters={"method": "cam"}))

    assert default.status_code == 200, default.text
    result = default.json()
    assert result["method"] == "grad-cam"  # Concat and a division after the linear layer: CAM would not be exact
    assert result["head"] == ["GlobalAveragePool", "Flatten", "Concat", "Gemm", "Div"]
    for answer in (result, chosen.json()):
        targets = np.array(answer["targets"])
        expected = _torch_multi_grad_cam(repository, feeds, targets)
        got = np.array(answer["feature_map"]["heatmaps"])
        for n in range(3):
            assert np.corrcoef(got[n].ravel(), expected[n].ravel())[0, 1] >= 0.9999
    assert chosen.json()["targets"] == [2, 2, 2]
    assert occlusion.status_code == 200, occlusion.text
    assert np.array(occlusion.json()["heatmaps"]).shape == (3, 8, 8)
    assert cam.status_code == 400
    assert "'cam' is exact only" in cam.json()["error"]
    assert "grad-cam" in cam.json()["error"]


def test_a_model_with_inputs_of_three_ranks_answers_activations_and_evaluate(server: RunningServer) -> None:
    feeds = _multi_feeds(4)
    targets = np.array([0, 1, 2, 0], np.int64)

    activations = _post(server, "/v2/models/multi_input/activations", _json_body(feeds))
    evaluate = _post(server, "/v2/models/multi_input/evaluate", _json_body({**feeds, "targets": targets}))

    assert activations.status_code == 200, activations.text
    assert activations.json()["batch_size"] == 4
    assert [v["name"] for v in activations.json()["values"]] == ["conv", "maps", "raw"]
    assert evaluate.status_code == 200, evaluate.text
    assert (evaluate.json()["task"], evaluate.json()["samples"]) == ("classification", 4)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"window": "abc"}, "'window' must be a positive integer"),
        ({"window": True}, "'window' must be a positive integer"),
        ({"window": "²"}, "'window' must be a positive integer"),
        ({"stride": "9" * 5000}, "'stride' must be a positive integer"),
        ({"baseline": "nan"}, "'baseline' must be a finite number"),
        ({"baseline": "inf"}, "'baseline' must be a finite number"),
        ({"baseline": True}, "'baseline' must be a finite number"),
        ({"target": "²"}, "unknown class"),
        ({"target": 1010}, "unknown class 1010: the scored output has 3 classes"),
        ({"output": 3}, "'output' must be the name"),
    ],
)
def test_explain_parameters_that_are_not_numbers_are_400s(
    server: RunningServer, parameters: dict[str, Any], message: str
) -> None:
    body = _json_body(_multi_feeds(1), parameters={"method": "occlusion", **parameters})

    response = _post(server, "/v2/models/multi_input/explain", body)

    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
