from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.inspection.graph import cam_head, image_input, watched_values

HEADS = ("gemm_transB", "gemm", "matmul")
POOLS = ("gap", "reducemean")


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("head", HEADS)
def test_cam_head_is_found_with_the_map_feeding_the_pool(
    build_gap_classifier: Callable[..., Path], head: str, pool: str
) -> None:
    model = onnx.load(str(build_gap_classifier(head, pool)))
    reference = onnx.load(str(build_gap_classifier("gemm_transB", "gap")))
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in reference.graph.initializer}["head.w"]

    found = cam_head(model)

    assert found is not None
    assert found.feature_map == "relu_out"  # post-ReLU, not the conv output before it
    assert found.scores == "logits"
    np.testing.assert_array_equal(found.weight, stored.astype(np.float64))


def test_no_cam_head_without_a_global_pool(dead_mlp_path: Path) -> None:
    assert cam_head(onnx.load(str(dead_mlp_path))) is None


def test_watched_values_are_layer_and_activation_outputs(dead_mlp_path: Path) -> None:
    watched = watched_values(onnx.load(str(dead_mlp_path)))

    assert [(v.name, v.op_type, v.kind) for v in watched] == [
        ("hidden", "Gemm", "layer"),
        ("act", "Relu", "activation"),
        ("y", "Gemm", "layer"),
    ]


def test_image_input_is_the_rank_4_input(
    build_gap_classifier: Callable[..., Path], dead_mlp_path: Path
) -> None:
    image = image_input(onnx.load(str(build_gap_classifier())))

    assert image is not None
    assert (image.name, image.channels, image.height, image.width) == ("image", 1, 6, 6)
    assert image_input(onnx.load(str(dead_mlp_path))) is None
