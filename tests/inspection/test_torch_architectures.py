"""Heat maps of ResNet-18 and MobileNetV3-small (torchvision's definitions, random weights made to look
trained), published with `weightserve.publish` and served by a real server, against Grad-CAM computed
by torch autograd on the original module at its last convolutional block.

ResNet-18's head is global pooling + one Linear: CAM is exact there and is what `/explain` picks.
MobileNetV3-small's head is pool -> Linear -> Hardswish -> Dropout -> Linear: CAM would describe the
first Linear's 1024 outputs, so `/explain` takes gradients through the whole head instead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from tests import torch_zoo
from tests.server import RunningServer, serve
from weightserve import publish

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SIZE = 128  # a 4 x 4 final feature map: 16 points per map to correlate
IMAGES = 3


@pytest.fixture(scope="module")
def modules() -> dict[str, nn.Module]:
    built = {"resnet18": torch_zoo.ResNet18, "mobilenet_v3_small": torch_zoo.MobileNetV3Small}
    out = {}
    for name, build in built.items():
        torch.manual_seed(3)
        out[name] = torch_zoo.trained_like(build(), seed=3)
    return out


@pytest.fixture(scope="module")
def server(modules: dict[str, nn.Module], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("nets")
    example = [np.random.default_rng(1).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)]
    for name, module in modules.items():
        publish(module, example, repository, name, input_names=["image"], output_names=["logits"])
    with serve(repository, tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(IMAGES, 3, SIZE, SIZE)).astype(np.float32)


def _explain(server: RunningServer, model: str, images: np.ndarray, **parameters: Any) -> httpx.Response:
    body = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": list(images.shape), "data": images.ravel().tolist()}],
        "parameters": parameters,
    }
    return httpx.post(f"{server.base_url}/v2/models/{model}/explain", json=body, timeout=120)


def _assert_same_maps(got: np.ndarray, expected: np.ndarray) -> None:
    """Correlation >= 0.9999 per map at feature-map resolution (a map that is all zero must stay so)."""
    assert got.shape == expected.shape
    for ours, theirs in zip(got, expected, strict=True):
        if theirs.max() == 0.0:
            assert ours.max() == 0.0
            continue
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] >= 0.9999


@pytest.mark.parametrize("method", [None, "cam", "grad-cam"])
def test_resnet18_cam_is_exact_and_equals_torch_grad_cam(
    server: RunningServer, modules: dict[str, nn.Module], images: np.ndarray, method: str | None
) -> None:
    parameters = {} if method is None else {"method": method}

    response = _explain(server, "resnet18", images, **parameters)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["method"] == (method or "cam")
    assert result["scores_output"] == "logits"
    assert result["head"] == ["ReduceMean", "Reshape", "Gemm"]
    expected, logits = torch_zoo.torch_grad_cam(modules["resnet18"], images, None)
    assert result["predicted"] == logits.argmax(axis=1).tolist()
    np.testing.assert_allclose(result["scores"], logits, rtol=1e-3, atol=1e-4)
    assert result["feature_map"]["shape"] == [IMAGES, 512, SIZE // 32, SIZE // 32]
    _assert_same_maps(np.array(result["feature_map"]["heatmaps"]), expected)
    assert np.array(result["heatmaps"]).shape == (IMAGES, SIZE, SIZE)


@pytest.mark.parametrize("target", [0, 417, 999])
def test_resnet18_cam_for_explicit_targets(
    server: RunningServer, modules: dict[str, nn.Module], images: np.ndarray, target: int
) -> None:
    response = _explain(server, "resnet18", images, target=target)

    assert response.status_code == 200, response.text
    expected, _ = torch_zoo.torch_grad_cam(modules["resnet18"], images, np.full(IMAGES, target))
    assert response.json()["targets"] == [target] * IMAGES
    _assert_same_maps(np.array(response.json()["feature_map"]["heatmaps"]), expected)


@pytest.mark.parametrize("target", [None, 62, 0, 999])
def test_mobilenet_v3_small_gets_grad_cam_through_its_whole_head(
    server: RunningServer, modules: dict[str, nn.Module], images: np.ndarray, target: int | None
) -> None:
    parameters = {} if target is None else {"target": target}

    response = _explain(server, "mobilenet_v3_small", images, **parameters)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["method"] == "grad-cam"
    assert result["scores_output"] == "logits"  # the model's 1000 classes, not the 1024-wide hidden layer
    assert result["head"] == ["ReduceMean", "Reshape", "Gemm", "HardSwish", "Gemm"]
    assert np.array(result["scores"]).shape == (IMAGES, 1000)
    chosen = None if target is None else np.full(IMAGES, target)
    expected, logits = torch_zoo.torch_grad_cam(modules["mobilenet_v3_small"], images, chosen)
    assert result["predicted"] == logits.argmax(axis=1).tolist()
    assert result["targets"] == (logits.argmax(axis=1).tolist() if target is None else [target] * IMAGES)
    assert result["feature_map"]["shape"] == [IMAGES, 576, SIZE // 32, SIZE // 32]
    _assert_same_maps(np.array(result["feature_map"]["heatmaps"]), expected)


def test_mobilenet_v3_small_refuses_cam_and_classes_it_does_not_have(
    server: RunningServer, images: np.ndarray
) -> None:
    cam = _explain(server, "mobilenet_v3_small", images[:1], method="cam")
    beyond = _explain(server, "mobilenet_v3_small", images[:1], target=1010)
    occlusion = _explain(server, "mobilenet_v3_small", images[:1], method="occlusion", window=32, stride=32)

    assert cam.status_code == 400
    message = cam.json()["error"]
    assert "ReduceMean -> Reshape -> Gemm -> HardSwish -> Gemm" in message
    assert "'grad-cam'" in message
    assert "'occlusion'" in message
    assert beyond.status_code == 400
    assert "unknown class 1010: the scored output has 1000 classes" in beyond.json()["error"]
    assert occlusion.status_code == 200, occlusion.text
    assert occlusion.json()["method"] == "occlusion"
