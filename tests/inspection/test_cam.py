from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from service.errors import InvalidRequest
from service.inspection.explain import ExplainOptions, explain
from service.inspection.heatmap import upsample_bilinear
from service.inspection.session import InspectionSession

pytestmark = pytest.mark.torch


def _torch_grad_cam(path: Path, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Grad-CAM with autograd on the tiny model rebuilt in torch from its initializers."""
    inits = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
        for i in onnx.load(str(path)).graph.initializer
    }
    x = torch.from_numpy(images)
    maps = F.relu(F.conv2d(x, inits["conv.w"].requires_grad_(), inits["conv.b"], padding=1))
    weight = inits["head.w"]
    weight = weight if weight.shape[0] == 3 else weight.T
    logits = maps.mean(dim=(2, 3)) @ weight.T + inits["head.b"]
    chosen = logits[torch.arange(len(targets)), torch.from_numpy(targets)].sum()
    (gradient,) = torch.autograd.grad(chosen, maps)
    alpha = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((alpha * maps).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-30)
    return (cam / peak[:, None, None]).detach().numpy()


@pytest.mark.parametrize("pool", ["gap", "reducemean"])
@pytest.mark.parametrize("head", ["gemm_transB", "gemm", "matmul"])
def test_cam_equals_torch_grad_cam(build_gap_classifier: Callable[..., Path], head: str, pool: str) -> None:
    path = build_gap_classifier(head, pool)
    images = np.random.default_rng(0).uniform(0, 1, size=(5, 1, 6, 6)).astype(np.float32)

    result = explain(InspectionSession(path), {"image": images}, ExplainOptions(method="cam"))

    assert result.heatmaps.shape == (5, 6, 6)
    assert result.feature_map == "relu_out"
    np.testing.assert_array_equal(result.targets, result.scores.argmax(axis=1))
    np.testing.assert_allclose(result.heatmaps, _torch_grad_cam(path, images, result.targets), atol=1e-5)
    assert result.heatmaps.min() >= 0.0
    assert result.heatmaps.max() == pytest.approx(1.0)


def test_cam_for_a_chosen_class(build_gap_classifier: Callable[..., Path]) -> None:
    path = build_gap_classifier()
    images = np.random.default_rng(1).uniform(0, 1, size=(2, 1, 6, 6)).astype(np.float32)

    result = explain(InspectionSession(path), {"image": images}, ExplainOptions(target=2))

    assert result.targets.tolist() == [2, 2]
    np.testing.assert_allclose(result.heatmaps, _torch_grad_cam(path, images, result.targets), atol=1e-5)


def test_bilinear_upsampling_matches_torch() -> None:
    maps = np.random.default_rng(2).normal(size=(2, 3, 4))
    expected = F.interpolate(
        torch.from_numpy(maps)[:, None], size=(9, 7), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(upsample_bilinear(maps, 9, 7), expected[:, 0].numpy(), atol=1e-12)


def test_unknown_class_and_missing_head_are_clear_errors(
    build_gap_classifier: Callable[..., Path], dead_mlp_path: Path
) -> None:
    session = InspectionSession(build_gap_classifier())
    images = np.zeros((1, 1, 6, 6), np.float32)
    with pytest.raises(InvalidRequest, match="unknown class 3"):
        explain(session, {"image": images}, ExplainOptions(target=3))
    with pytest.raises(InvalidRequest, match="unknown class 'cat'"):
        explain(session, {"image": images}, ExplainOptions(target="cat"), labels=["a", "b", "c"])
    with pytest.raises(InvalidRequest, match="image input"):
        explain(InspectionSession(dead_mlp_path), {"x": np.zeros((1, 3), np.float32)}, ExplainOptions())
    with pytest.raises(InvalidRequest, match="unknown explain method"):
        ExplainOptions.from_parameters({"method": "saliency"})
