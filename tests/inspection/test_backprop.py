"""Every op of the gradient whitelist, checked against torch autograd: a tiny network whose head is
pool -> Gemm -> OP -> Gemm, run by the inspection session, then differentiated by `backprop`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from service.errors import InvalidRequest
from service.inspection.backprop import SUPPORTED_OPS, backpropagate
from service.inspection.explain import ExplainOptions, explain
from service.inspection.session import InspectionSession

RNG = np.random.default_rng(21)
C6 = RNG.normal(size=6).astype(np.float32)
POSITIVE6 = RNG.uniform(0.5, 2.0, size=6).astype(np.float32)
W66 = RNG.normal(size=(6, 6)).astype(np.float32)
CONSTS = {
    "c6": C6,
    "pos6": POSITIVE6,
    "w66": W66,
    "clip_lo": np.array(-0.5, np.float32),
    "clip_hi": np.array(0.8, np.float32),
    "shape_n32": np.array([0, 3, 2], np.int64),
    "shape_n6": np.array([0, 6], np.int64),
    "axis2": np.array([2], np.int64),
    "bn_scale": POSITIVE6,
    "bn_bias": C6,
    "bn_mean": C6 * 0.5,
    "bn_var": POSITIVE6 * 0.7,
}

Node = onnx.NodeProto
Torch = Callable[[torch.Tensor], torch.Tensor]

pytestmark = pytest.mark.torch


def _t(name: str) -> torch.Tensor:
    return torch.from_numpy(CONSTS[name].astype(np.float64))


# op -> (nodes from "h" [N, 6] to "o", width of "o", the same computation in torch)
CASES: dict[str, tuple[list[Node], int, Torch]] = {
    "Relu": ([helper.make_node("Relu", ["h"], ["o"])], 6, torch.relu),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["h"], ["o"], alpha=0.1)], 6, lambda h: F.leaky_relu(h, 0.1)),
    "Sigmoid": ([helper.make_node("Sigmoid", ["h"], ["o"])], 6, torch.sigmoid),
    "Tanh": ([helper.make_node("Tanh", ["h"], ["o"])], 6, torch.tanh),
    "HardSigmoid": (
        [helper.make_node("HardSigmoid", ["h"], ["o"], alpha=1 / 6, beta=0.5)],
        6,
        F.hardsigmoid,
    ),
    "HardSwish": ([helper.make_node("HardSwish", ["h"], ["o"])], 6, F.hardswish),
    "Clip": (
        [helper.make_node("Clip", ["h", "clip_lo", "clip_hi"], ["o"])],
        6,
        lambda h: torch.clamp(h, -0.5, 0.8),
    ),
    "Softmax": ([helper.make_node("Softmax", ["h"], ["o"], axis=1)], 6, lambda h: torch.softmax(h, 1)),
    "LogSoftmax": ([helper.make_node("LogSoftmax", ["h"], ["o"])], 6, lambda h: torch.log_softmax(h, -1)),
    "BatchNormalization": (
        [helper.make_node("BatchNormalization", ["h", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["o"], epsilon=1e-3)],
        6,
        lambda h: F.batch_norm(h, _t("bn_mean"), _t("bn_var"), _t("bn_scale"), _t("bn_bias"), False, 0.0, 1e-3),
    ),
    "Mul": ([helper.make_node("Mul", ["h", "c6"], ["o"])], 6, lambda h: h * _t("c6")),
    "Div": ([helper.make_node("Div", ["h", "pos6"], ["o"])], 6, lambda h: h / _t("pos6")),
    "Sub": ([helper.make_node("Sub", ["c6", "h"], ["o"])], 6, lambda h: _t("c6") - h),
    "Add": (
        [helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Add", ["h", "r"], ["o"])],
        6,
        lambda h: h + torch.relu(h),
    ),
    "Neg": ([helper.make_node("Neg", ["h"], ["o"])], 6, torch.neg),
    "Mul of two head values (SiLU)": (
        [helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["h", "s"], ["o"])],
        6,
        F.silu,
    ),
    "Div by a head value": (
        [
            helper.make_node("Sigmoid", ["h"], ["s"]),
            helper.make_node("Add", ["s", "pos6"], ["d"]),
            helper.make_node("Div", ["h", "d"], ["o"]),
        ],
        6,
        lambda h: h / (torch.sigmoid(h) + _t("pos6")),
    ),
    "MatMul": ([helper.make_node("MatMul", ["h", "w66"], ["o"])], 6, lambda h: h @ _t("w66")),
    "Gemm": (
        [helper.make_node("Gemm", ["h", "w66", "c6"], ["o"], alpha=0.5, beta=2.0)],
        6,
        lambda h: 0.5 * h @ _t("w66") + 2.0 * _t("c6"),
    ),
    "Reshape, Transpose, ReduceMean": (
        [
            helper.make_node("Reshape", ["h", "shape_n32"], ["h3"]),
            helper.make_node("Transpose", ["h3"], ["t3"], perm=[0, 2, 1]),
            helper.make_node("ReduceMean", ["t3", "axis2"], ["o"], keepdims=0),
        ],
        2,
        lambda h: h.reshape(-1, 3, 2).transpose(1, 2).mean(dim=2),
    ),
    "ReduceSum, Unsqueeze, Squeeze": (
        [
            helper.make_node("Unsqueeze", ["h", "axis2"], ["u"]),
            helper.make_node("Squeeze", ["u", "axis2"], ["s"]),
            helper.make_node("Reshape", ["s", "shape_n32"], ["h3"]),
            helper.make_node("ReduceSum", ["h3", "axis2"], ["o"], keepdims=0),
        ],
        3,
        lambda h: h.reshape(-1, 3, 2).sum(dim=2),
    ),
    "Concat": (
        [helper.make_node("Tanh", ["h"], ["t"]), helper.make_node("Concat", ["h", "t"], ["o"], axis=1)],
        12,
        lambda h: torch.cat([h, torch.tanh(h)], dim=1),
    ),
    "Identity, Dropout, Cast": (
        [
            helper.make_node("Identity", ["h"], ["i"]),
            helper.make_node("Dropout", ["i"], ["d"]),
            helper.make_node("Cast", ["d"], ["wide"], to=TensorProto.DOUBLE),
            helper.make_node("Cast", ["wide"], ["o"], to=TensorProto.FLOAT),
        ],
        6,
        lambda h: h,
    ),
    "Shape arithmetic beside the gradient": (
        [
            helper.make_node("Shape", ["h"], ["dims"]),
            helper.make_node("Gather", ["dims", "zero"], ["rows"], axis=0),
            helper.make_node("Concat", ["rows", "six"], ["target_shape"], axis=0),
            helper.make_node("Reshape", ["h", "target_shape"], ["o"]),
        ],
        6,
        lambda h: h,
    ),
}
CONSTS |= {"zero": np.array([0], np.int64), "six": np.array([6], np.int64)}


def _model(path: Path, nodes: list[Node], width: int) -> Path:
    rng = np.random.default_rng(5)
    used = {name for node in nodes for name in node.input}
    inits = [numpy_helper.from_array(value, name) for name, value in CONSTS.items() if name in used]
    inits += [
        numpy_helper.from_array(rng.normal(size=(4, 2, 1, 1)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(size=(3, width)).astype(np.float32), "w1"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "conv_w"], ["conv"]),
            helper.make_node("Relu", ["conv"], ["maps"]),
            helper.make_node("GlobalAveragePool", ["maps"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w0"], ["h"], transB=1),
            *nodes,
            helper.make_node("Gemm", ["o", "w1"], ["logits"], transB=1),
        ],
        "head_case",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_every_supported_op_has_a_case() -> None:
    covered = {node.op_type for nodes, _, _ in CASES.values() for node in nodes} | {"GlobalAveragePool", "Flatten"}
    assert set(SUPPORTED_OPS) <= covered


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_through_the_head_equal_torch_autograd(tmp_path: Path, case: str) -> None:
    nodes, width, torch_op = CASES[case]
    path = _model(tmp_path / "model.onnx", nodes, width)
    session = InspectionSession(path)
    head = session.head("logits")
    images = np.random.default_rng(1).normal(size=(5, 2, 4, 4)).astype(np.float32)
    targets = np.array([0, 1, 2, 1, 0])

    values = session.run({"image": images}, head.reads)
    seed = np.zeros((5, 3))
    seed[np.arange(5), targets] = 1.0
    ours = backpropagate(
        head.nodes, {**head.constants, **values}, wrt="maps", output="logits", seed=seed, opset=session.opset
    )

    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).astype(np.float64)) for i in onnx.load(str(path)).graph.initializer}
    maps = torch.from_numpy(values["maps"].astype(np.float64)).requires_grad_(True)
    h = maps.mean(dim=(2, 3)) @ weights["w0"].T
    logits = torch_op(h) @ weights["w1"].T
    (expected,) = torch.autograd.grad(logits[torch.arange(5), torch.from_numpy(targets)].sum(), maps)

    assert head.differentiable, head.problem
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-4, atol=1e-7 * np.abs(expected.numpy()).max())
    assert np.abs(ours).max() > 0


def test_a_head_that_mixes_samples_is_refused_for_gradients_and_pointed_to_occlusion(tmp_path: Path) -> None:
    nodes = [helper.make_node("Softmax", ["h"], ["o"], axis=0)]  # normalises over the batch
    session = InspectionSession(_model(tmp_path / "model.onnx", nodes, 6))
    images = np.ones((2, 2, 4, 4), np.float32)

    with pytest.raises(InvalidRequest, match="mixes samples") as refused:
        explain(session, {"image": images}, ExplainOptions(method="grad-cam"))
    assert "occlusion" in str(refused.value)
    assert explain(session, {"image": images}, ExplainOptions()).method == "occlusion"
