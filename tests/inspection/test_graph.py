from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.inspection.graph import constants, element_types, image_input, unreachable_values, watched_values
from service.inspection.head import Head, find_head

HEADS = ("gemm_transB", "gemm", "matmul")
POOLS = ("gap", "reducemean")


def _head(model: onnx.ModelProto, output: str = "logits") -> Head:
    inferred = onnx.shape_inference.infer_shapes(model)
    return find_head(inferred.graph, output, constants(inferred.graph), element_types(inferred), 18)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("head", HEADS)
def test_a_pool_and_one_linear_layer_is_an_exact_cam_head(
    build_gap_classifier: Callable[..., Path], head: str, pool: str
) -> None:
    found = _head(onnx.load(str(build_gap_classifier(head, pool))))

    assert found.feature_map == "relu_out"  # post-ReLU, not the conv output before it
    assert found.output == "logits"
    assert found.exact_cam
    assert found.differentiable
    assert found.ops[0] in ("GlobalAveragePool", "ReduceMean")
    assert found.ops[-1] in ("Gemm", "MatMul", "Add")


def _two_layer_head(path: Path, middle: str = "HardSwish") -> onnx.ModelProto:
    """image -> Conv -> Relu -> GAP -> Flatten -> Gemm(5) -> middle -> Gemm(3): MobileNetV3's head shape."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.normal(size=(5, 4)).astype(np.float32), "fc1.w"),
        numpy_helper.from_array(rng.normal(size=(3, 5)).astype(np.float32), "fc2.w"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv.w"], ["conv_out"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv_out"], ["maps"]),
        helper.make_node("GlobalAveragePool", ["maps"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc1.w"], ["hidden"], transB=1),
        helper.make_node(middle, ["hidden"], ["act"]),
        helper.make_node("Gemm", ["act", "fc2.w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "two_layer_head",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def test_a_head_with_two_linear_layers_is_not_cam_but_is_differentiable(tmp_path: Path) -> None:
    found = _head(_two_layer_head(tmp_path))

    assert found.feature_map == "maps"
    assert found.ops == ["GlobalAveragePool", "Flatten", "Gemm", "HardSwish", "Gemm"]
    assert not found.exact_cam  # the first Gemm after the pool is not the scored output
    assert found.differentiable


def test_a_head_with_an_op_outside_the_whitelist_says_which(tmp_path: Path) -> None:
    found = _head(_two_layer_head(tmp_path, middle="Erf"))

    assert not found.differentiable
    assert found.problem is not None
    assert "Erf" in found.problem


def test_no_head_without_a_global_pool(dead_mlp_path: Path) -> None:
    found = _head(onnx.load(str(dead_mlp_path)), "y")

    assert found.feature_map is None
    assert not found.differentiable
    assert found.problem is not None
    assert "no global average pooling" in found.problem


def test_watched_values_are_layer_and_activation_outputs(dead_mlp_path: Path) -> None:
    watched = watched_values(onnx.load(str(dead_mlp_path)))

    assert [(v.name, v.op_type, v.kind) for v in watched] == [
        ("hidden", "Gemm", "layer"),
        ("act", "Relu", "activation"),
        ("y", "Gemm", "layer"),
    ]


def test_values_inside_subgraphs_are_listed_with_their_place(tmp_path: Path) -> None:
    from .compat_models import if_model

    model = onnx.load(str(if_model(tmp_path / "if" / "model.onnx")))

    unreachable = unreachable_values(model)

    assert {(v.name, v.op_type, v.place) for v in unreachable} == {
        ("then_hidden", "Gemm", "branch/then_branch"),
        ("then_act", "Tanh", "branch/then_branch"),
        ("else_hidden", "Gemm", "branch/else_branch"),
        ("loop_act", "Relu", "loop/body"),
    }
    assert all("main graph" in v.reason for v in unreachable)


def test_image_input_is_the_rank_4_input(
    build_gap_classifier: Callable[..., Path], dead_mlp_path: Path
) -> None:
    image = image_input(onnx.load(str(build_gap_classifier())))

    assert image is not None
    assert (image.name, image.channels, image.height, image.width, image.batched) == ("image", 1, 6, 6, True)
    assert image_input(onnx.load(str(dead_mlp_path))) is None


def test_values_in_nested_subgraphs_name_the_whole_path() -> None:
    # If -> else_branch -> Scan -> body -> Sigmoid(MatMul(row, w)): two levels down, with the weight a
    # Constant node of the else branch (visible to the Scan body inside it).
    w = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.ones((2, 2), np.float32)))
    scan_body = helper.make_graph(
        [
            helper.make_node("MatMul", ["row", "w"], ["scan_mm"], name="scan_fc"),
            helper.make_node("Sigmoid", ["scan_mm"], ["scan_act"], name="scan_sigmoid"),
        ],
        "scan_body",
        [helper.make_tensor_value_info("row", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("scan_act", TensorProto.FLOAT, [1, 2])],
    )
    scan = helper.make_node("Scan", ["x"], ["scanned"], name="scan", body=scan_body, num_scan_inputs=1)
    else_branch = helper.make_graph(
        [w, scan], "else_branch", [], [helper.make_tensor_value_info("scanned", TensorProto.FLOAT, [3, 1, 2])]
    )
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["same"])],
        "then_branch",
        [],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, [3, 1, 2])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then_branch, else_branch=else_branch)],
        "nested",
        [
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)

    found = unreachable_values(model)

    assert [(v.name, v.kind, v.place) for v in found] == [
        ("scan_mm", "layer", "choose/else_branch/scan/body"),
        ("scan_act", "activation", "choose/else_branch/scan/body"),
    ]
    assert "body subgraph of Scan node 'scan'" in found[0].reason
