"""Tiny real ONNX models with the signatures real published models have and our own exports do not:
a recurrent state batched on axis 1 beside a 0-d INT64 sample rate, a sequence batched on axis 1,
weights inside If / Loop bodies, and an image classifier with inputs of three different ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
HIDDEN = 16


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def recurrent_model(path: Path) -> Path:
    """Like a voice-activity detector: x [batch, 8], state [2, batch, 16], sr INT64 [] ->
    prob [batch, 1], state_out [2, batch, 16]. The state's batch axis is 1; sr is a 0-d scalar."""
    rng = np.random.default_rng(10)
    nodes = [
        helper.make_node("Gemm", ["x", "w_in"], ["frame"], name="encoder"),
        helper.make_node("Cast", ["sr"], ["sr_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_float", "reference_rate"], ["rate_scale"]),
        helper.make_node("Mul", ["frame", "rate_scale"], ["scaled"]),
        helper.make_node("Unsqueeze", ["scaled", "axis0"], ["scaled_3d"]),
        helper.make_node("Add", ["state", "scaled_3d"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["state_out"], name="state_update"),
        helper.make_node("ReduceMean", ["state_out", "axis0"], ["summary"], keepdims=0),
        helper.make_node("Gemm", ["summary", "w_out", "b_out"], ["logit"], name="decoder"),
        helper.make_node("Sigmoid", ["logit"], ["prob"], name="decision"),
    ]
    graph = helper.make_graph(
        nodes,
        "recurrent",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", HIDDEN]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "batch", HIDDEN]),
        ],
        [
            _init("w_in", rng.normal(size=(8, HIDDEN)).astype(np.float32)),
            _init("w_out", rng.normal(size=(HIDDEN, 1)).astype(np.float32)),
            _init("b_out", np.zeros(1, np.float32)),
            _init("reference_rate", np.array(16000.0, np.float32)),
            _init("axis0", np.array([0], np.int64)),
        ],
    )
    return _save(graph, path)


def sequence_model(path: Path) -> Path:
    """A time-major sequence, batch on axis 1: x [3, batch, 4] -> Relu(x · W) -> y [3, batch, 5]."""
    w = np.random.default_rng(11).normal(size=(4, 5)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["projected"], name="project"),
            helper.make_node("Relu", ["projected"], ["y"], name="relu"),
        ],
        "sequence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, "batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "batch", 5])],
        [_init("w", w)],
    )
    return _save(graph, path)


def if_model(path: Path) -> Path:
    """x [batch, 4], use_then BOOL [] -> Gemm (main graph) -> If (a Gemm + Tanh in one branch, a Gemm
    on a Constant-node weight in the other) -> Loop of two Relu(v + b) steps -> y [batch, 3]."""
    rng = np.random.default_rng(12)
    then_branch = helper.make_graph(
        [
            helper.make_node("Gemm", ["h", "w_then"], ["then_hidden"], name="then_fc"),
            helper.make_node("Tanh", ["then_hidden"], ["then_act"], name="then_tanh"),
        ],
        "then_branch",
        [],
        [helper.make_tensor_value_info("then_act", TensorProto.FLOAT, ["batch", 3])],
    )
    else_branch = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["w_else"],
                value=numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32)),
            ),
            helper.make_node("Gemm", ["h", "w_else"], ["else_hidden"], name="else_fc"),
        ],
        "else_branch",
        [],
        [helper.make_tensor_value_info("else_hidden", TensorProto.FLOAT, ["batch", 3])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "loop_bias"], ["loop_sum"]),
            helper.make_node("Relu", ["loop_sum"], ["loop_act"], name="loop_relu"),
        ],
        "body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("loop_act", TensorProto.FLOAT, ["batch", 3]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w_in"], ["h"], name="fc_in"),
            helper.make_node("If", ["use_then"], ["branch_out"], name="branch", then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Loop", ["trips", "", "branch_out"], ["y"], name="loop", body=body),
        ],
        "control_flow",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("use_then", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [
            _init("w_in", rng.normal(size=(4, 4)).astype(np.float32)),
            _init("w_then", rng.normal(size=(4, 3)).astype(np.float32)),
            _init("loop_bias", rng.normal(size=3).astype(np.float32)),
            _init("trips", np.array(2, np.int64)),
        ],
    )
    return _save(graph, path)


def multi_input_model(path: Path) -> Path:
    """image [N, 1, 8, 8], features [N, 3], temperature FP32 [] -> Conv -> Relu -> GAP -> Flatten ->
    Concat(features) -> Gemm -> / temperature -> logits [N, 3]."""
    rng = np.random.default_rng(13)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["conv"], ["maps"], name="relu"),
            helper.make_node("GlobalAveragePool", ["maps"], ["pooled"], name="pool"),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Concat", ["flat", "features"], ["joined"], axis=1),
            helper.make_node("Gemm", ["joined", "fc_w", "fc_b"], ["raw"], transB=1, name="fc"),
            helper.make_node("Div", ["raw", "temperature"], ["logits"]),
        ],
        "multi_input",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("temperature", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [
            _init("conv_w", rng.normal(size=(4, 1, 3, 3)).astype(np.float32)),
            _init("conv_b", rng.normal(size=4).astype(np.float32) * 0.1),
            _init("fc_w", rng.normal(size=(3, 7)).astype(np.float32)),
            _init("fc_b", rng.normal(size=3).astype(np.float32)),
        ],
    )
    return _save(graph, path)


MODELS = {
    "recurrent": (recurrent_model, {"kind": "regression", "targets": ["speech"]}),
    "sequence": (sequence_model, {"kind": "regression"}),
    "control_flow": (if_model, {"kind": "regression"}),
    "multi_input": (multi_input_model, {"kind": "classification", "labels": ["a", "b", "c"]}),
}


def write_repository(root: Path) -> Path:
    """Each model as version 1, with a manifest naming its task (so /evaluate has metrics to give)."""
    for name, (build, task) in MODELS.items():
        version = root / name / "1"
        build(version / "model.onnx")
        manifest = {"format": 1, "model": name, "version": 1, "task": task}
        (version / "manifest.json").write_text(json.dumps(manifest))
    return root
