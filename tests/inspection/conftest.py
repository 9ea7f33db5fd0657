"""Tiny real ONNX models for inspection tests, built with onnx.helper."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
IMAGE = (1, 6, 6)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def gap_classifier(path: Path, head: str = "gemm_transB", pool: str = "gap", seed: int = 0) -> Path:
    """image [N,1,6,6] -> Conv(4) -> Relu -> global mean -> Flatten -> linear head -> logits [N,3].

    `head`: gemm_transB (W stored [3,4]), gemm (W stored [4,3]) or matmul (W [4,3] + Add bias).
    `pool`: gap (GlobalAveragePool) or reducemean (ReduceMean over axes 2, 3 given as an input).
    """
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    conv_b = rng.normal(size=4).astype(np.float32) * 0.1
    head_w = rng.normal(size=(3, 4)).astype(np.float32)
    head_b = rng.normal(size=3).astype(np.float32)
    inits = [_init("conv.w", conv_w), _init("conv.b", conv_b), _init("head.b", head_b)]
    nodes = [
        helper.make_node("Conv", ["image", "conv.w", "conv.b"], ["conv_out"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
    ]
    if pool == "gap":
        nodes.append(helper.make_node("GlobalAveragePool", ["relu_out"], ["pooled"], name="pool"))
    else:
        inits.append(_init("axes", np.array([2, 3], dtype=np.int64)))
        nodes.append(
            helper.make_node("ReduceMean", ["relu_out", "axes"], ["pooled"], keepdims=1, name="pool")
        )
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    if head == "gemm_transB":
        inits.append(_init("head.w", head_w))
        nodes.append(
            helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["logits"], transB=1, name="head")
        )
    elif head == "gemm":
        inits.append(_init("head.w", head_w.T.copy()))
        nodes.append(helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["logits"], name="head"))
    else:
        inits.append(_init("head.w", head_w.T.copy()))
        nodes += [
            helper.make_node("MatMul", ["flat", "head.w"], ["mm"], name="head"),
            helper.make_node("Add", ["mm", "head.b"], ["logits"], name="head_bias"),
        ]
    graph = helper.make_graph(
        nodes,
        "gap_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *IMAGE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return _save(graph, path)


def region_scorer(path: Path, mask: np.ndarray) -> Path:
    """image [N,1,H,W] -> scores [N,2]: score 0 = Σ image·mask, score 1 = 0 (depends on nothing)."""
    height, width = mask.shape
    weight = np.stack([mask.reshape(-1), np.zeros(mask.size)]).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w"], ["scores"], transB=1),
        ],
        "region_scorer",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, height, width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        [_init("w", weight)],
    )
    return _save(graph, path)


DEAD_UNITS = (1, 4)


def dead_mlp(path: Path, promote: bool = False) -> Path:
    """x [N,3] -> Gemm(6) -> Relu -> Gemm(2) -> y; hidden units 1 and 4 have zero weights and a
    negative bias, so their ReLU output is 0 for every input. `promote` also lists the hidden
    values as graph outputs (for an independent plain-onnxruntime reference)."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(6, 3)).astype(np.float32)
    b1 = np.abs(rng.normal(size=6)).astype(np.float32)
    for unit in DEAD_UNITS:
        w1[unit] = 0.0
        b1[unit] = -1.0
    w2 = rng.normal(size=(2, 6)).astype(np.float32)
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])]
    if promote:
        outputs += [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 6]) for name in ("hidden", "act")
        ]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["hidden"], transB=1, name="fc1"),
            helper.make_node("Relu", ["hidden"], ["act"], name="relu1"),
            helper.make_node("Gemm", ["act", "w2"], ["y"], transB=1, name="fc2"),
        ],
        "dead_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        outputs,
        [_init("w1", w1), _init("b1", b1), _init("w2", w2)],
    )
    return _save(graph, path)


@pytest.fixture
def build_gap_classifier(tmp_path: Path) -> Callable[..., Path]:
    def build(head: str = "gemm_transB", pool: str = "gap") -> Path:
        return gap_classifier(tmp_path / f"{head}_{pool}" / "model.onnx", head, pool)

    return build


@pytest.fixture
def dead_mlp_path(tmp_path: Path) -> Path:
    return dead_mlp(tmp_path / "dead" / "model.onnx")


@pytest.fixture
def dead_mlp_reference_path(tmp_path: Path) -> Path:
    return dead_mlp(tmp_path / "dead_ref" / "model.onnx", promote=True)


def scaler(path: Path, factor: float = 0.9) -> Path:
    """image [N,1,H,W] -> reconstruction = factor · image (a 1x1 conv): a stand-in image-to-image model."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["reconstruction"], name="conv")],
        "scaler",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [_init("w", np.full((1, 1, 1, 1), factor, np.float32))],
    )
    return _save(graph, path)


def write_repository(root: Path) -> Path:
    """A model repository of tiny models, with manifests naming their tasks."""
    import json

    region_mask = np.zeros((8, 8))
    region_mask[2:4, 4:6] = 1.0
    built: dict[str, tuple[Callable[[Path], Path], dict[str, object] | None]] = {
        "cls": (lambda p: gap_classifier(p), {"kind": "classification", "labels": ["a", "b", "c"]}),
        "mlp": (lambda p: dead_mlp(p), {"kind": "regression", "targets": ["first", "second"]}),
        "ae": (lambda p: scaler(p), {"kind": "image_to_image", "data_range": 16.0}),
        "region": (lambda p: region_scorer(p, region_mask), None),
    }
    for name, (build, task) in built.items():
        version = root / name / "1"
        build(version / "model.onnx")
        if task is not None:
            (version / "manifest.json").write_text(
                json.dumps({"format": 1, "model": name, "version": 1, "task": task})
            )
    return root


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return write_repository(tmp_path / "models")
